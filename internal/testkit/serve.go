package testkit

import (
	"context"
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
