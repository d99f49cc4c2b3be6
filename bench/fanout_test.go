package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"

	rbv1 "radbridge/proto/radbridge/v1"
)

// round is one published event being waited for by every subscriber.
type round struct {
	seq         uint64
	remaining   atomic.Int64
	first, last atomic.Int64 // receipt times, unix nanoseconds
	done        chan struct{}
}

// fleet is a set of subscribers that all follow the bench patient.
type fleet struct {
	n      int
	cur    atomic.Pointer[round]
	errs   atomic.Int64
	errMu  sync.Mutex
	err    error
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (f *fleet) fail(err error) {
	f.errs.Add(1)
	f.errMu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.errMu.Unlock()
}

// deliver records that one subscriber received sequence seq.
func (f *fleet) deliver(seq uint64) {
	r := f.cur.Load()
	if r == nil || seq != r.seq {
		return
	}
	now := time.Now().UnixNano()
	for old := r.first.Load(); (old == 0 || now < old) && !r.first.CompareAndSwap(old, now); old = r.first.Load() {
	}
	for old := r.last.Load(); now > old && !r.last.CompareAndSwap(old, now); old = r.last.Load() {
	}
	if r.remaining.Add(-1) == 0 {
		close(r.done)
	}
}

// expect arms a round for sequence seq; call it before publishing.
func (f *fleet) expect(seq uint64) *round {
	r := &round{seq: seq, done: make(chan struct{})}
	r.remaining.Store(int64(f.n))
	f.cur.Store(r)
	return r
}

// wait blocks until every subscriber has r's event.
func (f *fleet) wait(tb testing.TB, r *round, timeout time.Duration) {
	tb.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		f.errMu.Lock()
		err := f.err
		f.errMu.Unlock()
		tb.Fatalf("sequence %d: %d of %d subscribers still waiting after %v (%d stream errors; first: %v)",
			r.seq, r.remaining.Load(), f.n, timeout, f.errs.Load(), err)
	}
}

func (f *fleet) close() {
	f.cancel()
	f.wg.Wait()
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns the
// first error.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// grpcFleet opens n Subscribe streams after sequence since, spread over
// conns client connections.
func grpcFleet(tb testing.TB, addr string, n, conns int, since uint64, heartbeat uint32) *fleet {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{n: n, cancel: cancel}
	ccs := make([]*grpc.ClientConn, min(conns, n))
	for i := range ccs {
		ccs[i] = grpcConn(tb, addr)
	}
	desc := &grpc.StreamDesc{StreamName: "Subscribe", ServerStreams: true}
	method := "/" + rbv1.EventService_ServiceDesc.ServiceName + "/Subscribe"
	err := parallel(n, 32, func(i int) error {
		st, err := ccs[i%len(ccs)].NewStream(ctx, desc, method, grpc.ForceCodec(seqCodec{}))
		if err == nil {
			err = st.SendMsg(&rbv1.SubscribeRequest{PatientId: []string{patient}, SinceSequence: since, HeartbeatSeconds: heartbeat})
		}
		if err == nil {
			err = st.CloseSend()
		}
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			var ev seqOnly
			for {
				if err := st.RecvMsg(&ev); err != nil {
					if ctx.Err() == nil {
						f.fail(err)
					}
					return
				}
				if !ev.Heartbeat {
					f.deliver(ev.Sequence)
				}
			}
		}()
		return nil
	})
	if err != nil {
		f.close()
		tb.Fatal(err)
	}
	return f
}

// wsFleet opens n WebSocket streams after sequence since.
func wsFleet(tb testing.TB, addr string, n int, since uint64, heartbeat uint32) *fleet {
	tb.Helper()
	url := fmt.Sprintf("ws://%s/v1/events:stream?since=%d&patient_id=%s&heartbeat_seconds=%d", addr, since, patient, heartbeat)
	dial := func(ctx context.Context, i int) (*websocket.Conn, error) {
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		defer dcancel()
		c, _, err := websocket.Dial(dctx, url, nil)
		if err != nil {
			return nil, fmt.Errorf("subscriber %d: %w", i, err)
		}
		return c, nil
	}
	return websocketFleet(tb, n, dial, func(b []byte) (uint64, error) {
		m, err := parseFrame(b)
		if err != nil || m.Heartbeat {
			return 0, err
		}
		return m.Sequence, nil
	})
}

