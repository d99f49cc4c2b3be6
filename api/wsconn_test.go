package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"radbridge/auth"
	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

// TestLeanConnectionFrames sends messages of every size class through a
// lean connection (frames that fit its small buffer, that span it, that
// need 16- and 64-bit lengths) while the client pings: every message and
// every pong arrives whole and in order.
// It runs over both ways of writing a message: coder/websocket's Write
// with its pieces gathered, and writeText, the whole frame built here.
func TestLeanConnectionFrames(t *testing.T) {
	t.Run("gatherWrite", func(t *testing.T) {
		testLeanConnectionFrames(t, func(ctx context.Context, c *websocket.Conn, out *frameWriter, b []byte) error {
			return out.gatherWrite(func() error { return c.Write(ctx, websocket.MessageText, b) })
		})
	})
	t.Run("writeText", func(t *testing.T) {
		testLeanConnectionFrames(t, func(_ context.Context, _ *websocket.Conn, out *frameWriter, b []byte) error {
			_, err := out.writeText(b, 10*time.Second)
			return err
		})
	})
}

func testLeanConnectionFrames(t *testing.T, write func(context.Context, *websocket.Conn, *frameWriter, []byte) error) {
	sizes := []int{0, 1, 18, leanBuf - 2, leanBuf - 1, leanBuf, leanBuf + 1, 2 * leanBuf, 2*leanBuf + 7, 125, 126, 127, 4000, 4096, 65535, 65536, 200000}
	msg := func(n int) []byte { return bytes.Repeat([]byte{byte('a' + n%26)}, n) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := leanPair(ctx, t, func(_ *http.Request, c *websocket.Conn, out *frameWriter) {
		ctx := c.CloseRead(context.Background())
		for range 3 {
			for _, n := range sizes {
				if err := write(ctx, c, out, msg(n)); err != nil {
					t.Errorf("write %d bytes: %v", n, err)
					return
				}
			}
		}
		<-ctx.Done()
	})
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

// leanPair starts a server that accepts one lean WebSocket connection and
// runs serve on it in the handler, and returns the client's end, dialed
// with ctx; both end with the test.
func leanPair(ctx context.Context, t *testing.T, serve func(r *http.Request, c *websocket.Conn, out *frameWriter)) *websocket.Conn {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lean := &leanResponse{ResponseWriter: w}
		c, err := websocket.Accept(lean, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		serve(r, c, lean.out)
	}))
	t.Cleanup(srv.Close)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestWriteTextToAStuckPeer: a peer that stops reading fills the socket's
// buffers; writeText then fails within its timeout instead of blocking the
// sender for good.
func TestWriteTextToAStuckPeer(t *testing.T) {
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leanPair(ctx, t, func(_ *http.Request, _ *websocket.Conn, out *frameWriter) {
		b := bytes.Repeat([]byte("x"), 64<<10)
		for range 1 << 14 { // 1 GB at most: far more than any socket buffer
			if _, err := out.writeText(b, 200*time.Millisecond); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	})
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("writes to a peer that reads nothing ended with %v, want a deadline exceeded", err)
		}
	case <-ctx.Done():
		t.Fatal("writeText to a peer that reads nothing did not return")
	}
}

// TestWriteTextLeavesNoDeadline: the deadline writeText sets does not
// outlive it. coder/websocket writes its pongs without a deadline of its
// own, so one left behind would make the next pong fail once it passed.
func TestWriteTextLeavesNoDeadline(t *testing.T) {
	const timeout = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := leanPair(ctx, t, func(r *http.Request, c *websocket.Conn, out *frameWriter) {
		start := time.Now()
		if _, err := out.writeText([]byte("hello"), timeout); err != nil {
			t.Error(err)
			return
		}
		// Not a wait for the client: the point is that the deadline
		// writeText set is in the past before the pong is written.
		time.Sleep(time.Until(start.Add(2 * timeout)))
		_, _, _ = c.Read(r.Context()) // answers pings until the client closes
	})
	if _, b, err := c.Read(ctx); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v; want hello", b, err)
	}
	pong := make(chan error, 1)
	go func() { pong <- c.Ping(ctx) }()
	go func() { _, _, _ = c.Read(ctx) }() // delivers the pong
	if err := <-pong; err != nil {
		t.Fatalf("ping after writeText's deadline passed: %v", err)
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

// TestEventsStreamCatchUpLiveHeartbeatStop follows one /v1/events:stream
// subscriber through history from the log, live events, an idle heartbeat
// and the service's Stop, which ends the stream and its subscription.
func TestEventsStreamCatchUpLiveHeartbeatStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := eventlog.NewMemory()
	appendEvents := func(from, n int, patient string) {
		t.Helper()
		for i := from; i < from+n; i++ {
			if _, err := l.Append(ctx, eventlog.Key{IngestSeq: uint64(i)}, &rbv1.Event{Type: rbv1.EventType_ORDER_PLACED, PatientId: patient}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendEvents(1, 3, "P1")
	svc, hub := testService(ctx, t, l)
	srv := httptest.NewServer(&wsStream{svc: svc, cfg: HTTPConfig{WriteTimeout: 5 * time.Second, Auth: auth.None{}}})
	defer srv.Close()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/events:stream?patient_id=P1&heartbeat_seconds=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	read := func() (seq string, heartbeat bool) {
		t.Helper()
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Sequence  string `json:"sequence"`
			Heartbeat bool   `json:"heartbeat"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return m.Sequence, m.Heartbeat
	}
	var got []string
	for len(got) < 3 {
		if seq, hb := read(); !hb {
			got = append(got, seq)
		}
	}
	start := time.Now()
	if seq, hb := read(); !hb {
		t.Fatalf("idle stream sent event %s, want a heartbeat", seq)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("heartbeat after %v, want about 1s", d)
	}
	appendEvents(4, 1, "P2")
	appendEvents(5, 2, "P1")
	for len(got) < 5 {
		if seq, hb := read(); !hb {
			got = append(got, seq)
		}
	}
	if want := []string{"1", "2", "3", "5", "6"}; !slices.Equal(got, want) {
		t.Fatalf("sequences %v, want %v", got, want)
	}
	if n := hub.Stats().Subscribers["websocket"]; n != 1 {
		t.Errorf("%d websocket subscribers, want 1", n)
	}
	svc.Stop()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatal("the stream did not end after Stop")
			}
			break
		}
	}
	for hub.Stats().Subscribers["websocket"] != 0 {
		if ctx.Err() != nil {
			t.Fatal("the subscription stayed open after Stop")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
