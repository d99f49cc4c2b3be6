package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

const (
	hdrIngestSeq = "Rb-Ingest-Seq"
	hdrIngestIdx = "Rb-Ingest-Idx"
)

// EventLog is the JetStream backend of eventlog.Log. Events are stored as
// binary protobuf with Sequence zero; the stream sequence is the event's
// sequence.
type EventLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream

	mu      sync.Mutex
	lastSeq uint64 // last sequence this writer knows of; 0 = unknown

	// sync, with group commit, fsyncs each appended event before Append
	// returns, as SyncAlways did (nil otherwise).
	sync *blockSyncer
}

var _ eventlog.Log = (*EventLog)(nil)

// Append implements eventlog.Log. It publishes with the expected last
// sequence, so a second writer is detected (eventlog.ErrConflict) instead of
// interleaving.
func (l *EventLog) Append(ctx context.Context, k eventlog.Key, ev *rbv1.Event) (uint64, error) {
	data, err := eventlog.EncodeStored(ev)
	if err != nil {
		return 0, fmt.Errorf("encode event: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastSeq == 0 {
		_, last, err := l.Bounds(ctx)
		if err != nil {
			return 0, err
		}
		l.lastSeq = last
	}
	msg := &nats.Msg{Subject: eventlog.Subject(ev), Data: data, Header: nats.Header{}}
	msg.Header.Set(hdrIngestSeq, strconv.FormatUint(k.IngestSeq, 10))
	msg.Header.Set(hdrIngestIdx, strconv.Itoa(k.Index))
	ack, err := l.js.PublishMsg(ctx, msg, jetstream.WithMsgID(k.MsgID()), jetstream.WithExpectLastSequence(l.lastSeq))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			l.lastSeq = 0
			return 0, fmt.Errorf("append event: %w", eventlog.ErrConflict)
		}
		return 0, fmt.Errorf("append event: %w", err)
	}
	if !ack.Duplicate {
		l.lastSeq = ack.Sequence
	}
	if err := l.durable(ack.Sequence); err != nil {
		return 0, fmt.Errorf("append event: %w", err)
	}
	return ack.Sequence, nil
}

// Bounds implements eventlog.Log.
func (l *EventLog) Bounds(ctx context.Context) (uint64, uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("event stream info: %w", err)
	}
	if info.State.Msgs == 0 {
		if info.State.LastSeq > 0 {
			// Retention removed every event: the next one is the first.
			return info.State.LastSeq + 1, info.State.LastSeq, nil
		}
		return 0, 0, nil
	}
	return info.State.FirstSeq, info.State.LastSeq, nil
}

// Oldest returns the time the oldest retained event was stored (zero when
// none is).
func (l *EventLog) Oldest(ctx context.Context) (time.Time, error) {
	first, last, err := l.Bounds(ctx)
	if err != nil || first == 0 || first > last {
		return time.Time{}, err
	}
	m, err := l.stream.GetMsg(ctx, first)
	if err != nil {
		return time.Time{}, fmt.Errorf("read oldest event: %w", err)
	}
	return m.Time, nil
}

// FirstAtOrAfter returns the sequence of the oldest retained event stored
// at or after t (last+1 when there is none).
func (l *EventLog) FirstAtOrAfter(ctx context.Context, t time.Time) (uint64, error) {
	return firstAtOrAfter(ctx, l.stream, t)
}

// Usage returns the retained events' count and bytes.
func (l *EventLog) Usage(ctx context.Context) (msgs, bytes uint64, err error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("event stream info: %w", err)
	}
	return info.State.Msgs, info.State.Bytes, nil
}

// LastKey implements eventlog.Log.
func (l *EventLog) LastKey(ctx context.Context) (eventlog.Key, error) {
	first, last, err := l.Bounds(ctx)
	if err != nil || last == 0 {
		return eventlog.Key{}, err
	}
	if first > last {
		return eventlog.Key{}, eventlog.ErrLastEventGone
	}
	m, err := l.stream.GetMsg(ctx, last)
	if err != nil {
		return eventlog.Key{}, fmt.Errorf("read last event: %w", err)
	}
	seq, err1 := strconv.ParseUint(m.Header.Get(hdrIngestSeq), 10, 64)
	idx, err2 := strconv.Atoi(m.Header.Get(hdrIngestIdx))
	if err1 != nil || err2 != nil {
		return eventlog.Key{}, fmt.Errorf("event %d has no ingest key headers", last)
	}
	return eventlog.Key{IngestSeq: seq, Index: idx}, nil
}

