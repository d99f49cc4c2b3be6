package main

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// TestPacedRun: with -rate, hl7load offers the messages at that rate (it
// cannot finish before the last one is due) and still gets every ACK.
func TestPacedRun(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serveAckOnly(ctx, addr) }()
	testkit.Eventually(t, 30*time.Second, "the ACK-only server listens", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	const n, rate = 21, 200.0
	start := time.Now()
	if err := run(ctx, addr, 4, n, "", rate); err != nil {
		t.Fatal(err)
	}
	// The last of n messages is due (n-1)/rate after the start.
	if d, due := time.Since(start), time.Duration(float64(n-1)/rate*float64(time.Second)); d < due {
		t.Errorf("%d messages at %v/s took %v, before the last one was due (%v)", n, rate, d, due)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
