package eventlog_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

func wireEvent(t testing.TB, seq uint64) *rbv1.Event {
	res, err := structpb.NewStruct(map[string]any{
		"resourceType": "ImagingStudy", "id": "1.2.840.1", "numberOfInstances": 3,
		"identifier": []any{map[string]any{"system": "urn:dicom:uid", "value": "urn:oid:1.2.840.1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &rbv1.Event{Sequence: seq, Id: "ev-1", PatientId: "P1", Type: rbv1.EventType_IMAGING_STUDY_AVAILABLE,
		ResourceType: "ImagingStudy", ResourceId: "1.2.840.1", Resource: res, AccessionNumber: "ACC1", Message: "study available"}
}

// TestStoredEncodingRoundTrip: the stored encoding is the event without
// its sequence (as proto.Marshal of a copy with sequence zero gives),
// leaves the event alone, and WithSequence and DecodeRouting bring back
// the full event and its routing fields.
func TestStoredEncodingRoundTrip(t *testing.T) {
	for _, seq := range []uint64{0, 1, 300, 1 << 40} {
		ev := wireEvent(t, seq)
		orig := proto.Clone(ev)
		data, err := eventlog.EncodeStored(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(ev, orig) {
			t.Fatalf("EncodeStored changed the event: %v", ev)
		}
		var stored rbv1.Event
		if err := proto.Unmarshal(data, &stored); err != nil {
			t.Fatal(err)
		}
		want := proto.Clone(orig).(*rbv1.Event)
		want.Sequence = 0
		if !proto.Equal(&stored, want) {
			t.Fatalf("stored %v, want the event with sequence 0", &stored)
		}

		var full rbv1.Event
		if err := proto.Unmarshal(eventlog.WithSequence(data, 77), &full); err != nil {
			t.Fatal(err)
		}
		want.Sequence = 77
		if !proto.Equal(&full, want) {
			t.Fatalf("WithSequence decodes to %v, want %v", &full, want)
		}

		routing, had, err := eventlog.DecodeRouting(data, 77)
		if err != nil || !had {
			t.Fatalf("DecodeRouting: resource %v, %v", had, err)
		}
		want.Resource = nil
		if !proto.Equal(routing, want) {
			t.Fatalf("DecodeRouting = %v, want every field but the resource: %v", routing, want)
		}
	}
	noRes := &rbv1.Event{Sequence: 5, PatientId: "P2", Type: rbv1.EventType_ORDER_PLACED}
	data, _ := eventlog.EncodeStored(noRes)
	if ev, had, err := eventlog.DecodeRouting(data, 5); err != nil || had || !proto.Equal(ev, noRes) {
		t.Fatalf("an event without a resource: %v %v %v", ev, had, err)
	}
}

// FuzzDecodeRouting: any bytes give an event or an error, never a panic,
// and what decodes has no resource.
func FuzzDecodeRouting(f *testing.F) {
	data, _ := eventlog.EncodeStored(wireEvent(f, 9))
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add([]byte{0x72, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, _, err := eventlog.DecodeRouting(b, 1)
		if err == nil && (ev.GetResource() != nil || ev.GetSequence() != 1) {
			t.Fatalf("decoded %v", ev)
		}
		_ = eventlog.WithSequence(b, 1)
	})
}

// reportEvent is an IMAGING_REPORT_READY about the size the mapper makes
// for hl7load's ORU^R01 (a DiagnosticReport with its text, ~1.5 KB).
func reportEvent(tb testing.TB) *rbv1.Event {
	res, err := structpb.NewStruct(map[string]any{
		"resourceType": "DiagnosticReport", "id": "dr-LOAD0001-ACC1", "status": "final",
		"category":          []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}}}},
		"code":              map[string]any{"coding": []any{map[string]any{"system": "urn:oid:1.2.3.4.5.6", "code": "CTCHEST", "display": "CT CHEST"}}, "text": "CT CHEST"},
		"subject":           map[string]any{"reference": "Patient/LOAD0001", "identifier": map[string]any{"system": "urn:radbridge:TEST", "value": "LOAD0001"}},
		"identifier":        []any{map[string]any{"type": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}}}, "value": "ACC1"}, map[string]any{"type": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}}}, "value": "PLC1"}},
		"basedOn":           []any{map[string]any{"reference": "ServiceRequest/sr-LOAD0001-ACC1"}},
		"effectiveDateTime": "2025-01-01T11:00:00Z", "issued": "2025-01-01T12:00:00Z",
		"conclusion":    "IMPRESSION: nothing, this is a load test.",
		"presentedForm": []any{map[string]any{"contentType": "text/plain", "data": "U3ludGhldGljIGxvYWQtdGVzdCByZXBvcnQgbGluZSBvbmUuCklNUFJFU1NJT046IG5vdGhpbmcsIHRoaXMgaXMgYSBsb2FkIHRlc3Qu"}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &rbv1.Event{Sequence: 1234, Id: "ev-1234", PatientId: "LOAD0001", Type: rbv1.EventType_IMAGING_REPORT_READY, AccessionNumber: "ACC1",
		ResourceType: "DiagnosticReport", ResourceId: "dr-LOAD0001-ACC1", Resource: res, Message: "Final radiology report: CT CHEST"}
}

// BenchmarkEncodeStored: what the event log's Append does to store an
// event, against the copy it made before (clone, clear the sequence,
// marshal).
func BenchmarkEncodeStored(b *testing.B) {
	ev := reportEvent(b)
	b.Run("clone-marshal", func(b *testing.B) {
		for b.Loop() {
			c := proto.Clone(ev).(*rbv1.Event)
			c.Sequence = 0
			if _, err := proto.Marshal(c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("EncodeStored", func(b *testing.B) {
		for b.Loop() {
			if _, err := eventlog.EncodeStored(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
