package leased_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper"
	"radbridge/mapper/leased"
)

// TestAloneWaitReady: a process alone is not ready before its mapper
// runs, becomes ready once the mapper has caught up, leads while it runs,
// and stops leading when Run returns.
func TestAloneWaitReady(t *testing.T) {
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	newMapper := func() *mapper.Mapper { return mapper.New(mapper.Config{Ingest: in, Events: evs}) }
	m := leased.New(newMapper, nil)
	if m.Clustered() || m.Leading() || m.Ready() {
		t.Fatalf("before Run: clustered %v, leading %v, ready %v; want all false", m.Clustered(), m.Leading(), m.Ready())
	}
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := m.WaitReady(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady before Run = %v, want the context's deadline", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if !m.Ready() || !m.Leading() || m.Current() == nil {
		t.Errorf("after WaitReady: ready %v, leading %v; want both", m.Ready(), m.Leading())
	}
	if role, holder := m.Status(); role != "single" || holder != "" || m.Terms() != 1 {
		t.Errorf("Status = %q, %q, terms %d; want single, none, 1", role, holder, m.Terms())
	}
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if m.Leading() || m.Latest() == nil {
		t.Errorf("after Run: leading %v, latest %v; want not leading, the last mapper kept", m.Leading(), m.Latest())
	}
	if _, err := m.Await(ctx, 1); !errors.Is(err, leased.ErrNotLeading) {
		t.Errorf("Await after Run = %v, want ErrNotLeading", err)
	}
}
