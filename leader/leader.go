// Package leader elects one process among several sharing a JetStream
// store to do work only one of them may do at a time (radbridge's mapper:
// the event log has a single writer).
//
// The lease is one key in a key-value bucket whose entries expire after the
// lease time. A candidate takes the lease by creating the key (which fails
// while another holds it) and keeps it by updating the key at its last
// revision every quarter of the lease time; an update that finds another
// revision means the lease was lost. A holder that cannot renew steps down
// after half the lease time without a successful renewal, so it has stopped
// working before the key can expire and another candidate take it. The
// event log's expected-last-sequence check fences a holder that is paused
// past that point (a garbage-collection stall, a frozen VM): its next append
// is refused.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Config configures an election.
type Config struct {
	// KV is the lease bucket; its TTL must equal Lease.
	KV jetstream.KeyValue
	// Key names the lease (one per kind of work).
	Key string
	// ID identifies this candidate (stored as the key's value).
	ID string
	// Lease is how long a lease lasts without renewal.
	Lease time.Duration
	// Logger receives elections and step-downs.
	Logger *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Elector runs the work while it holds the lease.
type Elector struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	leading bool
	holder  string
	terms   uint64
	since   time.Time
}

// New returns an elector; call Run.
func New(cfg Config) *Elector {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Elector{cfg: cfg, log: cfg.Logger.With("component", "leader", "lease", cfg.Key)}
}

// Status is the elector's view of the election.
type Status struct {
	// Leading is true while this process holds the lease.
	Leading bool
	// Holder is the id of the lease holder last seen ("" if none).
	Holder string
	// Terms counts the leases this process has won.
	Terms uint64
	// Since is when this process last became or stopped being leader.
	Since time.Time
}

// Status returns the elector's view.
func (e *Elector) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Status{Leading: e.leading, Holder: e.holder, Terms: e.terms, Since: e.since}
}

func (e *Elector) set(leading bool, holder string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if leading != e.leading {
		e.since = e.cfg.Now()
		if leading {
			e.terms++
		}
	}
	e.leading, e.holder = leading, holder
}

// Run campaigns until ctx ends. While this process holds the lease it runs
// work with a context that ends when the lease is lost or ctx ends; Run
// waits for work to return before it campaigns again. An error from work
// gives the lease up (so another candidate can try) and is logged; Run
// then waits a lease time before campaigning again. On return the lease is
// released if held.
func (e *Elector) Run(ctx context.Context, work func(context.Context) error) error {
	tick := e.cfg.Lease / 4
	for {
		rev, err := e.cfg.KV.Create(ctx, e.cfg.Key, []byte(e.cfg.ID))
		switch {
		case err == nil:
			e.set(true, e.cfg.ID)
			e.log.Info("became leader", "id", e.cfg.ID)
			werr := e.hold(ctx, rev, work)
			e.set(false, "")
			if ctx.Err() != nil {
				return nil
			}
			if werr != nil {
				e.log.Error("leader work failed; lease given up", "err", werr)
				if !sleep(ctx, e.cfg.Lease) {
					return nil
				}
			}
			continue
		case errors.Is(err, jetstream.ErrKeyExists):
			if ent, gerr := e.cfg.KV.Get(ctx, e.cfg.Key); gerr == nil {
				e.set(false, string(ent.Value()))
			}
		case ctx.Err() != nil:
			return nil
		default:
			e.set(false, "")
			e.log.Warn("lease unavailable; retrying", "err", err)
		}
		if !sleep(ctx, tick) {
			return nil
		}
	}
}

// hold renews the lease while work runs.
func (e *Elector) hold(ctx context.Context, rev uint64, work func(context.Context) error) error {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- work(wctx) }()
	lastOK := e.cfg.Now()
	t := time.NewTicker(e.cfg.Lease / 4)
	defer t.Stop()
	lost := func(why string, args ...any) error {
		e.log.Warn("lost leadership: "+why, args...)
		stop()
		return <-done
	}
	for {
		select {
		case err := <-done:
			e.release(rev)
			if err != nil {
				return err
			}
			return nil
		case <-ctx.Done():
			stop()
			err := <-done
			e.release(rev)
			return err
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, e.cfg.Lease/4)
			nrev, err := e.cfg.KV.Update(rctx, e.cfg.Key, []byte(e.cfg.ID), rev)
			cancel()
			switch {
			case err == nil:
				rev, lastOK = nrev, e.cfg.Now()
			case isWrongRevision(err):
				_ = lost("another process holds the lease")
				return nil
			case e.cfg.Now().Sub(lastOK) > e.cfg.Lease/2:
				// Stop before the key can expire and another take it.
				_ = lost("lease not renewed in time", "err", err)
				e.release(rev)
				return nil
			default:
				e.log.Warn("lease renewal failed; retrying", "err", err)
			}
		}
	}
}

// release deletes the lease (at the revision held) so another candidate
// need not wait for it to expire.
func (e *Elector) release(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.cfg.KV.Delete(ctx, e.cfg.Key, jetstream.LastRevision(rev)); err != nil {
		e.log.Warn("release lease", "err", err)
		return
	}
	e.log.Info("released leadership", "id", e.cfg.ID)
}

func isWrongRevision(err error) bool { return errors.Is(err, jetstream.ErrKeyRevisionMismatch) }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Bucket creates (or opens) the lease bucket for leases of length lease.
func Bucket(ctx context.Context, js jetstream.JetStream, name string, replicas int, lease time.Duration) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "radbridge leases (leader election)",
		TTL:         lease,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", name, err)
	}
	return kv, nil
}