// websocketFleet opens n WebSocket connections with dial (32 at a time)
// and reads each until the fleet closes; seq gives a frame's event
// sequence (0: not an event).
func websocketFleet(tb testing.TB, n int, dial func(ctx context.Context, i int) (*websocket.Conn, error), seq func([]byte) (uint64, error)) *fleet {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{n: n, cancel: cancel}
	err := parallel(n, 32, func(i int) error {
		c, err := dial(ctx, i)
		if err != nil {
			return err
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer c.CloseNow()
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					if ctx.Err() == nil {
						f.fail(err)
					}
					return
				}
				s, err := seq(b)
				if err != nil {
					f.fail(err)
					return
				}
				if s != 0 {
					f.deliver(s)
				}
			}
		}()
		return nil
	})
	if err != nil {
		f.close()
		tb.Fatal(err)
	}
	return f
}

// openFleet opens n subscribers of kind "grpc" or "ws" after since and
// waits until every one has received a warm-up event, so all are live.
// It returns the fleet and the next sequence to expect.
func openFleet(tb testing.TB, kind string, d *daemon, pub rbv1.EventServiceClient, n int, since uint64, heartbeat uint32) (*fleet, uint64) {
	tb.Helper()
	var f *fleet
	switch kind {
	case "grpc":
		f = grpcFleet(tb, d.grpcAddr, n, 16, since, heartbeat)
	case "ws":
		f = wsFleet(tb, d.httpAddr, n, since, heartbeat)
	default:
		tb.Fatalf("unknown subscriber kind %q", kind)
	}
	r := f.expect(since + 1)
	seq, err := publish(context.Background(), pub, int(since))
	if err != nil {
		f.close()
		tb.Fatal(err)
	}
	if seq != since+1 {
		f.close()
		tb.Fatalf("warm-up event has sequence %d, want %d", seq, since+1)
	}
	f.wait(tb, r, 2*time.Minute)
	return f, seq + 1
}

