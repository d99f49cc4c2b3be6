package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/mapper"
)

// ArchiveBucket is the key-value bucket of the patients the mapper evicted
// from memory (mapper.Archive): versions of each patient with its studies,
// orders and accession entries, and index entries that name the patients
// holding a study, order, accession or MPPS instance.
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

// PutArchive implements mapper.Archive.
func (a *Archive) PutArchive(ctx context.Context, key string, value []byte) error {
	if _, err := a.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("put archived state: %w", err)
	}
	return nil
}
