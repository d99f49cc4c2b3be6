package leader_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"radbridge/internal/natstest"
	"radbridge/internal/testkit"
	"radbridge/leader"
)

func runServer(t *testing.T) *server.Server {
	t.Helper()
	return natstest.Server(t, 0)
}

// candidate is one process: its own connection, so closing it is a crash.
type candidate struct {
	nc     *nats.Conn
	el     *leader.Elector
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, ns *server.Server, id string, lease time.Duration, active *atomic.Int32, maxActive *atomic.Int32, terms *atomic.Int32) *candidate {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	kv, err := leader.Bucket(context.Background(), js, "LEASES", 1, lease)
	if err != nil {
		t.Fatal(err)
	}
	el := leader.New(leader.Config{KV: kv, Key: "mapper", ID: id, Lease: lease})
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{nc: nc, el: el, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		el.Run(ctx, func(ctx context.Context) error {
			terms.Add(1)
			n := active.Add(1)
			for {
				m := maxActive.Load()
				if n <= m || maxActive.CompareAndSwap(m, n) {
					break
				}
			}
			<-ctx.Done()
			active.Add(-1)
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-c.done; nc.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, what, cond)
}

func leaders(cs ...*candidate) (n int, who *candidate) {
	for _, c := range cs {
		if c.el.Status().Leading {
			n++
			who = c
		}
	}
	return n, who
}

// TestOneLeaderAndTakeover: three candidates, exactly one works at a time;
// an orderly stop hands over at once, a crash (connection gone, lease not
// released) after the lease expires.
func TestOneLeaderAndTakeover(t *testing.T) {
	ns := runServer(t)
	var active, maxActive, terms atomic.Int32
	lease := 2 * time.Second
	cs := []*candidate{
		start(t, ns, "a", lease, &active, &maxActive, &terms),
		start(t, ns, "b", lease, &active, &maxActive, &terms),
		start(t, ns, "c", lease, &active, &maxActive, &terms),
	}
	waitFor(t, "a leader", func() bool { n, _ := leaders(cs...); return n == 1 })
	_, first := leaders(cs...)
	for _, c := range cs {
		if c != first {
			waitFor(t, "followers to see the holder", func() bool { return c.el.Status().Holder == first.el.Status().Holder })
		}
	}

	// Orderly stop: the lease is released and another takes it.
	first.cancel()
	<-first.done
	var rest []*candidate
	for _, c := range cs {
		if c != first {
			rest = append(rest, c)
		}
	}
	waitFor(t, "a second leader", func() bool { n, _ := leaders(rest...); return n == 1 })
	_, second := leaders(rest...)

	// Crash: the process's connection disappears without releasing.
	second.nc.Close()
	var last *candidate
	for _, c := range rest {
		if c != second {
			last = c
		}
	}
	waitFor(t, "takeover after the lease expired", func() bool { return last.el.Status().Leading })
	waitFor(t, "the crashed one to step down", func() bool { return !second.el.Status().Leading })

	if m := maxActive.Load(); m != 1 {
		t.Errorf("%d candidates worked at the same time, want 1", m)
	}
	if n := terms.Load(); n != 3 {
		t.Errorf("%d terms, want 3", n)
	}
}

// TestWorkErrorGivesUpLease: a leader whose work fails releases the lease
// to another candidate.
func TestWorkErrorGivesUpLease(t *testing.T) {
	ns := runServer(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := leader.Bucket(context.Background(), js, "LEASES", 1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failing := leader.New(leader.Config{KV: kv, Key: "mapper", ID: "failing", Lease: 2 * time.Second})
	healthy := leader.New(leader.Config{KV: kv, Key: "mapper", ID: "healthy", Lease: 2 * time.Second})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		failing.Run(ctx, func(context.Context) error {
			mu.Lock()
			order = append(order, "failing")
			mu.Unlock()
			return context.DeadlineExceeded
		})
	}()
	waitFor(t, "the failing candidate's term", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 1 })
	go func() {
		defer wg.Done()
		healthy.Run(ctx, func(ctx context.Context) error {
			mu.Lock()
			order = append(order, "healthy")
			mu.Unlock()
			<-ctx.Done()
			return nil
		})
	}()
	waitFor(t, "the healthy candidate to lead", func() bool { return healthy.Status().Leading })
	cancel()
	wg.Wait()
	if failing.Status().Terms < 1 || healthy.Status().Terms != 1 {
		t.Errorf("terms: failing %d, healthy %d", failing.Status().Terms, healthy.Status().Terms)
	}
}
