package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/mapper"
)

// SeenBucket is the key-value bucket of the mapper's observation keys
// (mapper.SeenStore). The keys are spread over SeenShards entries by a hash
// of the key; each entry maps the hashes of its keys to their first
// sightings. One entry per key would cost the JetStream server a few
// hundred bytes of memory per key (its index of subjects): more than the
// mapper's own map of keys did. The shards bound that to SeenShards keys.
const SeenBucket = "RADBRIDGE_SEEN"

// SeenShards is the number of entries the observation keys are spread
// over: at 3 million keys (30 days of 100,000 messages) a shard holds about
// 46 keys, 2 KB.
const SeenShards = 1 << 16 // the first 16 bits of the key's SHA-256

// Seen is the JetStream backend of mapper.SeenStore.
type Seen struct {
	kv jetstream.KeyValue
	// maxAge drops, when a shard is written, the keys whose newest
	// sighting is this much older (by log time) than the newest sighting
	// written; 0 keeps them.
	maxAge time.Duration
}

var _ mapper.SeenStore = (*Seen)(nil)

// Seen returns the observation key store.
func (s *Store) Seen() *Seen { return &Seen{kv: s.seen, maxAge: s.seenMaxAge} }

// SeenMaxAge is how long the store keeps an observation key for a dedup
// horizon (0: forever). Twice the horizon: a mapper that restarts from a
// snapshot replays records up to a horizon old against keys up to a
// horizon older than those records.
func SeenMaxAge(horizon time.Duration) time.Duration {
	if horizon <= 0 {
		return 0
	}
	return 2 * horizon
}

// seenSlot returns the shard entry of key and the key's id in it (96 bits
// of its SHA-256: a collision between two keys of one horizon is
// vanishingly unlikely).
func seenSlot(key string) (shard, id string) {
	sum := sha256.Sum256([]byte(key))
	return fmt.Sprintf("s.%04x", binary.BigEndian.Uint16(sum[:2])), base64.RawURLEncoding.EncodeToString(sum[2:14])
}

type seenShard map[string][]mapper.SeenKey

func (s *Seen) getShard(ctx context.Context, shard string) (seenShard, uint64, error) {
	e, err := s.kv.Get(ctx, shard)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return seenShard{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get observation keys: %w", err)
	}
	m := seenShard{}
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, 0, fmt.Errorf("decode observation keys: %w", err)
	}
	return m, e.Revision(), nil
}

// GetSeen implements mapper.SeenStore.
func (s *Seen) GetSeen(ctx context.Context, key string) ([]mapper.SeenKey, error) {
	shard, id := seenSlot(key)
	m, _, err := s.getShard(ctx, shard)
	if err != nil {
		return nil, err
	}
	return m[id], nil
}

// AddSeen implements mapper.SeenStore: each shard the batch touches is
// read, merged (a union of sightings per key) and written back with
// compare-and-set, so a concurrent writer (a paused former leader) loses
// nothing.
func (s *Seen) AddSeen(ctx context.Context, batch map[string][]mapper.SeenKey) error {
	byShard := map[string]seenShard{}
	var newest int64
	for key, ks := range batch {
		shard, id := seenSlot(key)
		if byShard[shard] == nil {
			byShard[shard] = seenShard{}
		}
		byShard[shard][id] = mapper.MergeSeen(byShard[shard][id], ks)
		for _, k := range ks {
			newest = max(newest, k.At)
		}
	}
	shards := make([]string, 0, len(byShard))
	for sh := range byShard {
		shards = append(shards, sh)
	}
	sort.Strings(shards)
	cut := int64(0)
	if s.maxAge > 0 {
		cut = newest - s.maxAge.Milliseconds()
	}
	for _, sh := range shards {
		if err := s.addShard(ctx, sh, byShard[sh], cut); err != nil {
			return err
		}
	}
	return nil
}

func (s *Seen) addShard(ctx context.Context, shard string, add seenShard, cut int64) error {
	for range 16 {
		m, rev, err := s.getShard(ctx, shard)
		if err != nil {
			return err
		}
		for id, ks := range add {
			m[id] = mapper.MergeSeen(m[id], ks)
		}
		for id, ks := range m {
			if ks[len(ks)-1].At < cut {
				delete(m, id) // older than the store keeps
			}
		}
		b, _ := json.Marshal(m)
		if rev == 0 {
			_, err = s.kv.Create(ctx, shard, b)
		} else {
			_, err = s.kv.Update(ctx, shard, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
				return fmt.Errorf("put observation keys: %w", err)
			}
		}
		// Written meanwhile by another process: merge again.
	}
	return fmt.Errorf("put observation keys: shard %s kept changing", shard)
}

// Status describes the bucket (tests, operators).
func (s *Seen) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	return s.kv.Status(ctx)
}