func decodeEvent(data []byte, seq uint64) (*rbv1.Event, error) {
	ev := new(rbv1.Event)
	if err := proto.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("decode event %d: %w", seq, err)
	}
	ev.Sequence = seq
	return ev, nil
}

// Read implements eventlog.Log.
func (l *EventLog) Read(ctx context.Context, from uint64, f eventlog.Filter, max int) ([]*rbv1.Event, error) {
	if from == 0 {
		from = 1
	}
	_, last, err := l.Bounds(ctx)
	if err != nil {
		return nil, err
	}
	if from > last || max <= 0 {
		return nil, nil
	}
	// Each read has its own server-side consumer: deleted when the read
	// ends, and expiring soon if that delete is lost, so that clients
	// polling GET /v1/events do not pile up consumers (each holds
	// goroutines and memory in the server for the default 5 minutes).
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    f.Subjects(),
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = l.stream.DeleteConsumer(dctx, ci.Name)
		}
	}()
	var out []*rbv1.Event
	for len(out) < max {
		batch, err := cons.Fetch(min(max-len(out), 256), jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		n := 0
		done := false
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("read events: %w", err)
			}
			ev, err := decodeEvent(m.Data(), md.Sequence.Stream)
			if err != nil {
				return nil, err
			}
			if f.Match(ev) {
				out = append(out, ev)
			}
			if md.NumPending == 0 || md.Sequence.Stream >= last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read events: %w", err)
		}
		if n == 0 || done {
			break
		}
	}
	if k := len(out); k > 0 {
		// Nothing is served before it is durable (group commit).
		if err := l.durable(out[k-1].Sequence); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
	}
	return out, nil
}

// durable returns once event seq, which is written, is durable (with group
// commit; at once otherwise). The mapper's append fsyncs it right after
// writing it: a reader that sees it first waits for that fsync or does it.
func (l *EventLog) durable(seq uint64) error {
	if l.sync == nil {
		return nil
	}
	return l.sync.syncThrough(seq)
}

// Watch implements eventlog.Log.
func (l *EventLog) Watch(ctx context.Context, from uint64, fn func(*rbv1.Event) error) error {
	if from == 0 {
		from = 1
	}
	return watch(ctx, l.stream, from, []string{eventlog.SubjectPrefix + ".>"}, func(m jetstream.Msg, seq uint64) error {
		// Subscribers get an event only once it is durable.
		if err := l.durable(seq); err != nil {
			return err
		}
		ev, err := decodeEvent(m.Data(), seq)
		if err != nil {
			return err
		}
		return fn(ev)
	})
}

// WatchWire implements eventlog.WireWatcher: Watch without decoding.
func (l *EventLog) WatchWire(ctx context.Context, from uint64, fn func(seq uint64, data []byte) error) error {
	if from == 0 {
		from = 1
	}
	return watch(ctx, l.stream, from, []string{eventlog.SubjectPrefix + ".>"}, func(m jetstream.Msg, seq uint64) error {
		// Subscribers get an event only once it is durable.
		if err := l.durable(seq); err != nil {
			return err
		}
		return fn(seq, m.Data())
	})
}

var _ eventlog.WireWatcher = (*EventLog)(nil)

// watch runs an ordered consumer from seq and calls fn for every message.
func watch(ctx context.Context, st jetstream.Stream, from uint64, subjects []string, fn func(m jetstream.Msg, seq uint64) error) error {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("watch: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		if err := fn(msgWithPending{m, md.NumPending}, md.Sequence.Stream); err != nil {
			return err
		}
	}
}

// msgWithPending carries the consumer's pending count to fn.
type msgWithPending struct {
	jetstream.Msg
	pending uint64
}

// Get returns the event at seq, or (nil, nil) when there is none (never
// appended, or removed by retention): one direct read, without the
// consumer Read creates (the FHIR front reads resources by version).
func (l *EventLog) Get(ctx context.Context, seq uint64) (*rbv1.Event, error) {
	m, err := l.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get event %d: %w", seq, err)
	}
	return decodeEvent(m.Data, seq)
}