// fanOutSizes are the subscriber counts of BenchmarkFanOut; 1 is the
// baseline.
func fanOutSizes(tb testing.TB) []int {
	s := os.Getenv("RADBRIDGE_BENCH_SUBS")
	if s == "" {
		return []int{1, 1000, 10000}
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			tb.Fatalf("RADBRIDGE_BENCH_SUBS: bad count %q", f)
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkFanOut publishes one event per iteration to N live subscribers
// of an in-process daemon and measures until the last one has it. Client
// and daemon share the process (and its descriptors: a WebSocket
// subscriber costs two, so sizes that do not fit RLIMIT_NOFILE are
// skipped; BenchmarkFanOutProcess covers them).
func BenchmarkFanOut(b *testing.B) {
	for _, kind := range []string{"grpc", "ws"} {
		for _, n := range fanOutSizes(b) {
			b.Run(fmt.Sprintf("%s/subs=%d", kind, n), func(b *testing.B) { benchFanOut(b, kind, n, false) })
		}
	}
}

// BenchmarkFanOutProcess is BenchmarkFanOut with the daemon in a child
// process (built from ./cmd/radbridge), as it runs in production.
func BenchmarkFanOutProcess(b *testing.B) {
	for _, kind := range []string{"grpc", "ws"} {
		for _, n := range fanOutSizes(b) {
			b.Run(fmt.Sprintf("%s/subs=%d", kind, n), func(b *testing.B) { benchFanOut(b, kind, n, true) })
		}
	}
}

func benchFanOut(b *testing.B, kind string, n int, child bool) {
	fds := 64
	if kind == "ws" {
		fds = n
		if !child {
			fds = 2 * n // both ends of every connection are in this process
		}
	}
	needFDs(b, fds)
	var d *daemon
	if child {
		d = startProcess(b)
	} else {
		d = startInProcess(b)
	}
	pub := rbv1.NewEventServiceClient(grpcConn(b, d.grpcAddr))
	ctx := context.Background()
	since, err := publish(ctx, pub, 0) // subscribers start after this one
	if err != nil {
		b.Fatal(err)
	}
	f, next := openFleet(b, kind, d, pub, n, since, 3600)
	defer f.close()

	pubTime := measureFanOut(b, f, next, d.pid, "subscriber streams", func(seq uint64) (uint64, error) { return publish(ctx, pub, int(seq)) })
	b.ReportMetric(ms(percentile(pubTime, 50)), "publish-ms-p50")
}

// measureFanOut publishes one event per iteration (publish(seq) for the
// sequence it must get, from next on), times until every member of f has
// it, and reports ms-to-last-p50/p99, ms-to-first-p50 and spread-ms-p50/p99
// (last receipt minus first), and with a daemon pid its CPU per event
// (daemon-cpu-ms/event). It returns how long each publish call took.
func measureFanOut(b *testing.B, f *fleet, next uint64, pid int, members string, publish func(seq uint64) (uint64, error)) []time.Duration {
	var toLast, toFirst, spread, took []time.Duration
	cpu0 := cpuTime(b, pid)
	rounds := 0
	for b.Loop() {
		rounds++
		r := f.expect(next)
		start := time.Now()
		seq, err := publish(next)
		took = append(took, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if seq != next {
			b.Fatalf("published sequence %d, want %d", seq, next)
		}
		f.wait(b, r, time.Minute)
		first, last := time.Unix(0, r.first.Load()), time.Unix(0, r.last.Load())
		toLast = append(toLast, last.Sub(start))
		toFirst = append(toFirst, first.Sub(start))
		spread = append(spread, last.Sub(first))
		next++
	}
	if pid != 0 && rounds > 0 {
		// The daemon's own CPU per published event (publish pipeline and
		// fan-out): unlike the times, it hardly depends on what else the
		// shared machine runs.
		b.ReportMetric(ms(cpuTime(b, pid)-cpu0)/float64(rounds), "daemon-cpu-ms/event")
	}
	if e := f.errs.Load(); e > 0 {
		b.Errorf("%d %s failed; first: %v", e, members, f.err)
	}
	b.ReportMetric(ms(percentile(toLast, 50)), "ms-to-last-p50")
	b.ReportMetric(ms(percentile(toLast, 99)), "ms-to-last-p99")
	b.ReportMetric(ms(percentile(toFirst, 50)), "ms-to-first-p50")
	b.ReportMetric(ms(percentile(spread, 50)), "spread-ms-p50")
	b.ReportMetric(ms(percentile(spread, 99)), "spread-ms-p99")
	return took
}

// TestFanOutHarness checks the benchmark harness itself (a few subscribers
// of each kind get every event); it asserts nothing about time.
func TestFanOutHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon")
	}
	d := startInProcess(t)
	pub := rbv1.NewEventServiceClient(grpcConn(t, d.grpcAddr))
	since, err := publish(context.Background(), pub, 0)
	if err != nil {
		t.Fatal(err)
	}
	g, next := openFleet(t, "grpc", d, pub, 5, since, 1)
	defer g.close()
	w := wsFleet(t, d.httpAddr, 5, since, 1)
	defer w.close()
	for i := range 3 {
		rg, rw := g.expect(next), w.expect(next)
		seq, err := publish(context.Background(), pub, int(next))
		if err != nil || seq != next {
			t.Fatalf("publish %d: sequence %d, %v; want %d", i, seq, err, next)
		}
		g.wait(t, rg, 30*time.Second)
		w.wait(t, rw, 30*time.Second)
		next++
	}
	if g.errs.Load()+w.errs.Load() > 0 {
		t.Fatalf("stream errors: grpc %v, ws %v", g.err, w.err)
	}
}

// cpuTime is the user plus system CPU time process pid has used (0 for
// pid 0, the daemon in this process).
func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command (which may hold spaces), from field 3.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
