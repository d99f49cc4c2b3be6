package api

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestLeanConnectionFrames sends messages of every size class through a
// lean connection (frames that fit its small buffer, that span it, that
// need 16- and 64-bit lengths) while the client pings: every message and
// every pong arrives whole and in order.
func TestLeanConnectionFrames(t *testing.T) {
	sizes := []int{0, 1, 18, leanBuf - 2, leanBuf - 1, leanBuf, leanBuf + 1, 2 * leanBuf, 2*leanBuf + 7, 125, 126, 127, 4000, 4096, 65535, 65536, 200000}
	msg := func(n int) []byte { return bytes.Repeat([]byte{byte('a' + n%26)}, n) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lean := &leanResponse{ResponseWriter: w}
		c, err := websocket.Accept(lean, r, nil)
		if err != nil {
			return
		}
		go func() {
			defer c.CloseNow()
			ctx := c.CloseRead(context.Background())
			for range 3 {
				for _, n := range sizes {
					if err := lean.out.gatherWrite(func() error { return c.Write(ctx, websocket.MessageText, msg(n)) }); err != nil {
						t.Errorf("write %d bytes: %v", n, err)
						return
					}
				}
			}
			<-ctx.Done()
		}()
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	pings := make(chan error, 1)
	go func() {
		// Pings are answered by the server's reader while the stream
		// writes: a pong may fall between two gathered frames.
		for range 20 {
			if err := c.Ping(ctx); err != nil {
				pings <- err
				return
			}
		}
		pings <- nil
	}()
	for i := range 3 * len(sizes) {
		n := sizes[i%len(sizes)]
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, n, err)
		}
		if typ != websocket.MessageText || !bytes.Equal(b, msg(n)) {
			t.Fatalf("message %d: got %v of %d bytes, want text of %d", i, typ, len(b), n)
		}
	}
	// Ping waits for its pong, which the client's reader delivers: keep
	// reading until the pings are done.
	go func() {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	if err := <-pings; err != nil {
		t.Fatalf("ping: %v", err)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// TestLeanConnectionKeepsEarlyBytes: bytes the client sent right behind its
// handshake (already in net/http's reader when the connection is
// hijacked) are still read first.
func TestLeanConnectionKeepsEarlyBytes(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lean := &leanResponse{ResponseWriter: w}
		conn, brw, err := lean.Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		if brw.Reader.Buffered() == 0 {
			t.Log("the bytes after the request came in a later read; nothing early to keep")
		}
		b := make([]byte, 11)
		if _, err := io.ReadFull(brw, b); err != nil {
			t.Error(err)
		}
		got <- string(b)
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// One write: the request and the bytes after it arrive together.
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\nhello world")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "hello world" {
			t.Fatalf("read %q after the hijack, want %q", s, "hello world")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not read")
	}
}
