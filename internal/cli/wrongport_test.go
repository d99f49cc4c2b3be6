package cli_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/cli"
	"radbridge/internal/testkit"
	"radbridge/internal/testkit/inproc"
)

// TestClientOnWrongPort: each client command pointed at one of the
// daemon's other ports says which protocol it found there and which
// address (flag) to give instead, at once and in one line.
func TestClientOnWrongPort(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	msg := testkit.WriteHL7(t, "adt", "MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260101120000||ADT^A08|WRONGPORT1|P|2.5.1\nPID|1||MRN-W^^^HOSP^MR||DOE^JOHN")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"tail", "--addr", d.HTTPAddr()}, []string{"radbridge tail: " + d.HTTPAddr() + " speaks HTTP, not gRPC (it is the daemon's --http-addr, for status, healthcheck): give the daemon's gRPC address, its --grpc-addr (port 9090 by default): radbridge tail --addr 127.0.0.1:9090"}},
		{[]string{"tail", "--addr", d.MLLPAddr()}, []string{"speaks HL7 MLLP, not gRPC", "--grpc-addr"}},
		{[]string{"tail", "--addr", d.DICOMAddr()}, []string{"speaks DICOM, not gRPC", "--grpc-addr"}},
		{[]string{"status", "--addr", d.GRPCAddr()}, []string{"radbridge status: " + d.GRPCAddr() + " speaks gRPC, not HTTP (it is the daemon's --grpc-addr, for tail)", "--http-addr"}},
		{[]string{"healthcheck", "--addr", d.MLLPAddr()}, []string{"speaks HL7 MLLP, not HTTP", "--http-addr"}},
		{[]string{"echo", "--addr", d.HTTPAddr()}, []string{"radbridge echo: " + d.HTTPAddr() + " speaks HTTP, not DICOM", "--dicom-addr"}},
		{[]string{"echo", "--addr", d.GRPCAddr()}, []string{"speaks gRPC, not DICOM", "--dicom-addr"}},
		{[]string{"send-hl7", "--timeout", "15s", "--addr", d.DICOMAddr(), msg}, []string{"radbridge send-hl7: " + d.DICOMAddr() + " speaks DICOM, not HL7 MLLP", "--mllp-addr"}},
	} {
		t.Run(strings.Join(tc.args[:3], " "), func(t *testing.T) {
			start := time.Now()
			code, _, stderr := runApp(t, tc.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if strings.Count(stderr, "\n") != 1 {
				t.Errorf("want one line, got:\n%s", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if el := time.Since(start); el > 20*time.Second {
				t.Errorf("took %v", el)
			}
		})
	}
}

// TestTailLiveByDefault: tail without --since prints only what arrives
// after it started; --since 0 replays the history; against a port where
// nothing answers it gives up after --retry-for, saying so.
func TestTailLiveByDefault(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	base := "http://" + d.HTTPAddr()
	inproc.Publish(t, base, "P-TAIL", "1.2.3.4.1")

	firstLine := func(args ...string) (string, func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		done := make(chan int, 1)
		var stderr testkit.Buffer
		go func() {
			done <- cli.Run(ctx, append([]string{"tail", "--addr", d.GRPCAddr(), "--patient", "P-TAIL"}, args...), pw, &stderr)
			pw.Close()
		}()
		lines := make(chan string, 1)
		go func() {
			l, _ := bufio.NewReader(pr).ReadString('\n')
			lines <- l
			_, _ = io.Copy(io.Discard, pr)
		}()
		stop := func() {
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("tail exited %d: %s", code, stderr.String())
			}
		}
		return <-lines, stop
	}
	// The live tail: wait until it is subscribed (the daemon counts it),
	// then publish the second event.
	got := make(chan string, 1)
	var stopLive func()
	go func() {
		l, stop := firstLine()
		stopLive = stop
		got <- l
	}()
	var st map[string]any
	if !testkit.Poll(30*time.Second, func() bool {
		_, st = testkit.GetJSON(t, base+"/v1/status")
		subs, _ := st["subscribers"].(map[string]any)
		n := 0.0
		for _, v := range subs {
			f, _ := v.(float64)
			n += f
		}
		return n >= 1
	}) {
		t.Fatalf("the live tail did not subscribe within 30s: %v", st)
	}
	inproc.Publish(t, base, "P-TAIL", "1.2.3.4.2")
	select {
	case l := <-got:
		stopLive()
		if !strings.Contains(l, "study=1.2.3.4.2") {
			t.Errorf("live tail's first line %q, want the event published after it started", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("live tail printed nothing within 30s")
	}
	l, stop := firstLine("--since", "0")
	stop()
	if !strings.Contains(l, "study=1.2.3.4.1") {
		t.Errorf("tail --since 0: first line %q, want the first event", l)
	}

	// Nothing listens on a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	start := time.Now()
	code, _, stderr := runApp(t, "tail", "--addr", dead, "--retry-for", "2s")
	if code != 1 || !strings.Contains(stderr, "radbridge tail: nothing answers at "+dead+" (tried for 2s:") || !strings.Contains(stderr, "--grpc-addr") {
		t.Errorf("tail against nothing: exit %d\n%s", code, stderr)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("gave up after %v, want about 2s", el)
	}
}
