package store

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Thumbnails is the state bucket as the study thumbnail service keeps its
// previews there (package thumbnails chooses the keys: thumb.<study uid>,
// thumbseries.<series uid>): values with revisions for compare-and-set.
type Thumbnails struct{ kv jetstream.KeyValue }

// Thumbnails returns the state bucket for the thumbnail service.
func (s *Store) Thumbnails() *Thumbnails { return &Thumbnails{kv: s.kv} }

// Get returns key's value and revision; found is false when the key has
// no value.
func (t *Thumbnails) Get(ctx context.Context, key string) (value []byte, revision uint64, found bool, err error) {
	e, err := t.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	return e.Value(), e.Revision(), true, nil
}

// Put sets key's value.
func (t *Thumbnails) Put(ctx context.Context, key string, value []byte) error {
	_, err := t.kv.Put(ctx, key, value)
	return err
}

// Create sets key's value unless it has one: ok is false when it had.
func (t *Thumbnails) Create(ctx context.Context, key string, value []byte) (ok bool, err error) {
	return casResult(t.kv.Create(ctx, key, value))
}

// Update sets key's value if its revision is still revision: ok is false
// when it changed.
func (t *Thumbnails) Update(ctx context.Context, key string, value []byte, revision uint64) (ok bool, err error) {
	return casResult(t.kv.Update(ctx, key, value, revision))
}

// casResult tells a lost compare-and-set (the key exists, or its revision
// changed; a replicated bucket reports only the latter) from a failure.
func casResult(_ uint64, err error) (bool, error) {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, nil
	}
	return err == nil, err
}
