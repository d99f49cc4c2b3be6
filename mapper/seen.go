package mapper

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"radbridge/mapper/rules"
)

// SeenStore keeps the mapper's observation keys durably, so the mapper
// holds in memory only the keys added since its last snapshot and a bounded
// cache, not every key of the dedup horizon.
//
// For each key it keeps the first sightings: the ingest sequence (and log
// time) of the record that first carried the key, and of each later record
// that carried it again after the dedup horizon had passed (a resend mapped
// as new). Writes are unions: a sighting, once stored, is never changed or
// removed by the mapper, so the set is a pure function of the ingest log,
// and a mapper that restarts from an older snapshot ignores the sightings
// "in its future" (sequences above the record it applies) instead of
// needing versions.
type SeenStore interface {
	// GetSeen returns the sightings stored for key (nil when none).
	GetSeen(ctx context.Context, key string) ([]SeenKey, error)
	// AddSeen merges each key's sightings into the stored ones.
	AddSeen(ctx context.Context, batch map[string][]SeenKey) error
}

// SeenKey records a first sighting of an observation key (the state's
// type: snapshots of older versions carried them).
type SeenKey = rules.SeenKey

// MergeSeen returns the union of a and b ordered by sequence.
func MergeSeen(a, b []SeenKey) []SeenKey {
	out := make([]SeenKey, 0, len(a)+len(b))
	out = append(append(out, a...), b...)
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return slices.CompactFunc(out, func(x, y SeenKey) bool { return x.Seq == y.Seq })
}

// seenDecision applies the dedup rule to the sightings of a key for the
// record seq at time at: the newest sighting at or before seq decides. The
// record is a duplicate when that sighting is an earlier record less than
// horizon before at (or horizon is 0). Otherwise the record is a new
// sighting (add reports whether it must be recorded).
func seenDecision(ks []SeenKey, seq uint64, at time.Time, horizon time.Duration) (dup, add bool) {
	var cur *SeenKey
	for i := range ks {
		if ks[i].Seq <= seq && (cur == nil || ks[i].Seq > cur.Seq) {
			cur = &ks[i]
		}
	}
	if cur == nil {
		return false, true
	}
	if cur.Seq == seq {
		return false, false // this record is the sighting (mapped again after a restart)
	}
	if horizon <= 0 || cur.At >= at.Add(-horizon).UnixMilli() {
		return true, false
	}
	return false, true
}

// seenCacheMax bounds the keys read from the SeenStore kept in memory.
const seenCacheMax = 1 << 16

// seenSet is the mapper's view of the observation keys: the keys added
// since the last snapshot (fresh), those handed to a snapshot being written
// (flushing, read-only until written), a cache of keys read from the store,
// and the store.
type seenSet struct {
	store SeenStore
	fresh map[string][]SeenKey
	cache map[string][]SeenKey

	mu       sync.Mutex
	flushing []seenBatch
	batches  int
}

// seenBatch is a set of fresh keys handed to a snapshot.
type seenBatch struct {
	id   int
	keys map[string][]SeenKey
}

func newSeenSet(store SeenStore) *seenSet {
	return &seenSet{store: store, fresh: map[string][]SeenKey{}, cache: map[string][]SeenKey{}}
}

// lookup returns the sightings of key known to the mapper (an error: the
// store could not be read).
func (s *seenSet) lookup(ctx context.Context, key string) ([]SeenKey, error) {
	if ks, ok := s.fresh[key]; ok {
		return ks, nil
	}
	s.mu.Lock()
	for i := len(s.flushing) - 1; i >= 0; i-- {
		if ks, ok := s.flushing[i].keys[key]; ok {
			s.mu.Unlock()
			return ks, nil
		}
	}
	s.mu.Unlock()
	if ks, ok := s.cache[key]; ok {
		return ks, nil
	}
	if s.store == nil {
		return nil, nil
	}
	ks, err := s.store.GetSeen(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(ks) > 0 {
		if len(s.cache) >= seenCacheMax {
			n := 0
			for k := range s.cache { // drop an arbitrary eighth
				delete(s.cache, k)
				if n++; n >= seenCacheMax/8 {
					break
				}
			}
		}
		s.cache[key] = ks
	}
	return ks, nil
}

// add records a new sighting of key on top of the known ones.
func (s *seenSet) add(key string, known []SeenKey, k SeenKey) {
	s.fresh[key] = MergeSeen(known, []SeenKey{k})
	delete(s.cache, key)
}

// handOff moves the fresh keys to the flushing list and returns every
// batch not yet written (nil without a store).
func (s *seenSet) handOff() []seenBatch {
	if s.store == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fresh) > 0 {
		s.batches++
		s.flushing = append(s.flushing, seenBatch{s.batches, s.fresh})
		s.fresh = map[string][]SeenKey{}
	}
	return slices.Clone(s.flushing)
}

// write stores batches (from handOff) and forgets them once stored.
func (s *seenSet) write(ctx context.Context, batches []seenBatch) error {
	for _, b := range batches {
		if err := s.store.AddSeen(ctx, b.keys); err != nil {
			return err
		}
		s.mu.Lock()
		s.flushing = slices.DeleteFunc(s.flushing, func(x seenBatch) bool { return x.id == b.id })
		s.mu.Unlock()
	}
	return nil
}

// MemorySeen is an in-memory SeenStore (tests, dry runs).
type MemorySeen struct {
	mu   sync.Mutex
	keys map[string][]SeenKey
	// FailWrites, when set, makes AddSeen fail with it (tests).
	FailWrites error
}

// GetSeen implements SeenStore.
func (s *MemorySeen) GetSeen(_ context.Context, key string) ([]SeenKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.keys[key]), nil
}

// AddSeen implements SeenStore.
func (s *MemorySeen) AddSeen(_ context.Context, batch map[string][]SeenKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.FailWrites != nil {
		return s.FailWrites
	}
	if s.keys == nil {
		s.keys = map[string][]SeenKey{}
	}
	for k, v := range batch {
		s.keys[k] = MergeSeen(s.keys[k], v)
	}
	return nil
}

// Len is the number of keys stored.
func (s *MemorySeen) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}
