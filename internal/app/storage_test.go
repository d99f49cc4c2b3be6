package app_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/hl7"
	"radbridge/internal/testkit"
)

// readyz returns /readyz's status code and body.
func readyz(t *testing.T, base string) (int, string) {
	t.Helper()
	return testkit.Get(t, base+"/readyz")
}

// waitReadyz waits (at most 30 s) until /readyz answers code with a body
// containing want.
func waitReadyz(t *testing.T, base string, code int, want string) string {
	t.Helper()
	var got int
	var body string
	if !testkit.Poll(30*time.Second, func() bool {
		got, body = readyz(t, base)
		return got == code && strings.Contains(body, want)
	}) {
		t.Fatalf("/readyz: %d %q, want %d with %q within 30s", got, body, code, want)
	}
	return body
}

// TestStorageHealth: the data directory is on a small file system (a
// 128 MiB tmpfs, mounted for the test; it needs root) that another file
// mostly fills. HL7 results are sent until the store refuses them (AE):
// /readyz and radbridge status say not ready, with the reason; once the
// other file is removed, the quota follows the disk, /readyz is ready
// again and a result is accepted, without a restart. (A read-only
// remount cannot be made while JetStream holds its files open for
// writing; store's TestProbeReadOnly covers the probe that reports it.)
func TestStorageHealth(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", mnt).CombinedOutput(); err != nil {
		testkit.Missing(t, fmt.Sprintf("mount a tmpfs (needs root; under CI=true the test runs as root): %v %s", err, out))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 96<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, filepath.Join(mnt, "data"), "--store-check-interval", "100ms")
	base := "http://" + d.HTTPAddr()

	report := strings.Repeat("Findings unremarkable. ", 20000) // 460 KB
	n := 0
	var lastAck string
	send := func() string {
		t.Helper()
		n++
		c, err := net.DialTimeout("tcp", d.MLLPAddr(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		msg := fmt.Sprintf("MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310101500||ORU^R01|DISK-%d|P|2.5.1\rPID|1||DISK-P||DOE^JANE\rOBR|1|PLC%d|FIL%d|71250^CT CHEST^C4|||20260310090500|||||||||1234^REF^SAM||ACC%d|RP%d|SPS%d||20260310113000||CT|F\rOBX|1|TX|RPT^Report^L|1|%s||||||F\r", n, n, n, n, n, n, report)
		code, ack, err := mllpExchange(c, msg)
		if err != nil {
			t.Fatalf("message %d: %v", n, err)
		}
		lastAck = string(ack.Bytes())
		return code
	}
	refused := false
	for i := 0; i < 200 && !refused; i++ {
		refused = send() != "AA"
	}
	if !refused {
		t.Fatalf("%d messages of 460 KB all accepted on a nearly full 128 MiB file system", n)
	}
	if !strings.Contains(lastAck, "MSA|AE|") || !strings.Contains(lastAck, "not stored") {
		t.Fatalf("message %d refused with %q, want AE: not stored", n, lastAck)
	}
	body := waitReadyz(t, base, http.StatusServiceUnavailable, "store refuses writes")
	t.Logf("after %d messages: /readyz %q", n, body)
	if !strings.Contains(body, "storage quota reached") && !strings.Contains(body, "disk full") {
		t.Errorf("/readyz %q does not say why", body)
	}
	if code, out, _ := runApp(t, "status", "--addr", d.HTTPAddr()); code == 0 || !strings.Contains(out, "store refuses writes") {
		t.Errorf("radbridge status: exit %d\n%s; want not ready with the reason", code, out)
	}
	if m := metricsText(t, base); !strings.Contains(m, "radbridge_store_writes_refused 1") {
		t.Errorf("/metrics while writes are refused: no radbridge_store_writes_refused 1 in\n%.2000s", m)
	}

	// The operator frees space: ready again, writes accepted, no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, base, http.StatusOK, "ready")
	if code := send(); code != "AA" {
		t.Fatalf("after freeing space: ACK %s, want AA", code)
	}
	if m := metricsText(t, base); !strings.Contains(m, "radbridge_store_writes_refused 0") {
		t.Errorf("/metrics after freeing space: no radbridge_store_writes_refused 0")
	}

}

// TestStorageQuotaExplicit: with --store-max-bytes, results are accepted
// until the quota is reached, then answered AE (not stored), and /readyz
// says not ready, naming the quota and the flag.
func TestStorageQuotaExplicit(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--store-max-bytes", fmt.Sprint(8<<20), "--store-check-interval", "100ms")
	report := strings.Repeat("Findings unremarkable. ", 20000) // 460 KB
	var code, ack string
	for n := 1; n <= 100; n++ {
		c, err := net.DialTimeout("tcp", d.MLLPAddr(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		msg := fmt.Sprintf("MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310101500||ORU^R01|QUOTA-%d|P|2.5.1\rPID|1||QUOTA-P||DOE^JANE\rOBR|1|PLC%d|FIL%d|71250^CT CHEST^C4|||20260310090500|||||||||1234^REF^SAM||ACC%d|RP%d|SPS%d||20260310113000||CT|F\rOBX|1|TX|RPT^Report^L|1|%s||||||F\r", n, n, n, n, n, n, report)
		var m *hl7.Message
		code, m, err = mllpExchange(c, msg)
		c.Close()
		if err != nil {
			t.Fatalf("message %d: %v", n, err)
		}
		if ack = string(m.Bytes()); code != "AA" {
			break
		}
	}
	if code != "AE" || !strings.Contains(ack, "not stored") {
		t.Fatalf("last ACK %q, want AE: not stored once the 8 MiB quota is reached", ack)
	}
	body := waitReadyz(t, "http://"+d.HTTPAddr(), http.StatusServiceUnavailable, "storage quota reached")
	if !strings.Contains(body, "of 8388608 bytes used (--store-max-bytes)") {
		t.Errorf("/readyz %q, want the quota and the flag named", body)
	}
}

// metricsText returns GET /metrics.
func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
