package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/ingest"
)

// IngestLog is the JetStream ingest log. Observations are stored as JSON on
// subject rb.in.<kind>, deduplicated by their key within the duplicate
// window (the mapper ignores repeats beyond it).
type IngestLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	// sync, with group commit, makes appended records durable (nil:
	// JetStream fsyncs every write itself, or not at all).
	sync *blockSyncer
}

var _ ingest.FirstLog = (*IngestLog)(nil)

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
	// A duplicate's record was written earlier and may be waiting for its
	// fsync: it is acknowledged only once durable too.
	if err := l.durable(ack.Sequence); err != nil {
		return 0, false, err
	}
	return ack.Sequence, ack.Duplicate, nil
}

// durable returns once record seq, which is written, is durable.
func (l *IngestLog) durable(seq uint64) error {
	if l.sync == nil {
		return nil
	}
	return l.sync.syncThrough(seq)
}

// GroupCommits returns how many fsyncs group commit has done (0 without).
func (l *IngestLog) GroupCommits() uint64 {
	if l.sync == nil {
		return 0
	}
	return l.sync.fsyncs.Load()
}

// Last implements ingest.Log.
func (l *IngestLog) Last(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("ingest stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Get implements ingest.Log.
func (l *IngestLog) Get(ctx context.Context, seq uint64) (ingest.Record, error) {
	m, err := l.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ingest.Record{}, ingest.ErrNotFound
	}
	if err != nil {
		return ingest.Record{}, fmt.Errorf("read ingest record %d: %w", seq, err)
	}
	if err := l.durable(seq); err != nil {
		return ingest.Record{}, err
	}
	r := ingest.Record{Seq: seq}
	if err := json.Unmarshal(m.Data, &r.Observation); err != nil {
		return ingest.Record{}, fmt.Errorf("decode observation %d: %w", seq, err)
	}
	return r, nil
}

// Watch implements ingest.Log.
func (l *IngestLog) Watch(ctx context.Context, from uint64, fn func(ingest.Record) error) error {
	if from == 0 {
		from = 1
	}
	return watch(ctx, l.stream, from, []string{ingestSubject + ".>"}, func(m jetstream.Msg, seq uint64) error {
		// The mapper derives events only from durable records: a record
		// lost to power loss before its fsync must not leave events.
		if err := l.durable(seq); err != nil {
			return err
		}
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

// First returns the oldest sequence still stored (Last+1 when every record
// was trimmed, 1 when the log is empty).
func (l *IngestLog) First(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("ingest stream info: %w", err)
	}
	if info.State.Msgs == 0 {
		return info.State.LastSeq + 1, nil
	}
	return info.State.FirstSeq, nil
}

// Trim removes the records before sequence keep (exclusive) and returns how
// many it removed. The caller decides what may go (never records that no
// snapshot covers).
func (l *IngestLog) Trim(ctx context.Context, keep uint64) (uint64, error) {
	first, err := l.First(ctx)
	if err != nil || keep <= first {
		return 0, err
	}
	if err := l.stream.Purge(ctx, jetstream.WithPurgeSequence(keep)); err != nil {
		return 0, fmt.Errorf("trim ingest log: %w", err)
	}
	return keep - first, nil
}

// Usage returns the stored records' count and bytes.
func (l *IngestLog) Usage(ctx context.Context) (msgs, bytes uint64, err error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("ingest stream info: %w", err)
	}
	return info.State.Msgs, info.State.Bytes, nil
}

// FirstAtOrAfter returns the sequence of the oldest stored record received
// at or after t (Last+1 when there is none).
func (l *IngestLog) FirstAtOrAfter(ctx context.Context, t time.Time) (uint64, error) {
	return firstAtOrAfter(ctx, l.stream, t)
}

// firstAtOrAfter finds the first message of st stored at or after t.
func firstAtOrAfter(ctx context.Context, st jetstream.Stream, t time.Time) (uint64, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	if info.State.Msgs == 0 {
		return info.State.LastSeq + 1, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &t,
	})
	if err != nil {
		return 0, fmt.Errorf("find by time: %w", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		return 0, fmt.Errorf("find by time: %w", err)
	}
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			return 0, fmt.Errorf("find by time: %w", err)
		}
		return md.Sequence.Stream, nil
	}
	return info.State.LastSeq + 1, nil
}
