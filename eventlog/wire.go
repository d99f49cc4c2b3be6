package eventlog

import (
	"context"
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	rbv1 "radbridge/proto/radbridge/v1"
)

// An event as a log stores it is its binary protobuf encoding without the
// sequence: the log's own sequence is the event's. The helpers below work
// on that encoding's top-level fields, so that neither a writer nor a
// reader that only routes events has to copy or decode the FHIR resource,
// by far the largest part of an event.

var (
	sequenceField = (&rbv1.Event{}).ProtoReflect().Descriptor().Fields().ByName("sequence").Number()
	resourceField = (&rbv1.Event{}).ProtoReflect().Descriptor().Fields().ByName("resource").Number()
)

// WireWatcher is a Log that can hand a watcher each event as stored, with
// its sequence, instead of decoded.
type WireWatcher interface {
	// WatchWire is Watch with each event's stored encoding: data belongs
	// to fn (the log does not reuse it).
	WatchWire(ctx context.Context, from uint64, fn func(seq uint64, data []byte) error) error
}

// EncodeStored returns the stored encoding of ev: ev's binary protobuf
// without its sequence. ev is not modified.
func EncodeStored(ev *rbv1.Event) ([]byte, error) {
	data, err := proto.Marshal(ev)
	if err != nil || ev.GetSequence() == 0 {
		return data, err // a zero sequence is not encoded
	}
	return dropField(data, sequenceField)
}

// WithSequence returns the full binary protobuf encoding of the stored
// event data as event seq: data followed by the sequence field (the last
// occurrence of a field wins, and data has none). data is not modified.
func WithSequence(data []byte, seq uint64) []byte {
	out := make([]byte, len(data), len(data)+1+protowire.SizeVarint(seq))
	copy(out, data)
	out = protowire.AppendTag(out, sequenceField, protowire.VarintType)
	return protowire.AppendVarint(out, seq)
}

// DecodeRouting decodes the stored event data as event seq without its
// resource (every other field is decoded) and says whether it had one.
func DecodeRouting(data []byte, seq uint64) (ev *rbv1.Event, hadResource bool, err error) {
	routing, err := dropField(data, resourceField)
	if err != nil {
		return nil, false, err
	}
	ev = new(rbv1.Event)
	if err := proto.Unmarshal(routing, ev); err != nil {
		return nil, false, err
	}
	ev.Sequence = seq
	return ev, len(routing) < len(data), nil
}

var errMalformed = errors.New("malformed event encoding")

// dropField returns data without the top-level occurrences of field num;
// data itself when it has none.
func dropField(data []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	rest, kept := data, 0 // data[:kept] is copied or still to copy
	for off := 0; len(rest) > 0; {
		n, typ, tl := protowire.ConsumeTag(rest)
		if tl < 0 {
			return nil, errMalformed
		}
		vl := protowire.ConsumeFieldValue(n, typ, rest[tl:])
		if vl < 0 {
			return nil, errMalformed
		}
		if n == num {
			if out == nil {
				out = make([]byte, 0, len(data))
			}
			out = append(out, data[kept:off]...)
			kept = off + tl + vl
		}
		off += tl + vl
		rest = rest[tl+vl:]
	}
	if out == nil {
		return data, nil
	}
	return append(out, data[kept:]...), nil
}
