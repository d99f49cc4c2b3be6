// Package eventlog defines the event log: the single ordered, durable,
// replayable sequence of radbridge events. Its sequence numbers are the
// event sequences clients resume from. Backends (JetStream in package store,
// and an in-memory one here for tests) all pass the conformance suite in
// eventlog/eventlogtest.
package eventlog

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"

	rbv1 "radbridge/proto/radbridge/v1"
)

// Sentinel errors of every backend.
var (
	// ErrConflict means another writer appended to the log since the
	// appender last looked: the single-writer assumption was broken.
	ErrConflict = errors.New("event log: concurrent writer")
	// ErrClosed means the log was closed.
	ErrClosed = errors.New("event log: closed")
	// ErrLastEventGone means retention removed every event, so the newest
	// key is unknown (LastKey).
	ErrLastEventGone = errors.New("event log: every event was removed by retention")
)

// Key identifies the observation an event was derived from: the ingest log
// sequence and the index of the event among those the observation produced.
// Appending the same key twice stores one event, which makes the mapper's
// append idempotent across crashes.
type Key struct {
	IngestSeq uint64
	Index     int
}

// Less reports whether k orders before o.
func (k Key) Less(o Key) bool {
	if k.IngestSeq != o.IngestSeq {
		return k.IngestSeq < o.IngestSeq
	}
	return k.Index < o.Index
}

// MsgID is the deduplication id used by backends.
func (k Key) MsgID() string { return fmt.Sprintf("ev-%d-%d", k.IngestSeq, k.Index) }

// Log is the event log contract.
type Log interface {
	// Append stores ev (its Sequence is ignored) and returns its sequence.
	// Appending a key that is already the newest entry returns that entry's
	// sequence without storing a second copy.
	Append(ctx context.Context, k Key, ev *rbv1.Event) (uint64, error)
	// Read returns at most max events with sequence >= from that match f,
	// in order. It does not wait for new events.
	Read(ctx context.Context, from uint64, f Filter, max int) ([]*rbv1.Event, error)
	// Bounds returns the first and last sequence stored (0, 0 when empty;
	// last+1, last when retention removed every event).
	Bounds(ctx context.Context) (first, last uint64, err error)
	// LastKey returns the key of the newest event (zero Key when empty).
	LastKey(ctx context.Context) (Key, error)
	// Watch calls fn for every event with sequence >= from, in order, as it
	// is appended, until ctx ends or fn returns an error.
	Watch(ctx context.Context, from uint64, fn func(*rbv1.Event) error) error
}

// Filter selects events. Empty fields match everything; within a field any
// value matches; fields combine with AND.
type Filter struct {
	PatientIDs    []string
	Types         []rbv1.EventType
	ResourceTypes []string
	Priorities    []rbv1.Priority
}

// Match reports whether ev passes the filter.
func (f Filter) Match(ev *rbv1.Event) bool {
	if len(f.PatientIDs) > 0 && !slices.Contains(f.PatientIDs, ev.GetPatientId()) {
		return false
	}
	if len(f.Types) > 0 && !slices.Contains(f.Types, ev.GetType()) {
		return false
	}
	if len(f.ResourceTypes) > 0 && !slices.Contains(f.ResourceTypes, ev.GetResourceType()) {
		return false
	}
	if len(f.Priorities) > 0 && !slices.Contains(f.Priorities, ev.GetPriority()) {
		return false
	}
	return true
}

// Empty reports whether the filter matches everything.
func (f Filter) Empty() bool {
	return len(f.PatientIDs) == 0 && len(f.Types) == 0 && len(f.ResourceTypes) == 0 && len(f.Priorities) == 0
}

// SubjectPrefix is the subject namespace of events in backends that route
// by subject.
const SubjectPrefix = "rb.ev"

// Subject is the routing subject of ev: rb.ev.<TYPE>.<patient token>.
func Subject(ev *rbv1.Event) string {
	return SubjectPrefix + "." + ev.GetType().String() + "." + PatientToken(ev.GetPatientId())
}

// PatientToken encodes a patient id as a subject-safe token (base64url);
// "_" stands for no patient.
func PatientToken(id string) string {
	if id == "" {
		return "_"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(id))
}

// Subjects returns subject filters that select a superset of f's events,
// so a backend can skip most others without decoding them.
func (f Filter) Subjects() []string {
	switch {
	case len(f.PatientIDs) > 0 && len(f.Types) > 0 && len(f.PatientIDs)*len(f.Types) <= 64:
		var s []string
		for _, t := range f.Types {
			for _, p := range f.PatientIDs {
				s = append(s, SubjectPrefix+"."+t.String()+"."+PatientToken(p))
			}
		}
		return s
	case len(f.PatientIDs) > 0 && len(f.PatientIDs) <= 64:
		s := make([]string, 0, len(f.PatientIDs))
		for _, p := range f.PatientIDs {
			s = append(s, SubjectPrefix+".*."+PatientToken(p))
		}
		return s
	case len(f.Types) > 0:
		s := make([]string, 0, len(f.Types))
		for _, t := range f.Types {
			s = append(s, SubjectPrefix+"."+t.String()+".*")
		}
		return s
	}
	return []string{SubjectPrefix + ".>"}
}
