package testkit

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// ServeLoopback runs serve (a server's Serve(ctx, net.Listener) method) on
// a new listener on 127.0.0.1:0 until the test ends and returns the
// listener's address. At the end it cancels serve's context and wants
// serve to return nil within 30 s.
func ServeLoopback(tb testing.TB, serve func(context.Context, net.Listener) error) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("Serve did not return after cancel")
		}
	})
	return ln.Addr().String()
}

// PlayPeer runs serve on one end of an in-memory connection and, from the
// other, writes b (for at most 200 ms) and reads whatever comes back, as a
// fuzzing peer does. It fails the test if serve has not returned 5 s
// later; what names serve in the failure.
func PlayPeer(tb testing.TB, b []byte, what string, serve func(net.Conn)) {
	tb.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(server)
	}()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	_ = client.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	_, _ = client.Write(b)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		tb.Fatal(what + " hung")
	}
	client.Close()
}
