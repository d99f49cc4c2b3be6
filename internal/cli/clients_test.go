package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/hl7/mllp"
)

// run runs a radbridge command in-process.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = Run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// serveMLLP answers each frame on a loopback listener with ack (nothing
// when ack is nil).
func serveMLLP(t *testing.T, ack []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := mllp.NewReader(conn, 1<<20)
				for {
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := r.ReadMessage(); err != nil {
						return
					}
					if ack != nil {
						if err := mllp.WriteMessage(conn, ack); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestSendHL7ToPlainListener(t *testing.T) {
	msg := filepath.Join(t.TempDir(), "order.hl7")
	if err := os.WriteFile(msg, []byte("MSH|^~\\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310083000+0100||ORM^O01|CLI-3|P|2.3\rPID|1||MRN4711^^^NORTHWING^MR||DOE^JOHN\r"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := serveMLLP(t, []byte("MSH|^~\\&|RIS|X|Y|Z|20260310||ACK|A1|P|2.5.1\rMSA|AA|CLI-3\r"))
	code, out, errOut := run(t, "send-hl7", "--addr", addr, msg, msg)
	if code != 0 || strings.Count(out, "MSA|AA|CLI-3") != 2 {
		t.Errorf("send-hl7 to a plain listener: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	addr = serveMLLP(t, []byte("MSH|^~\\&|RIS|X|Y|Z|20260310||ACK|A1|P|2.5.1\rMSA|CR|CLI-3\r"))
	if code, out, _ := run(t, "send-hl7", "--addr", addr, msg); code != 1 || !strings.Contains(out, "MSA|CR|CLI-3") {
		t.Errorf("send-hl7 answered CR: exit %d, %s", code, out)
	}
	addr = serveMLLP(t, nil)
	start := time.Now()
	code, _, errOut = run(t, "send-hl7", "--addr", addr, "--timeout", "300ms", msg)
	if code != 1 || !strings.Contains(errOut, "no ACK") || time.Since(start) > 5*time.Second {
		t.Errorf("send-hl7 without answer: exit %d after %v, %s", code, time.Since(start), errOut)
	}
}
