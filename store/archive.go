package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/mapper"
)

// ArchiveBucket is the key-value bucket of the patients the mapper evicted
// from memory (mapper.Archive): one key per patient, whose last
// mapper.ArchiveVersions values (its history) are its versions, and 65,536
// index shards naming the patients that hold a study, order, accession or
// MPPS instance.
const ArchiveBucket = "RADBRIDGE_ARCHIVE"

// Archive is the JetStream backend of mapper.Archive.
type Archive struct{ kv jetstream.KeyValue }

var _ mapper.Archive = (*Archive)(nil)

// Archive returns the mapper's archive of evicted patients.
func (s *Store) Archive() *Archive { return &Archive{kv: s.archive} }

// GetArchive implements mapper.Archive.
func (a *Archive) GetArchive(ctx context.Context, key string) ([]byte, error) {
	e, err := a.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get archived state: %w", err)
	}
	return e.Value(), nil
}

// ArchiveHistory implements mapper.Archive.
func (a *Archive) ArchiveHistory(ctx context.Context, key string) ([][]byte, error) {
	es, err := a.kv.History(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read archived versions: %w", err)
	}
	var out [][]byte
	for _, e := range es {
		if e.Operation() == jetstream.KeyValuePut {
			out = append(out, e.Value())
		}
	}
	return out, nil
}

// PutArchive implements mapper.Archive.
func (a *Archive) PutArchive(ctx context.Context, key string, value []byte) error {
	if _, err := a.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("put archived state: %w", err)
	}
	return nil
}

// MergeArchive implements mapper.Archive with compare-and-set: a paused
// former leader writing meanwhile loses nothing.
func (a *Archive) MergeArchive(ctx context.Context, key string, merge func(old []byte) []byte) error {
	for range 16 {
		var old []byte
		var rev uint64
		e, err := a.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("get archived state: %w", err)
		default:
			old, rev = e.Value(), e.Revision()
		}
		b := merge(old)
		if rev == 0 {
			_, err = a.kv.Create(ctx, key, b)
		} else {
			_, err = a.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
				return fmt.Errorf("put archived state: %w", err)
			}
		}
	}
	return fmt.Errorf("put archived state: %s kept changing", key)
}
