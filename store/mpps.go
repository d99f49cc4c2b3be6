package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MPPSBucket is the key-value bucket of the Modality Performed Procedure
// Steps the DICOM SCP accepted: one key per step (a hash of its SOP
// Instance UID), whose value the SCP reads before it answers an N-CREATE
// or N-SET and replaces with compare-and-swap, so every process of a
// cluster, and every restart, judges a step by the same state.
const MPPSBucket = "RADBRIDGE_MPPS"

// MPPSStepTTL is how long a step is kept after its last change: a step
// is done within hours, and the bucket must not grow for ever. An N-SET of
// a step forgotten since is answered 0112 (No such SOP Instance).
const MPPSStepTTL = 30 * 24 * time.Hour

// ErrStepChanged: the step was created or changed since it was read
// (compare-and-swap lost); read it again.
var ErrStepChanged = errors.New("MPPS step changed meanwhile")

// Steps is the MPPS step state bucket.
type Steps struct {
	kv jetstream.KeyValue
	// sync, with group commit, fsyncs a state before it is answered.
	sync *blockSyncer
}

// Steps returns the MPPS step states.
func (s *Store) Steps() *Steps { return &Steps{kv: s.mpps, sync: s.mppsSync} }

// durable fsyncs the bucket after a write that succeeded (group commit).
func (s *Steps) durable(rev uint64) error {
	if s.sync == nil {
		return nil
	}
	if err := s.sync.syncThrough(rev); err != nil {
		return fmt.Errorf("MPPS step: %w", err)
	}
	return nil
}

// stepKey is the bucket key of an MPPS SOP Instance UID: UIDs from the
// network need not be valid subject tokens.
func stepKey(uid string) string {
	sum := sha256.Sum256([]byte(uid))
	return "p." + hex.EncodeToString(sum[:16])
}

// Get returns the state of step uid and its revision, or nil and 0 when
// the step is unknown.
func (s *Steps) Get(ctx context.Context, uid string) ([]byte, uint64, error) {
	e, err := s.kv.Get(ctx, stepKey(uid))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get MPPS step: %w", err)
	}
	return e.Value(), e.Revision(), nil
}

// Create records the state of a new step; ErrStepChanged when it exists.
func (s *Steps) Create(ctx context.Context, uid string, state []byte) error {
	rev, err := s.kv.Create(ctx, stepKey(uid), state)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return ErrStepChanged
	}
	if err != nil {
		return fmt.Errorf("create MPPS step: %w", err)
	}
	return s.durable(rev)
}

// Update replaces the state of step uid read at revision rev;
// ErrStepChanged when it changed since.
func (s *Steps) Update(ctx context.Context, uid string, state []byte, rev uint64) error {
	rev, err := s.kv.Update(ctx, stepKey(uid), state, rev)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return ErrStepChanged
	}
	if err != nil {
		return fmt.Errorf("update MPPS step: %w", err)
	}
	return s.durable(rev)
}
