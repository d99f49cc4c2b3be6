package store

import (
	"context"
	"fmt"
	"time"
)

// StreamState is the size and the bounds of one of the store's streams.
type StreamState struct {
	Name          string    `json:"name"`
	Messages      uint64    `json:"messages"`
	Bytes         uint64    `json:"bytes"`
	FirstSequence uint64    `json:"first_sequence"`
	LastSequence  uint64    `json:"last_sequence"`
	LastTime      time.Time `json:"last_time,omitzero"`
	Replicas      int       `json:"replicas"`
}

// Streams reports the ingest and the events stream.
func (s *Store) Streams(ctx context.Context) ([]StreamState, error) {
	var out []StreamState
	for _, st := range []interface {
		Info(ctx context.Context) (StreamState, error)
	}{s.ingest, s.events} {
		info, err := st.Info(ctx)
		if err != nil {
			return out, err
		}
		out = append(out, info)
	}
	return out, nil
}

// Info reports the ingest stream's size and bounds.
func (l *IngestLog) Info(ctx context.Context) (StreamState, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return StreamState{Name: IngestStream}, fmt.Errorf("ingest stream info: %w", err)
	}
	st := info.State
	return StreamState{Name: IngestStream, Messages: st.Msgs, Bytes: st.Bytes, FirstSequence: st.FirstSeq, LastSequence: st.LastSeq,
		LastTime: st.LastTime, Replicas: info.Config.Replicas}, nil
}

// Info reports the events stream's size and bounds.
func (l *EventLog) Info(ctx context.Context) (StreamState, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return StreamState{Name: EventsStream}, fmt.Errorf("events stream info: %w", err)
	}
	st := info.State
	return StreamState{Name: EventsStream, Messages: st.Msgs, Bytes: st.Bytes, FirstSequence: st.FirstSeq, LastSequence: st.LastSeq,
		LastTime: st.LastTime, Replicas: info.Config.Replicas}, nil
}
