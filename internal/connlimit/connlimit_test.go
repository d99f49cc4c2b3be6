package connlimit

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// serve runs an HTTP server answering "ok" on a limited 127.0.0.1 listener.
func serve(t *testing.T, max int) (*Listener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, max, HTTP503(5*time.Second))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l, "http://" + ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitOpen waits until the listener counts n open connections.
func waitOpen(t *testing.T, l *Listener, n int64) {
	t.Helper()
	if !testkit.Poll(10*time.Second, func() bool { return l.Stats().Open == n }) {
		t.Fatalf("open connections %d, want %d", l.Stats().Open, n)
	}
}

// TestBeyondTheLimitIs503: two connections hold both slots; a request on a
// third gets 503 with Retry-After and the connection is closed; once one
// of the two closes, the request is served.
func TestBeyondTheLimitIs503(t *testing.T) {
	l, base := serve(t, 2)
	a := dial(t, base)
	dial(t, base)
	waitOpen(t, l, 2)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	for range 20 {
		resp, err := client.Get(base + "/")
		if err != nil {
			t.Fatalf("request beyond the limit: %v; want a 503, not a broken connection", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !resp.Close || !strings.Contains(string(b), "too many connections") {
			t.Fatalf("request beyond the limit: %d %v %q", resp.StatusCode, resp.Header, b)
		}
	}
	if st := l.Stats(); st.Rejected != 20 || st.Accepted != 2 {
		t.Errorf("stats %+v, want 20 rejected and 2 accepted", st)
	}
	a.Close()
	waitOpen(t, l, 1)
	resp, err := client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("after a slot freed: %d %q", resp.StatusCode, b)
	}
}

// TestFloodLeavesServedConnectionAlone: while a client holds the only slot
// with a keep-alive connection, 400 connections beyond it that send
// nothing (more than the 256 answered at once: the rest are closed at
// once) do not stop its requests, and each is closed in the end.
func TestFloodLeavesServedConnectionAlone(t *testing.T) {
	l, base := serve(t, 1)
	client := &http.Client{Timeout: 30 * time.Second} // keep-alive: one connection
	get := func() {
		t.Helper()
		resp, err := client.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("served client: %d", resp.StatusCode)
		}
	}
	get()
	var flood []net.Conn
	for i := range 400 {
		flood = append(flood, dial(t, base))
		if i%50 == 0 {
			get()
		}
	}
	testkit.Poll(10*time.Second, func() bool { return l.Stats().Rejected == 400 })
	if st := l.Stats(); st.Rejected != 400 || st.Accepted != 1 {
		t.Fatalf("stats %+v, want 400 rejected and 1 accepted", st)
	}
	get()
	// Every refused connection is closed: at once, or after the header
	// wait (5 s).
	for _, c := range flood {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a refused connection that sent nothing got an answer")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a refused connection stayed open")
		}
	}
}

// FuzzReadHeader: readHeader finds the end of a request header however
// the bytes are split across reads, and only within its limit.
func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), uint8(3))
	f.Add([]byte("GET / HTTP/1.1\n\n"), uint8(1))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n"), uint8(7))
	f.Add(bytes.Repeat([]byte("A"), 300), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		const limit = 256
		client, server := net.Pipe()
		defer server.Close()
		go func() {
			defer client.Close()
			step := int(split)%17 + 1
			for i := 0; i < len(in); i += step {
				if _, err := client.Write(in[i:min(i+step, len(in))]); err != nil {
					return
				}
			}
		}()
		server.SetDeadline(time.Now().Add(10 * time.Second))
		got := readHeader(server, limit)
		head := in[:min(len(in), limit)]
		want := bytes.Contains(head, []byte("\r\n\r\n")) || bytes.Contains(head, []byte("\n\n"))
		if got != want {
			t.Fatalf("readHeader(%q split %d) = %v, want %v", in, split, got, want)
		}
	})
}
