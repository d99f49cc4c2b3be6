package mapper

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"radbridge/ingest"
	"radbridge/mapper/rules"
)

// A record the mapper cannot map for a reason that retrying will not
// change (a rule's error, a panic, an event larger than the limit) is
// dead-lettered: recorded with its reason, counted, and passed over, so
// that one bad record never stops every patient's events. A store outage
// is not such a reason: the mapper retries until the store is back.
// `radbridge replay --retry-dead-letters` maps the records again after a
// fix (an ingest.KindRetry observation per record, applied at the log's
// head like any other record).

// DeadLetter is one dead-lettered ingest record. It is stored by the
// DeadLetterStore (JSON, these names are the stored format).
type DeadLetter struct {
	// Seq is the ingest sequence of the record.
	Seq uint64 `json:"seq"`
	// Kind and Key are the record's.
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// At is the record's time (when it was received).
	At time.Time `json:"at"`
	// Reason says why it was not mapped (no patient data).
	Reason string `json:"reason"`
	// Retry is the ingest sequence of the last retry that failed too, 0
	// when it was never retried.
	Retry uint64 `json:"retry,omitempty"`
}

// DeadLetterStore keeps dead letters durably.
type DeadLetterStore interface {
	// PutDeadLetter stores d under d.Seq (replacing one stored before).
	PutDeadLetter(ctx context.Context, d DeadLetter) error
	// DeleteDeadLetter removes the dead letter of record seq, if any.
	DeleteDeadLetter(ctx context.Context, seq uint64) error
	// DeadLetters lists the dead letters by sequence.
	DeadLetters(ctx context.Context) ([]DeadLetter, error)
}

// ErrEventTooLarge: an event the mapper derived is larger than
// Config.MaxEventBytes.
var ErrEventTooLarge = errors.New("event too large")

// errPanic wraps a rule's panic.
type errPanic struct{ v any }

func (e errPanic) Error() string { return fmt.Sprintf("mapping rule panicked: %v", e.v) }

// safeDerive runs the rule of c's record (rules.Derive) and turns a
// rule's panic into an error: a bug triggered by one record is that
// record's dead letter, not a crash loop.
func (m *Mapper) safeDerive(c *rules.Context) (err error) {
	defer func() {
		if v := recover(); v != nil {
			m.log.Error("mapping rule panicked", "ingest_seq", c.Rec.Seq, "kind", c.Rec.Kind, "stack", string(debug.Stack()))
			err = errPanic{v}
		}
	}()
	return rules.Derive(m.cfg.Rules, c)
}

// deadLetter records that record seq (the record applied, or the one a
// retry named) was not mapped, and why.
func (m *Mapper) deadLetter(ctx context.Context, rec ingest.Record, retryOf uint64, reason error) error {
	m.stats.DeadLettered++
	d := DeadLetter{Seq: rec.Seq, Kind: rec.Kind, Key: rec.Key, At: rec.Time, Reason: reason.Error()}
	if retryOf != 0 {
		d.Seq, d.Retry = retryOf, rec.Seq
	}
	m.log.Error("observation dead-lettered: not mapped, passed over", "ingest_seq", d.Seq, "kind", d.Kind, "reason", d.Reason)
	if m.cfg.DeadLetters == nil {
		return nil
	}
	return m.retry(ctx, "record dead letter", rec.Seq, func() error { return m.cfg.DeadLetters.PutDeadLetter(ctx, d) })
}

// resolveRetry returns the record a KindRetry observation names, to be
// mapped at rec's position.
func (m *Mapper) resolveRetry(ctx context.Context, rec ingest.Record) (ingest.Record, uint64, error) {
	r, err := ingest.DecodeRetry(rec.Observation)
	if err != nil {
		return rec, 0, err
	}
	var orig ingest.Record
	if err := m.retry(ctx, "read the record to retry", rec.Seq, func() (err error) {
		orig, err = m.cfg.Ingest.Get(ctx, r.Seq)
		if errors.Is(err, ingest.ErrNotFound) {
			return nil
		}
		return err
	}); err != nil {
		return rec, 0, err
	}
	if orig.Kind == "" {
		return rec, 0, fmt.Errorf("retry of ingest record %d: %w", r.Seq, ingest.ErrNotFound)
	}
	if orig.Kind == ingest.KindRetry || orig.Kind == ingest.KindTimer {
		return rec, 0, fmt.Errorf("retry of ingest record %d: a %s is not retried", r.Seq, orig.Kind)
	}
	return ingest.Record{Seq: rec.Seq, Pending: rec.Pending, Observation: orig.Observation}, r.Seq, nil
}

// MemoryDeadLetters is an in-memory DeadLetterStore for tests.
type MemoryDeadLetters struct {
	mu sync.Mutex
	m  map[uint64]DeadLetter
}

// PutDeadLetter implements DeadLetterStore.
func (s *MemoryDeadLetters) PutDeadLetter(_ context.Context, d DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[uint64]DeadLetter{}
	}
	s.m[d.Seq] = d
	return nil
}

// DeleteDeadLetter implements DeadLetterStore.
func (s *MemoryDeadLetters) DeleteDeadLetter(_ context.Context, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, seq)
	return nil
}

// DeadLetters implements DeadLetterStore.
func (s *MemoryDeadLetters) DeadLetters(context.Context) ([]DeadLetter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeadLetter, 0, len(s.m))
	for _, d := range s.m {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}
