package tracing_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"radbridge/ingest"
	"radbridge/internal/tracing"
	"radbridge/mapper"
	rbv1 "radbridge/proto/radbridge/v1"
)

type nop struct{}

func (nop) EventAppended(*rbv1.Event, time.Time, bool) {}
func (nop) ObservationApplied(string)                  {}
func (nop) ReadModelWriteFailed()                      {}

func attr(kvs []attribute.KeyValue, key string) string {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestIngestAndMapperShareATrace: the append's span stores its
// traceparent in the observation; the mapper's span for that record is
// its child, with one span event per event; a replayed record is not
// traced again; ratio 0 records nothing and stores no traceparent.
func TestIngestAndMapperShareATrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := tracing.NewWithProcessor(rec, tracing.Config{SampleRatio: 1, Version: "test"})
	mem := ingest.NewMemory()
	l := tr.Ingest("mllp", mem)
	ctx := context.Background()
	if _, _, err := l.Append(ctx, ingest.Observation{Kind: ingest.KindHL7, Key: "hl7:A|B|1", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var stored ingest.Record
	wctx, cancel := context.WithCancel(ctx)
	mem.Watch(wctx, 1, func(r ingest.Record) error { stored = r; cancel(); return nil })
	if len(stored.Trace) != 55 {
		t.Fatalf("stored traceparent %q", stored.Trace)
	}
	obs := tr.Mapper(nop{}).(mapper.RecordObserver)
	evs := []*rbv1.Event{{Type: rbv1.EventType_ORDER_PLACED, Sequence: 7, PatientId: "MRN-SECRET"}}
	obs.RecordApplied(stored, evs, time.Now(), false)
	obs.RecordApplied(stored, evs, time.Now(), true) // replay: no span
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want ingest and map", len(spans))
	}
	in, mp := spans[0], spans[1]
	if in.Name() != "radbridge.ingest hl7.message" || mp.Name() != "radbridge.map hl7.message" {
		t.Errorf("span names %q, %q", in.Name(), mp.Name())
	}
	if mp.SpanContext().TraceID() != in.SpanContext().TraceID() || mp.Parent().SpanID() != in.SpanContext().SpanID() {
		t.Errorf("map span is not the ingest span's child")
	}
	if attr(in.Attributes(), "radbridge.front") != "mllp" || attr(in.Attributes(), "radbridge.ingest_sequence") != "1" {
		t.Errorf("ingest span attributes %v", in.Attributes())
	}
	if e := mp.Events(); len(e) != 1 || attr(e[0].Attributes, "radbridge.event_type") != "ORDER_PLACED" || attr(e[0].Attributes, "radbridge.event_sequence") != "7" {
		t.Errorf("map span events %v", e)
	}
	for _, s := range spans {
		for _, kv := range s.Attributes() {
			if kv.Value.Emit() == "MRN-SECRET" {
				t.Errorf("span %s carries patient data", s.Name())
			}
		}
	}

	off := tracetest.NewSpanRecorder()
	none := tracing.NewWithProcessor(off, tracing.Config{SampleRatio: 0})
	mem2 := ingest.NewMemory()
	none.Ingest("mllp", mem2).Append(ctx, ingest.Observation{Kind: ingest.KindHL7, Key: "k"})
	wctx, cancel = context.WithCancel(ctx)
	mem2.Watch(wctx, 1, func(r ingest.Record) error { stored = r; cancel(); return nil })
	if stored.Trace != "" || len(off.Ended()) != 0 {
		t.Errorf("ratio 0: traceparent %q, %d spans", stored.Trace, len(off.Ended()))
	}
}
