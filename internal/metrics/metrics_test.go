package metrics_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/internal/metrics"
	rbv1 "radbridge/proto/radbridge/v1"
)

// TestIngestCountsByResult: a recorded observation, a resend and a failed
// append are counted apart, and only stored appends are timed.
func TestIngestCountsByResult(t *testing.T) {
	reg := metrics.NewRegistry()
	m := metrics.NewIngest(reg)
	l := m.Log("mllp", ingest.NewMemory())
	o := ingest.Observation{Kind: ingest.KindHL7, Key: "hl7:A|B|1", Time: time.Now()}
	if _, dup, err := l.Append(context.Background(), o); err != nil || dup {
		t.Fatalf("first append: dup %v, %v", dup, err)
	}
	if _, dup, err := l.Append(context.Background(), o); err != nil || !dup {
		t.Fatalf("resend: dup %v, %v", dup, err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := l.Append(cancelled, o); err == nil {
		t.Fatal("append with a cancelled context succeeded")
	}
	ev := m.Events(eventlog.NewMemory())
	if _, err := ev.Append(context.Background(), eventlog.Key{IngestSeq: 1}, &rbv1.Event{Type: rbv1.EventType_ORDER_PLACED}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP radbridge_ingest_observations_total Observations handed to the ingest log, by front (mllp, dimse, stow-rs, notification, api, mapper), kind (hl7.message, dicom.instance, dicom.ian, dicom.mpps, api.viewed, mapper.timer) and result (recorded; duplicate: a resend already recorded; failed: not recorded, the sender was told to resend).
# TYPE radbridge_ingest_observations_total counter
radbridge_ingest_observations_total{front="mllp",kind="hl7.message",result="duplicate"} 1
radbridge_ingest_observations_total{front="mllp",kind="hl7.message",result="failed"} 1
radbridge_ingest_observations_total{front="mllp",kind="hl7.message",result="recorded"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "radbridge_ingest_observations_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "radbridge_store_append_duration_seconds"); n != 2 {
		t.Errorf("%d append histograms, want ingest and events", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestMapperObserver: events are counted by type; only live ones are
// timed.
func TestMapperObserver(t *testing.T) {
	reg := metrics.NewRegistry()
	m := metrics.NewMapper(reg)
	m.EventAppended(&rbv1.Event{Type: rbv1.EventType_ORDER_PLACED}, time.Now().Add(-time.Second), true)
	m.EventAppended(&rbv1.Event{Type: rbv1.EventType_ORDER_PLACED}, time.Now(), false)
	m.EventAppended(&rbv1.Event{Type: rbv1.EventType_IMAGING_STUDY_AVAILABLE}, time.Now(), false)
	m.ObservationApplied("mapped")
	m.ReadModelWriteFailed()
	want := `
# HELP radbridge_events_emitted_total Events this process appended to the event log, by type (IMAGING_STUDY_AVAILABLE, ORDER_PLACED, ...).
# TYPE radbridge_events_emitted_total counter
radbridge_events_emitted_total{type="IMAGING_STUDY_AVAILABLE"} 1
radbridge_events_emitted_total{type="ORDER_PLACED"} 2
# HELP radbridge_read_model_write_failures_total Patient read-model writes that failed (GetPatientImaging lags until the next write).
# TYPE radbridge_read_model_write_failures_total counter
radbridge_read_model_write_failures_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "radbridge_events_emitted_total", "radbridge_read_model_write_failures_total"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "radbridge_ingest_to_event_seconds" {
			if n := mf.Metric[0].GetHistogram().GetSampleCount(); n != 2 {
				t.Errorf("ingest_to_event_seconds observed %d events, want the 2 live ones", n)
			}
		}
	}
}

// nopLog is an ingest log whose Append costs nothing, so that the
// benchmark measures the instrumentation alone.
type nopLog struct{ ingest.Log }

func (nopLog) Append(context.Context, ingest.Observation) (uint64, bool, error) { return 1, false, nil }

// BenchmarkIngestAppend measures what the instrumentation adds to one
// append (counter lookup by three labels, a histogram observation, two
// clock reads): compare instrumented=true with instrumented=false.
func BenchmarkIngestAppend(b *testing.B) {
	for _, instrumented := range []bool{false, true} {
		b.Run(fmt.Sprintf("instrumented=%v", instrumented), func(b *testing.B) {
			var l ingest.Log = nopLog{}
			if instrumented {
				l = metrics.NewIngest(metrics.NewRegistry()).Log("mllp", l)
			}
			ctx := context.Background()
			o := ingest.Observation{Kind: ingest.KindHL7, Time: time.Now()}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := l.Append(ctx, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
