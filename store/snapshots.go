package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/mapper"
)

// SnapshotBucket is the object store of mapper snapshots (a snapshot can
// exceed the 1 MiB limit of a key-value entry).
const SnapshotBucket = "RADBRIDGE_SNAPSHOTS"

// SnapshotsKept is how many snapshots are kept: a broken newest one falls
// back to an older one.
const SnapshotsKept = 3

const snapshotPrefix = "mapper-"

// Snapshots is the JetStream backend of mapper.SnapshotStore.
type Snapshots struct {
	obs jetstream.ObjectStore
	// groupDir, with group commit: everything is fsynced before a
	// snapshot is stored, and the snapshot after.
	groupDir string
}

var _ mapper.SnapshotStore = (*Snapshots)(nil)

// Snapshots returns the snapshot store.
func (s *Store) Snapshots() *Snapshots { return &Snapshots{obs: s.obs, groupDir: s.groupDir} }

func snapshotName(applied uint64) string { return fmt.Sprintf("%s%020d", snapshotPrefix, applied) }

// PutSnapshot implements mapper.SnapshotStore.
func (s *Snapshots) PutSnapshot(ctx context.Context, applied uint64, data []byte) error {
	if s.groupDir != "" {
		// The events, read models and archive versions the snapshot
		// stands on are durable before it is.
		if err := syncAll(s.groupDir); err != nil {
			return fmt.Errorf("put snapshot: %w", err)
		}
	}
	if _, err := s.obs.PutBytes(ctx, snapshotName(applied), data); err != nil {
		return fmt.Errorf("put snapshot: %w", err)
	}
	if s.groupDir != "" {
		if err := syncAll(s.groupDir); err != nil {
			return fmt.Errorf("put snapshot: %w", err)
		}
	}
	seqs, err := s.Snapshots(ctx)
	if err != nil {
		return err
	}
	for _, seq := range seqs[min(SnapshotsKept, len(seqs)):] {
		if err := s.obs.Delete(ctx, snapshotName(seq)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("delete old snapshot: %w", err)
		}
	}
	return nil
}

// Snapshots implements mapper.SnapshotStore.
func (s *Snapshots) Snapshots(ctx context.Context) ([]uint64, error) {
	infos, err := s.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var seqs []uint64
	for _, in := range infos {
		if n, ok := strings.CutPrefix(in.Name, snapshotPrefix); ok && !in.Deleted {
			if seq, err := strconv.ParseUint(n, 10, 64); err == nil {
				seqs = append(seqs, seq)
			}
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
	return seqs, nil
}

// GetSnapshot implements mapper.SnapshotStore.
func (s *Snapshots) GetSnapshot(ctx context.Context, applied uint64) ([]byte, error) {
	b, err := s.obs.GetBytes(ctx, snapshotName(applied))
	if err != nil {
		return nil, fmt.Errorf("get snapshot %d: %w", applied, err)
	}
	return b, nil
}

// Delete removes the snapshot at applied (tests and operators).
func (s *Snapshots) Delete(ctx context.Context, applied uint64) error {
	return s.obs.Delete(ctx, snapshotName(applied))
}
