package ingest

import (
	"context"
	"sync"
)

// Memory is an in-memory Log for unit tests of packages that use the log.
type Memory struct {
	// RecordDuplicates makes Append store resends again, as a JetStream log
	// does once its duplicate window has passed.
	RecordDuplicates bool

	mu   sync.Mutex
	recs []Record
	keys map[string]uint64
	wake chan struct{}
}

// NewMemory returns an empty in-memory log.
func NewMemory() *Memory { return &Memory{keys: map[string]uint64{}, wake: make(chan struct{})} }

// Append implements Log. Keys deduplicate forever.
func (m *Memory) Append(ctx context.Context, o Observation) (uint64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq, ok := m.keys[o.Key]; ok && o.Key != "" && !m.RecordDuplicates {
		return seq, true, nil
	}
	seq := uint64(len(m.recs) + 1)
	m.recs = append(m.recs, Record{Seq: seq, Observation: o})
	if o.Key != "" {
		m.keys[o.Key] = seq
	}
	close(m.wake)
	m.wake = make(chan struct{})
	return seq, false, nil
}

// Last implements Log.
func (m *Memory) Last(ctx context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(len(m.recs)), nil
}

// Get implements Log.
func (m *Memory) Get(ctx context.Context, seq uint64) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq == 0 || seq > uint64(len(m.recs)) {
		return Record{}, ErrNotFound
	}
	return m.recs[seq-1], nil
}

// Watch implements Log.
func (m *Memory) Watch(ctx context.Context, from uint64, fn func(Record) error) error {
	if from == 0 {
		from = 1
	}
	for {
		m.mu.Lock()
		batch := append([]Record(nil), m.recs[min(int(from-1), len(m.recs)):]...)
		wake := m.wake
		m.mu.Unlock()
		for i, r := range batch {
			r.Pending = uint64(len(batch) - 1 - i)
			if err := fn(r); err != nil {
				return err
			}
			from = r.Seq + 1
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}
