package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Storage health. The embedded JetStream's own quota is fixed
// when it starts (75% of the disk's free space then), so space an operator
// frees later would stay unused until a restart. Instead, unless
// Config.MaxStoreBytes sets it, the store's quota follows the disk: what
// the store holds plus 75% of the free space above a reserve, applied as
// the JetStream account's storage limit (which, unlike the server's,
// JetStream lets a running server raise and lower) each CheckInterval.
// Each check also writes a probe file in the data directory, so that a
// full disk or a read-only file system is seen even when no one writes,
// and WriteHealth reports why writes are refused, for readiness.

// ErrWritesRefused wraps every reason WriteHealth gives.
var ErrWritesRefused = errors.New("store refuses writes")

// probeFile is written and removed in the data directory by each check.
const probeFile = ".radbridge-probe"

// writeHeadroom is the room a store needs to count as writable: a
// typical large observation (an HL7 message of the default 1 MiB limit).
const writeHeadroom = 1 << 20

// health is the state of the write checks.
type health struct {
	dir      string // the data directory; "" for an external NATS
	explicit int64  // Config.MaxStoreBytes
	interval time.Duration

	mu    sync.Mutex
	err   error // the last check's reason, nil when writable
	quota int64 // the quota applied by the last check (0: none yet)
	used  int64 // the store's bytes at the last check
}

// diskReserve is the free space the store leaves to the rest of the
// system when it follows the disk: 5% of the file system, at most 1 GiB.
func diskReserve(total int64) int64 { return min(total/20, 1<<30) }

// embeddedMaxStore is the embedded server's own JetStream limit: the
// explicit quota, or (following the disk) the file system's size, so that
// the account limit set by each check is what binds.
func embeddedMaxStore(cfg Config) int64 {
	if cfg.MaxStoreBytes > 0 {
		return cfg.MaxStoreBytes
	}
	if _, total, ok := diskSpace(cfg.DataDir); ok {
		return total
	}
	return 0 // JetStream's dynamic default
}

// WriteHealth is nil while the store takes writes, or says why not (the
// quota is reached, the disk is full or read-only, JetStream stopped), as
// of the last check.
func (s *Store) WriteHealth() error {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return s.health.err
}

// Quota returns the storage quota the last check applied or read (0 when
// unknown or unlimited) and the bytes the store held then.
func (s *Store) Quota() (quota, used int64) {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return s.health.quota, s.health.used
}

// MonitorWrites checks the store every Config.CheckInterval until ctx ends.
func (s *Store) MonitorWrites(ctx context.Context) error {
	t := time.NewTicker(s.health.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.CheckWrites(ctx)
		}
	}
}

// CheckWrites updates the quota (embedded store following the disk),
// probes the data directory and records the outcome for WriteHealth.
func (s *Store) CheckWrites(ctx context.Context) {
	var quota, used int64
	err := func() error {
		if s.ns == nil {
			return s.checkExternal(ctx, &quota, &used)
		}
		if !s.ns.JetStreamEnabled() {
			return errors.New("JetStream has stopped (it does after a failed disk write); fix the disk and restart")
		}
		acc := s.ns.GlobalAccount()
		used = int64(acc.JetStreamUsage().Store)
		free, total, diskOK := diskSpace(s.health.dir)
		switch {
		case s.health.explicit > 0:
			quota = s.health.explicit
		case diskOK:
			quota = used + max(0, free-diskReserve(total))/4*3
			limits := map[string]server.JetStreamAccountLimits{"": {
				MaxMemory: -1, MaxStore: quota, MaxStreams: -1, MaxConsumers: -1, MaxAckPending: -1,
				MemoryMaxStreamBytes: -1, StoreMaxStreamBytes: -1,
			}}
			if err := acc.UpdateJetStreamLimits(limits); err != nil {
				return fmt.Errorf("set the storage quota to %d bytes: %w", quota, err)
			}
		}
		if err := probe(s.health.dir); err != nil {
			return err
		}
		reserve := diskReserve(total)
		if s.health.explicit > 0 {
			reserve = 0 // the operator chose the quota; only a full disk counts
		}
		if diskOK && free < reserve+writeHeadroom {
			return fmt.Errorf("disk full: %d bytes free in %s", free, s.health.dir)
		}
		if quota > 0 && used+writeHeadroom > quota {
			what := "75% of the disk's free space"
			if s.health.explicit > 0 {
				what = "--store-max-bytes"
			}
			return fmt.Errorf("storage quota reached: %d of %d bytes used (%s)", used, quota, what)
		}
		return nil
	}()
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrWritesRefused, err)
	}
	s.health.mu.Lock()
	s.health.err, s.health.quota, s.health.used = err, quota, used
	s.health.mu.Unlock()
}

// checkExternal reads the account's storage limit and usage from an
// external JetStream.
func (s *Store) checkExternal(ctx context.Context, quota, used *int64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := s.js.AccountInfo(ctx)
	if err != nil {
		return nil // the connection's health is reported elsewhere (Healthy)
	}
	*used = int64(info.Store)
	if info.Limits.MaxStore > 0 {
		*quota = info.Limits.MaxStore
		if *used+writeHeadroom > *quota {
			return fmt.Errorf("storage quota reached: %d of %d bytes used (the NATS account's limit)", *used, *quota)
		}
	}
	return nil
}

// probe writes, syncs and removes a small file in dir: a read-only file
// system or a full disk fails it.
func probe(dir string) error {
	p := filepath.Join(dir, probeFile)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("data directory not writable: %w", err)
	}
	_, werr := f.Write([]byte("radbridge write probe\n"))
	serr := f.Sync()
	cerr := f.Close()
	rerr := os.Remove(p)
	if err := errors.Join(werr, serr, cerr, rerr); err != nil {
		return fmt.Errorf("data directory not writable: %w", err)
	}
	return nil
}
