package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/internal/metrics"
	"radbridge/store"
)

// benchIngestAppend appends HL7-sized observations to the embedded ingest
// log with fsync, plain or through the metrics instrumentation the daemon
// uses (counter by front/kind/result, append-latency histogram).
func benchIngestAppend(b *testing.B, instrumented bool) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{DataDir: filepath.Join(b.TempDir(), "data"), SyncAlways: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var l ingest.Log = s.Ingest()
	if instrumented {
		l = metrics.NewIngest(metrics.NewRegistry()).Log("mllp", l)
	}
	body, _ := json.Marshal(ingest.HL7Body{Raw: make([]byte, 1000)})
	o := ingest.Observation{Kind: ingest.KindHL7, Time: time.Now(), Source: ingest.Source{Protocol: "hl7"}, Body: body}
	lat := make([]time.Duration, 0, max(b.N, 1024))
	i := 0
	for b.Loop() {
		o.Key = fmt.Sprintf("hl7:RIS|H|%d", i)
		t := time.Now()
		if _, _, err := l.Append(ctx, o); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
		i++
	}
	report(b, lat, len(body))
}

// BenchmarkIngestAppendPlain is the baseline of BenchmarkIngestAppendMetrics.
func BenchmarkIngestAppendPlain(b *testing.B) { benchIngestAppend(b, false) }

// BenchmarkIngestAppendMetrics is the same append through the daemon's
// metrics instrumentation.
func BenchmarkIngestAppendMetrics(b *testing.B) { benchIngestAppend(b, true) }
