package main_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"radbridge/hl7/mllp"
	"radbridge/ingest"
	"radbridge/internal/testkit"
	"radbridge/store"
)

// TestCrashBetweenGroupCommitAndACKs kills the built binary (SIGKILL, from
// a test hook inside the process) right after a group commit that covered
// several records and before any of their ACKs is written, while eight
// MLLP connections send at once and resend what was not acknowledged, as a
// RIS does. After three such kills and a last clean run, every message that
// got an AA is in the ingest log, and no message is in it twice (a resend of
// a record that was committed but not acknowledged is a duplicate).
func TestCrashBetweenGroupCommitAndACKs(t *testing.T) {
	const conns, kills = 8, 3
	addrs := freePorts(t, 1)
	dir := filepath.Join(t.TempDir(), "data")
	flags := []string{"--data-dir", dir, "--mllp-addr", addrs[0], "--dicom-addr", ""}

	var mu sync.Mutex
	acked := map[string]bool{}
	sent, nonAA := 0, 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("GC%d-%d", w, i)
				msg := fmt.Sprintf("MSH|^~\\&|RIS%d|HOSP|RADBRIDGE|IMAGING|20261207120000||ORU^R01^ORU_R01|%s|P|2.5.1\r"+
					"PID|1||GCPAT%d^^^HOSP^MR||GROUP^COMMIT||19700101|U\r"+
					"OBR|1|PLC-%s|FIL-%s|CTCHEST^CT CHEST^L|||20261207110000|||||||||||ACC-%s||||||CT|F\r"+
					"OBX|1|TX|RPT^Report^L||Group commit crash test.||||||F\r", w, id, w, id, id, id)
				// Resend until acknowledged (or the test stops).
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, err := sendOnce(addrs[0], []byte(msg))
					if err == nil && code == "AA" {
						mu.Lock()
						acked[id] = true
						sent++
						mu.Unlock()
						break
					}
					if err == nil {
						// AE (the store did not confirm the append in
						// time, e.g. while the daemon starts on a loaded
						// machine): no claim of storage; a RIS resends.
						mu.Lock()
						if nonAA++; nonAA <= 3 {
							t.Logf("%s answered %s; resending", id, code)
						}
						mu.Unlock()
					}
					time.Sleep(20 * time.Millisecond) // the RIS's pause before it resends (the daemon may be down), not a wait
				}
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	for k := 1; k <= kills; k++ {
		// The hook may fire before the daemon reports ready: the senders
		// are connected as soon as the MLLP port listens.
		cmd := exec.Command(binary, append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, flags...)...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", store.KillAfterGroupCommitsEnv, 20*k))
		logs := &testkit.Buffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			<-done
			t.Fatalf("kill %d: the daemon did not kill itself after %d group commits:\n%s", k, 20*k, logs.String())
		}
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: the daemon exited with %v, want SIGKILL from the hook:\n%s", k, cmd.ProcessState, logs.String())
		}
		mu.Lock()
		t.Logf("kill %d: after %d group commits; %d messages acknowledged so far", k, 20*k, len(acked))
		mu.Unlock()
	}
	d := serve(t, flags...)
	// Let every sender get its pending resend acknowledged and a few more.
	mu.Lock()
	target := sent + 4*conns
	mu.Unlock()
	var n int
	if !testkit.Poll(time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n = sent
		return n >= target
	}) {
		t.Fatalf("only %d of %d messages acknowledged after the last restart", n, target)
	}
	stopLoad()
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done
	if nonAA > 0 {
		shown := 0
		for _, l := range strings.Split(d.logs.String(), "\n") {
			if strings.Contains(l, "record message") && shown < 3 {
				t.Logf("daemon: %s", l)
				shown++
			}
		}
	}

	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DataDir: dir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	last, err := st.Ingest().Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for seq := uint64(1); seq <= last; seq++ {
		r, err := st.Ingest().Get(ctx, seq)
		if errors.Is(err, ingest.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.Kind == ingest.KindHL7 {
			count[ingest.SeenKey(r.Observation)]++
		}
	}
	var missing, twice int
	for id := range acked {
		w, _, _ := cutGC(id)
		key := ingest.HL7ControlKey("RIS"+w, "HOSP", id)
		if count[key] == 0 {
			missing++
			t.Errorf("%s was acknowledged but is not in the ingest log", id)
		}
	}
	for key, n := range count {
		if n > 1 {
			twice++
			t.Errorf("%s is in the ingest log %d times", key, n)
		}
	}
	t.Logf("%d kills between a group commit and its ACKs; %d messages acknowledged (%d other answers, resent), %d HL7 records in the log (%d ingest records); %d missing, %d twice",
		kills, len(acked), nonAA, len(count), last, missing, twice)
}

// cutGC splits a control id GC<w>-<i>.
func cutGC(id string) (w, i string, ok bool) {
	for j := 2; j < len(id); j++ {
		if id[j] == '-' {
			return id[2:j], id[j+1:], true
		}
	}
	return "", "", false
}

// sendOnce sends msg on a new MLLP connection and returns MSA-1 of the
// answer (a connection per message, so a kill costs at most one message).
func sendOnce(addr string, msg []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := mllp.WriteMessage(c, msg); err != nil {
		return "", err
	}
	ack, err := mllp.NewReader(bufio.NewReader(c), 1<<20).ReadMessage()
	if err != nil {
		return "", err
	}
	m := msaRe.FindSubmatch(ack)
	if m == nil {
		return "", fmt.Errorf("no MSA in %q", ack)
	}
	if string(m[1]) != "AA" {
		return string(ack), nil
	}
	return "AA", nil
}
