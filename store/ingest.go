package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/ingest"
)

// IngestLog is the JetStream ingest log. Observations are stored as JSON on
// subject rb.in.<kind>, deduplicated by their key within the duplicate
// window (the mapper ignores repeats beyond it).
type IngestLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
}

var _ ingest.Log = (*IngestLog)(nil)

// Append implements ingest.Log. It returns once the observation is stored
// (fsynced when the store syncs every write).
func (l *IngestLog) Append(ctx context.Context, o ingest.Observation) (uint64, bool, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return 0, false, fmt.Errorf("encode observation: %w", err)
	}
	var opts []jetstream.PublishOpt
	if o.Key != "" {
		opts = append(opts, jetstream.WithMsgID(o.Key))
	}
	ack, err := l.js.Publish(ctx, ingestSubject+"."+o.Kind, data, opts...)
	if err != nil {
		return 0, false, fmt.Errorf("append observation: %w", err)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// Last implements ingest.Log.
func (l *IngestLog) Last(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("ingest stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Watch implements ingest.Log.
func (l *IngestLog) Watch(ctx context.Context, from uint64, fn func(ingest.Record) error) error {
	if from == 0 {
		from = 1
	}
	return watch(ctx, l.stream, from, []string{ingestSubject + ".>"}, func(m jetstream.Msg, seq uint64) error {
		r := ingest.Record{Seq: seq}
		if mp, ok := m.(msgWithPending); ok {
			r.Pending = mp.pending
		}
		if err := json.Unmarshal(m.Data(), &r.Observation); err != nil {
			return fmt.Errorf("decode observation %d: %w", seq, err)
		}
		return fn(r)
	})
}
