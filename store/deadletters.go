package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/mapper"
)

// DeadLetterBucket is the key-value bucket of dead letters: one entry per
// ingest record the mapper passed over, keyed by its sequence, holding a
// mapper.DeadLetter as JSON.
const DeadLetterBucket = "RADBRIDGE_DEADLETTERS"

// DeadLetters is the JetStream backend of mapper.DeadLetterStore.
type DeadLetters struct{ kv jetstream.KeyValue }

var _ mapper.DeadLetterStore = (*DeadLetters)(nil)

// DeadLetters returns the dead-letter store.
func (s *Store) DeadLetters() *DeadLetters { return &DeadLetters{kv: s.dead} }

func deadLetterKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// PutDeadLetter implements mapper.DeadLetterStore.
func (d *DeadLetters) PutDeadLetter(ctx context.Context, dl mapper.DeadLetter) error {
	b, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	if _, err := d.kv.Put(ctx, deadLetterKey(dl.Seq), b); err != nil {
		return fmt.Errorf("put dead letter: %w", err)
	}
	return nil
}

// DeleteDeadLetter implements mapper.DeadLetterStore.
func (d *DeadLetters) DeleteDeadLetter(ctx context.Context, seq uint64) error {
	if err := d.kv.Purge(ctx, deadLetterKey(seq)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove dead letter: %w", err)
	}
	return nil
}

// DeadLetters implements mapper.DeadLetterStore.
func (d *DeadLetters) DeadLetters(ctx context.Context) ([]mapper.DeadLetter, error) {
	keys, err := d.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	var out []mapper.DeadLetter
	for k := range keys.Keys() {
		if _, err := strconv.ParseUint(k, 10, 64); err != nil {
			continue
		}
		e, err := d.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read dead letter: %w", err)
		}
		var dl mapper.DeadLetter
		if err := json.Unmarshal(e.Value(), &dl); err != nil {
			return nil, fmt.Errorf("decode dead letter %s: %w", k, err)
		}
		out = append(out, dl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}
