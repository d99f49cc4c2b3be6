// Package ingest defines observations: what a receiver (HL7, DICOM, the API)
// saw, recorded durably in the ingest log before it is acknowledged. The
// mapper reads the ingest log in order and derives events from it, so every
// observation must carry all the mapper needs.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Kinds of observations.
const (
	// KindViewed is an IMAGING_STUDY_VIEWED published through the API; the
	// body is a Viewed.
	KindViewed = "api.viewed"
	// KindHL7 is an HL7 v2 message received over MLLP; the body is
	// HL7Body.
	KindHL7 = "hl7.message"
	// KindDICOMInstance is a stored DICOM instance's header; the body is an
	// Instance.
	KindDICOMInstance = "dicom.instance"
	// KindDICOMIAN is an Instance Availability Notification; the body is
	// an IAN.
	KindDICOMIAN = "dicom.ian"
	// KindDICOMMPPS is an MPPS N-CREATE or N-SET; the body is an
	// MPPSUpdate.
	KindDICOMMPPS = "dicom.mpps"
	// KindTimer is a wake-up the mapper scheduled for itself (for example
	// the end of a study's quiet period). Timers go through the ingest log
	// so that replaying the log reproduces every decision.
	KindTimer = "mapper.timer"
)

// Observation is one entry of the ingest log.
type Observation struct {
	// Kind selects the mapping rule, e.g. "hl7.message", "dicom.instance".
	Kind string `json:"kind"`
	// Key deduplicates resends: the same key is recorded once (per the
	// log's duplicate window) and the mapper ignores repeats of it.
	Key string `json:"key"`
	// Time the observation was received.
	Time time.Time `json:"time"`
	// Source of the observation.
	Source Source `json:"source"`
	// Zone is the IANA time zone (--timezone) the receiver assumed for
	// the times in the body that carry no offset, so that a replay on a
	// machine in another zone maps them to the same instants. Empty on
	// records written before zones were recorded: the mapper then uses
	// its default zone (--timezone), as it did then.
	Zone string `json:"zone,omitempty"`
	// Body is the kind-specific payload (JSON).
	Body json.RawMessage `json:"body,omitempty"`
	// Trace is the W3C traceparent of the span that recorded it, when
	// tracing is on (--otel-endpoint), so that the mapper's span joins
	// the trace. Not part of what the observation means.
	Trace string `json:"trace,omitempty"`
}

// Source says where an observation came from.
type Source struct {
	Protocol           string `json:"protocol"`
	Remote             string `json:"remote,omitempty"`
	CallingAETitle     string `json:"calling_ae,omitempty"`
	CalledAETitle      string `json:"called_ae,omitempty"`
	SendingApplication string `json:"sending_application,omitempty"`
	SendingFacility    string `json:"sending_facility,omitempty"`
	MessageControlID   string `json:"message_control_id,omitempty"`
	Client             string `json:"client,omitempty"`
}

// LogValue keeps the body (patient data) out of logs.
func (o Observation) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kind", o.Kind), slog.Int("body_bytes", len(o.Body)))
}

// HL7Body is the body of a KindHL7 observation: the message as received,
// so a mapping fix can re-read every field on replay.
type HL7Body struct {
	Raw []byte `json:"raw"`
}

// Record is an observation with its position in the ingest log.
type Record struct {
	Seq uint64
	// Pending is how many records followed this one in the log when it was
	// read (0: it was the newest), so a reader can batch its own writes.
	Pending uint64
	Observation
}

// Log is the ingest log as its writers and its reader see it.
type Log interface {
	// Append durably records o and returns its sequence. dup is true when
	// an observation with the same key was already recorded; seq is then
	// the original's.
	Append(ctx context.Context, o Observation) (seq uint64, dup bool, err error)
	// Watch calls fn for every record with sequence >= from, in order, as
	// they are appended, until ctx ends or fn returns an error.
	Watch(ctx context.Context, from uint64, fn func(Record) error) error
	// Last returns the newest sequence (0 when empty).
	Last(ctx context.Context) (uint64, error)
	// Get returns the record at seq, or ErrNotFound when there is none
	// (never written, or removed by retention).
	Get(ctx context.Context, seq uint64) (Record, error)
}

// FirstLog is a Log that may have removed its oldest records (retention):
// First returns the oldest sequence it still holds. The mapper uses it at
// start to refuse to run when the records it needs were purged. The store's
// ingest log provides it (and the metrics wrapper forwards it); a Log
// without it holds every record from 1.
type FirstLog interface {
	Log
	First(ctx context.Context) (uint64, error)
}

// ErrNotFound: no record at that sequence.
var ErrNotFound = errors.New("ingest record not found")

// Typed decoders of observation bodies. A body that does not decode is a
// record the mapper cannot use, whatever it retries.

// DecodeHL7 returns the message of a KindHL7 observation, as received.
func DecodeHL7(o Observation) ([]byte, error) {
	var b HL7Body
	if err := decode(o, KindHL7, &b); err != nil {
		return nil, err
	}
	return b.Raw, nil
}

// DecodeInstance returns the body of a KindDICOMInstance observation.
func DecodeInstance(o Observation) (*Instance, error) {
	var v Instance
	return &v, decode(o, KindDICOMInstance, &v)
}

// DecodeIAN returns the body of a KindDICOMIAN observation.
func DecodeIAN(o Observation) (*IAN, error) {
	var v IAN
	return &v, decode(o, KindDICOMIAN, &v)
}

// DecodeMPPS returns the body of a KindDICOMMPPS observation.
func DecodeMPPS(o Observation) (*MPPSUpdate, error) {
	var v MPPSUpdate
	return &v, decode(o, KindDICOMMPPS, &v)
}

// DecodeViewed returns the body of a KindViewed observation.
func DecodeViewed(o Observation) (*Viewed, error) {
	var v Viewed
	return &v, decode(o, KindViewed, &v)
}

func decode(o Observation, kind string, v any) error {
	if o.Kind != kind {
		return fmt.Errorf("%s body: observation is %q", kind, o.Kind)
	}
	if err := json.Unmarshal(o.Body, v); err != nil {
		return fmt.Errorf("%s body: %w", kind, err)
	}
	return nil
}
