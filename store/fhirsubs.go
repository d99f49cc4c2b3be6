package store

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Buckets of FHIR Subscriptions (package fhir/subscription owns their
// contents and the format of their values).
const (
	// FHIRSubscriptionBucket holds each subscription ("sub.<id>") and its
	// delivery cursor ("cur.<id>").
	FHIRSubscriptionBucket = "RADBRIDGE_FHIR_SUBSCRIPTIONS"
	// FHIRBindingTokenBucket holds the websocket binding tokens (by hash);
	// entries expire after FHIRBindingTokenTTL.
	FHIRBindingTokenBucket = "RADBRIDGE_FHIR_WS_TOKENS"
	// FHIRBindingTokenTTL is how long a token entry stays at most (a
	// token itself is valid for less).
	FHIRBindingTokenTTL = 10 * time.Minute
)

// FHIRSubscriptions opens (creating them on first use) the FHIR
// Subscription bucket and the binding token bucket.
func (s *Store) FHIRSubscriptions(ctx context.Context) (subs, tokens jetstream.KeyValue, err error) {
	subs, err = s.createKV(ctx, jetstream.KeyValueConfig{
		Bucket:      FHIRSubscriptionBucket,
		Description: "radbridge FHIR Subscriptions and their delivery cursors (see package fhir/subscription)",
		Storage:     jetstream.FileStorage,
		Replicas:    s.replicas,
		History:     1,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create FHIR subscription bucket: %w", err)
	}
	if s.groupDir != "" {
		// A created subscription and an assigned event number are answered
		// or sent: durable first, as everything JetStream fsyncs per write
		// without group commit.
		subs = syncedKV{KeyValue: subs, sync: newBlockSyncer(s.groupDir, "KV_"+FHIRSubscriptionBucket)}
	}
	tokens, err = s.createKV(ctx, jetstream.KeyValueConfig{
		Bucket:      FHIRBindingTokenBucket,
		Description: "radbridge FHIR websocket binding tokens (single use, short-lived)",
		Storage:     jetstream.FileStorage,
		Replicas:    s.replicas,
		History:     1,
		TTL:         FHIRBindingTokenTTL,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create FHIR binding token bucket: %w", err)
	}
	return subs, tokens, nil
}

// syncedKV is a bucket whose writes return only once durable (group
// commit: JetStream fsyncs the other streams only every second).
type syncedKV struct {
	jetstream.KeyValue
	sync *blockSyncer
}

func (k syncedKV) durable(rev uint64, err error) (uint64, error) {
	if err != nil {
		return rev, err
	}
	if err := k.sync.syncThrough(rev); err != nil {
		return 0, fmt.Errorf("FHIR subscription bucket: %w", err)
	}
	return rev, nil
}

// Put implements jetstream.KeyValue.
func (k syncedKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return k.durable(k.KeyValue.Put(ctx, key, value))
}

// PutString implements jetstream.KeyValue.
func (k syncedKV) PutString(ctx context.Context, key string, value string) (uint64, error) {
	return k.durable(k.KeyValue.PutString(ctx, key, value))
}

// Create implements jetstream.KeyValue.
func (k syncedKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return k.durable(k.KeyValue.Create(ctx, key, value, opts...))
}

// Update implements jetstream.KeyValue.
func (k syncedKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	return k.durable(k.KeyValue.Update(ctx, key, value, last))
}
