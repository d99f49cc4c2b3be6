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
	subs, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      FHIRSubscriptionBucket,
		Description: "radbridge FHIR Subscriptions and their delivery cursors (see package fhir/subscription)",
		Storage:     jetstream.FileStorage,
		Replicas:    s.replicas,
		History:     1,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create FHIR subscription bucket: %w", err)
	}
	tokens, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
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
