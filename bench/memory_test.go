package bench

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	rbv1 "radbridge/proto/radbridge/v1"
)

// idleSubs is the number of idle subscribers of BenchmarkIdleMemory.
func idleSubs(tb testing.TB) int {
	if s := os.Getenv("RADBRIDGE_BENCH_IDLE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			tb.Fatalf("RADBRIDGE_BENCH_IDLE: bad count %q", s)
		}
		return n
	}
	return 10000
}

// BenchmarkIdleMemory runs the daemon as a separate process and reads its
// resident set size before and after N idle subscribers connect, so the
// client side does not count. Each iteration uses a fresh daemon.
//
// B/sub is the daemon's VmRSS growth per subscriber, which includes Go's
// GC headroom (GOGC=100) and goroutine stacks: what an operator sees.
// client-B/sub is this process's heap+stack growth per subscriber (the
// client side, for comparison).
func BenchmarkIdleMemory(b *testing.B) {
	for _, kind := range []string{"grpc", "ws"} {
		b.Run(kind, func(b *testing.B) {
			n := idleSubs(b)
			needFDs(b, n+256)
			var server, client []float64
			var before, after int64
			for b.Loop() {
				s, c, b0, b1 := idleMemory(b, kind, n)
				server, client = append(server, s), append(client, c)
				before, after = b0, b1
			}
			b.ReportMetric(mean(server), "B/sub")
			b.ReportMetric(mean(client), "client-B/sub")
			b.ReportMetric(float64(before)/(1<<20), "rss-before-MB")
			b.ReportMetric(float64(after)/(1<<20), "rss-after-MB")
		})
	}
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(max(len(v), 1))
}

func idleMemory(b *testing.B, kind string, n int) (serverPerSub, clientPerSub float64, before, after int64) {
	b.StopTimer()
	defer b.StartTimer()
	d := startProcess(b)
	defer d.stop()
	pub := rbv1.NewEventServiceClient(grpcConn(b, d.grpcAddr))
	since, err := publish(context.Background(), pub, 0)
	if err != nil {
		b.Fatal(err)
	}
	// Warm the path (handlers, pools, the gateway) with a few subscribers
	// so one-time costs are not charged to the N below.
	w, next := openFleet(b, kind, d, pub, 16, since, 0)
	w.close()
	time.Sleep(time.Second) // a measurement's settling time, not a wait
	before = rss(b, d.pid)
	c0 := memStats()

	f, _ := openFleet(b, kind, d, pub, n, next-1, 0)
	defer f.close()
	time.Sleep(2 * time.Second) // let the daemon settle: a measurement's settling time, not a wait
	after = rss(b, d.pid)
	c1 := memStats()
	if e := f.errs.Load(); e > 0 {
		b.Errorf("%d subscriber streams failed; first: %v", e, f.err)
	}
	b.Logf("%s: daemon VmRSS %.1f MB -> %.1f MB with %d idle subscribers; client heap+stack %+.1f MB",
		kind, float64(before)/(1<<20), float64(after)/(1<<20), n, float64(c1-c0)/(1<<20))
	return float64(after-before) / float64(n), float64(c1-c0) / float64(n), before, after
}
