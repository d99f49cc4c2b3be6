// Package tracing is radbridge's optional OpenTelemetry tracing: with
// --otel-endpoint, every observation recorded in the ingest log gets a span
// (radbridge.ingest <kind>), its W3C traceparent is stored with the
// observation, and the mapper's work on it (radbridge.map <kind>, with one
// span event per event appended) continues that trace, also after a
// restart. Spans are exported with OTLP over HTTP (protobuf) to a
// collector. Span names and attributes carry no patient data: the
// observation kind, the front, sequences and event types only.
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"radbridge/ingest"
	"radbridge/mapper"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Config configures tracing.
type Config struct {
	// Endpoint is the collector's OTLP/HTTP URL: a base such as
	// http://collector:4318 (/v1/traces is added) or the full traces URL.
	Endpoint string
	// SampleRatio of new traces kept (0 to 1).
	SampleRatio float64
	// Version is the service.version resource attribute.
	Version string
}

// Tracer records radbridge's spans.
type Tracer struct {
	tp *sdktrace.TracerProvider
	tr trace.Tracer
}

var propagator = propagation.TraceContext{}

// New starts exporting to cfg.Endpoint.
func New(ctx context.Context, cfg Config) (*Tracer, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("OTLP endpoint %q: want an http or https URL", cfg.Endpoint)
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/v1/traces"
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()), otlptracehttp.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	return newTracer(sdktrace.NewBatchSpanProcessor(exp), cfg), nil
}

// NewWithProcessor records spans to p (tests use an in-memory recorder).
func NewWithProcessor(p sdktrace.SpanProcessor, cfg Config) *Tracer { return newTracer(p, cfg) }

func newTracer(p sdktrace.SpanProcessor, cfg Config) *Tracer {
	ratio := cfg.SampleRatio
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(p),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(resource.NewSchemaless(
			attribute.String("service.name", "radbridge"), attribute.String("service.version", cfg.Version))),
	)
	return &Tracer{tp: tp, tr: tp.Tracer("radbridge")}
}

// Shutdown exports what is buffered and stops.
func (t *Tracer) Shutdown(ctx context.Context) error { return t.tp.Shutdown(ctx) }

// Ingest returns l with a span around every append, whose traceparent is
// stored in the observation. front is a bounded name (mllp, dimse, ...).
func (t *Tracer) Ingest(front string, l ingest.Log) ingest.Log {
	return &ingestLog{Log: l, t: t, front: front}
}

type ingestLog struct {
	ingest.Log
	t     *Tracer
	front string
}

func (l *ingestLog) Append(ctx context.Context, o ingest.Observation) (uint64, bool, error) {
	ctx, span := l.t.tr.Start(ctx, "radbridge.ingest "+o.Kind, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("radbridge.front", l.front), attribute.String("radbridge.kind", o.Kind)))
	defer span.End()
	if span.SpanContext().IsSampled() {
		c := propagation.MapCarrier{}
		propagator.Inject(ctx, c)
		o.Trace = c["traceparent"]
	}
	seq, dup, err := l.Log.Append(ctx, o)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "not recorded")
		return seq, dup, err
	}
	span.SetAttributes(attribute.Int64("radbridge.ingest_sequence", int64(seq)), attribute.Bool("radbridge.duplicate", dup))
	return seq, dup, nil
}

// Mapper wraps an observer (the metrics) so that the mapper's work on a
// traced observation becomes a span of its trace.
func (t *Tracer) Mapper(next mapper.Observer) mapper.Observer {
	return &mapperObserver{Observer: next, t: t}
}

type mapperObserver struct {
	mapper.Observer
	t *Tracer
}

var _ mapper.RecordObserver = (*mapperObserver)(nil)

// RecordApplied implements mapper.RecordObserver. The replay at start is
// not traced again.
func (m *mapperObserver) RecordApplied(rec ingest.Record, events []*rbv1.Event, started time.Time, replay bool) {
	if ro, ok := m.Observer.(mapper.RecordObserver); ok {
		ro.RecordApplied(rec, events, started, replay)
	}
	if replay || rec.Trace == "" {
		return
	}
	ctx := propagator.Extract(context.Background(), propagation.MapCarrier{"traceparent": rec.Trace})
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	_, span := m.t.tr.Start(ctx, "radbridge.map "+rec.Kind, trace.WithTimestamp(started), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("radbridge.kind", rec.Kind), attribute.Int64("radbridge.ingest_sequence", int64(rec.Seq)),
			attribute.Int("radbridge.events", len(events))))
	for _, ev := range events {
		span.AddEvent("event appended", trace.WithAttributes(attribute.String("radbridge.event_type", ev.GetType().String()),
			attribute.Int64("radbridge.event_sequence", int64(ev.GetSequence()))))
	}
	span.End()
}
