package testkit_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// TestPeerMissingSkips: outside CI a missing peer skips the test; a peer
// that exists is returned with its path.
func TestPeerMissingSkips(t *testing.T) {
	t.Setenv("CI", "")
	var skipped bool
	t.Run("missing", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		testkit.Peer(t, "radbridge-no-such-peer")
		t.Error("Peer returned for a missing binary")
	})
	if !skipped {
		t.Error("a missing peer did not skip the test")
	}
	if p := testkit.Peer(t, "sh"); !filepath.IsAbs(p) {
		t.Errorf("Peer(sh) = %q, want an absolute path", p)
	}
}

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if !testkit.Poll(5*time.Second, func() bool { return n.Add(1) >= 3 }) {
		t.Fatal("Poll gave up on a condition that holds at the third check")
	}
	start := time.Now()
	if testkit.Poll(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("Poll reported a condition that never holds")
	}
	if took := time.Since(start); took < 50*time.Millisecond || took > 5*time.Second {
		t.Errorf("Poll of 50ms took %v", took)
	}
}

func TestGetJSONAndReady(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.Write([]byte("ready\n"))
			return
		}
		w.Write([]byte(`{"a":1}`))
	}))
	defer srv.Close()
	code, m := testkit.GetJSON(t, srv.URL+"/x")
	if code != 200 || m["a"] != float64(1) {
		t.Errorf("GetJSON: %d %v", code, m)
	}
	testkit.WaitReady(t, srv.URL, time.Second)
}

func TestWriteHL7(t *testing.T) {
	b, err := os.ReadFile(testkit.WriteHL7(t, "m", "MSH|^~\\&|A\nPID|1"))
	if err != nil || string(b) != "MSH|^~\\&|A\rPID|1\r" {
		t.Errorf("WriteHL7: %q %v", b, err)
	}
	b, err = os.ReadFile(testkit.WriteHL7Framed(t, "m", "MSH|^~\\&|A"))
	if err != nil || !strings.HasPrefix(string(b), "\x0b") || !strings.HasSuffix(string(b), "\r\x1c\r") {
		t.Errorf("WriteHL7Framed: %q %v", b, err)
	}
}

// TestServeLoopback: the server answers on the returned address, and its
// Serve has returned by the time the test's cleanups have run.
func TestServeLoopback(t *testing.T) {
	returned := make(chan struct{})
	t.Run("serve", func(t *testing.T) {
		addr := testkit.ServeLoopback(t, func(ctx context.Context, ln net.Listener) error {
			defer close(returned)
			go func() { <-ctx.Done(); ln.Close() }()
			for {
				c, err := ln.Accept()
				if err != nil {
					return nil
				}
				c.Write([]byte("hi"))
				c.Close()
			}
		})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		if string(b) != "hi" {
			t.Errorf("read %q, want hi", b)
		}
	})
	select {
	case <-returned:
	default:
		t.Error("Serve still running after the test's cleanup")
	}
}
