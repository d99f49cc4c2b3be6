package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/mapper"
)

// SeenBucket is the key-value bucket of the mapper's observation keys
// (mapper.SeenStore): one entry per key, named by a hash of the key, whose
// value lists the key's first sightings. Its MaxAge (Config.SeenMaxAge)
// prunes keys by age.
const SeenBucket = "RADBRIDGE_SEEN"

// Seen is the JetStream backend of mapper.SeenStore.
type Seen struct{ kv jetstream.KeyValue }

var _ mapper.SeenStore = (*Seen)(nil)

// Seen returns the observation key store.
func (s *Store) Seen() *Seen { return &Seen{kv: s.seen} }

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

func seenKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "k." + base64.RawURLEncoding.EncodeToString(sum[:])
}

// GetSeen implements mapper.SeenStore.
func (s *Seen) GetSeen(ctx context.Context, key string) ([]mapper.SeenKey, error) {
	e, err := s.kv.Get(ctx, seenKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get observation key: %w", err)
	}
	var ks []mapper.SeenKey
	if err := json.Unmarshal(e.Value(), &ks); err != nil {
		return nil, fmt.Errorf("decode observation key: %w", err)
	}
	return ks, nil
}

// AddSeen implements mapper.SeenStore: a new key is created, a known one
// updated with the union of its sightings (compare-and-set).
func (s *Seen) AddSeen(ctx context.Context, batch map[string][]mapper.SeenKey) error {
	for key, ks := range batch {
		k := seenKey(key)
		b, _ := json.Marshal(ks)
		_, err := s.kv.Create(ctx, k, b)
		for errors.Is(err, jetstream.ErrKeyExists) {
			e, gerr := s.kv.Get(ctx, k)
			if gerr != nil {
				return fmt.Errorf("get observation key: %w", gerr)
			}
			var old []mapper.SeenKey
			if json.Unmarshal(e.Value(), &old) != nil {
				old = nil // unreadable: replaced by the new sightings
			}
			b, _ = json.Marshal(mapper.MergeSeen(old, ks))
			_, err = s.kv.Update(ctx, k, b, e.Revision())
			if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
				var apiErr *jetstream.APIError
				if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
					err = jetstream.ErrKeyExists // changed meanwhile: merge again
				}
			}
		}
		if err != nil {
			return fmt.Errorf("put observation key: %w", err)
		}
	}
	return nil
}
