package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// startNATS runs the pinned nats-server with JetStream and a user and
// password on port (0: any free one) and data directory dir.
func startNATS(t *testing.T, port int, dir string) (*exec.Cmd, int) {
	t.Helper()
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	ns := exec.Command(natsServer, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-sd", dir, "--user", "radbridge", "--pass", "s3cret-pw")
	log := &testkit.Buffer{}
	ns.Stderr, ns.Stdout = log, log
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Process.Kill(); ns.Wait() })
	if !testkit.Poll(time.Minute, func() bool { return strings.Contains(log.String(), "Server is ready") }) {
		t.Fatalf("nats-server not ready:\n%s", log.String())
	}
	return ns, port
}

// runBinary runs the built radbridge and returns its exit code and output.
func runBinary(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// TestStatusWhenTheStoreGoesDown: radbridge on an external nats-server
// (password in the URL) reports it connected and ready; when the server
// dies, radbridge status exits 1 saying why and /metrics shows
// radbridge_store_up 0; when it is back, ready again. The password never
// appears.
func TestStatusWhenTheStoreGoesDown(t *testing.T) {
	dir := t.TempDir()
	ns, port := startNATS(t, 0, dir)
	url := fmt.Sprintf("nats://radbridge:s3cret-pw@127.0.0.1:%d", port)
	d := serve(t, "--nats-url", url)

	code, stdout, stderr := runBinary(t, "status", "--addr", d.http)
	want := fmt.Sprintf("store: external at nats://127.0.0.1:%d, connected", port)
	if code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, "READY") {
		t.Fatalf("status with the store up: exit %d, want 0 and %q\n%s%s", code, want, stdout, stderr)
	}

	ns.Process.Signal(syscall.SIGKILL)
	ns.Wait()
	testkit.Poll(10*time.Second, func() bool {
		code, stdout, stderr = runBinary(t, "status", "--addr", d.http)
		return code != 0
	})
	if code != 1 || !strings.Contains(stdout, "NOT READY: store unavailable") || !strings.Contains(stdout, "DISCONNECTED") ||
		!strings.Contains(stderr, "not ready: store unavailable") {
		t.Errorf("status with the store down: exit %d; want 1, NOT READY and DISCONNECTED\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	resp, err := http.Get("http://" + d.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(page, []byte("\nradbridge_store_up 0\n")) {
		t.Errorf("/metrics with the store down lacks radbridge_store_up 0")
	}

	startNATS(t, port, dir)
	testkit.Poll(30*time.Second, func() bool {
		code, stdout, stderr = runBinary(t, "status", "--addr", d.http, "--json")
		return code == 0
	})
	if code != 0 || !strings.Contains(stdout, `"ready": true`) {
		t.Errorf("status after the store came back: exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "s3cret") || strings.Contains(d.logs.String(), "s3cret") {
		t.Errorf("the NATS password appears in the status or the log")
	}
}
