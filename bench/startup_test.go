package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	"radbridge/store"
)

// envCount is the positive integer in the environment variable name, or def.
func envCount(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// startupObservations is how many observations BenchmarkMapperStartup
// records (RADBRIDGE_BENCH_OBSERVATIONS overrides; default 20000).
func startupObservations() int { return envCount("RADBRIDGE_BENCH_OBSERVATIONS", 20000) }

// fillStartupStore records n observations (per accession: an HL7 order,
// a final report and three DICOM instances of its study, 2000 patients)
// into a fresh embedded store and maps them once, leaving the event log
// and a final snapshot behind.
func fillStartupStore(b *testing.B, dir string, n int) mapper.SnapshotStats {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	at := time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)
	rec := func(i int, kind, key string, body any) {
		raw, _ := json.Marshal(body)
		if _, _, err := st.Ingest().Append(ctx, ingest.Observation{Kind: kind, Key: key, Time: at.Add(time.Duration(i) * time.Second), Body: raw}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; {
		pid, acc, uid := fmt.Sprintf("MRN%05d", i/5%2000), fmt.Sprintf("ACC%06d", i/5), fmt.Sprintf("1.2.826.0.1.3680043.10.1447.%d", i/5)
		msh := "MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMG|20260310083000+0000||"
		orm := strings.Join([]string{msh + "ORM^O01|O" + acc + "|P|2.3", "PID|1||" + pid + "^^^HOSP^MR||TEST^PAT",
			"ORC|NW|P" + acc + "|F" + acc + "||SC", "OBR|1|P" + acc + "|F" + acc + "|71250^CT CHEST^C4||||||||||||||" + acc + "||||||CT"}, "\r")
		oru := strings.Join([]string{msh + "ORU^R01|R" + acc + "|P|2.5.1", "PID|1||" + pid + "^^^HOSP^MR||TEST^PAT",
			"OBR|1|P" + acc + "|F" + acc + "|71250^CT CHEST^C4||||||||||||||" + acc + "||||20260310113000+0000||CT|F",
			"OBX|1|TX|RPT^Report^L|1|No acute findings.||||||F"}, "\r")
		rec(i, ingest.KindHL7, "hl7:O"+acc, ingest.HL7Body{Raw: []byte(orm)})
		rec(i+1, ingest.KindHL7, "hl7:R"+acc, ingest.HL7Body{Raw: []byte(oru)})
		for k := 1; k <= 3; k++ {
			in := ingest.Instance{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: fmt.Sprintf("%s.1.%d", uid, k), StudyInstanceUID: uid,
				SeriesInstanceUID: uid + ".1", PatientID: pid, AccessionNumber: acc, Modality: "CT", StudyDescription: "CT CHEST",
				StudyDate: "20260310", StudyTime: "090000", SeriesNumber: 1, InstanceNumber: k}
			rec(i+1+k, ingest.KindDICOMInstance, "dicom:"+in.SOPInstanceUID, in)
		}
		i += 5
	}
	m := mapper.New(startupConfig(st, true))
	runUntilReady(b, m)
	return m.SnapshotStats()
}

func startupConfig(st *store.Store, snapshots bool) mapper.Config {
	cfg := mapper.Config{Ingest: st.Ingest(), Events: st.Events(), ReadModel: st.Patients(),
		Rules: rules.New(rules.Options{QuietPeriod: time.Hour}), DedupHorizon: 30 * 24 * time.Hour, SnapshotEvery: 1 << 30,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		// The observations are from March 2026: on this clock their quiet
		// periods never end, so no start appends timers and the store stays
		// the same for every sample.
		Now: func() time.Time { return time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC) }}
	if snapshots {
		cfg.Snapshots = st.Snapshots()
	}
	return cfg
}

// runUntilReady runs m until it has caught up, then stops it (an orderly
// stop: with snapshots on, it writes one).
func runUntilReady(b *testing.B, m *mapper.Mapper) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	for !m.Ready() {
		select {
		case err := <-done:
			cancel()
			b.Fatalf("mapper stopped: %v", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkMapperStartup measures the mapper's start (until Ready) on a
// store of 20,000 observations: "full-replay" maps the whole ingest log
// (as before snapshots), "snapshot" loads the newest snapshot and replays
// nothing. The live heap after the start (the mapper state) is reported,
// and for the snapshot the size, the time the mapper paused to encode it and
// the time its background write took (when the fill run stopped).
func BenchmarkMapperStartup(b *testing.B) {
	n := startupObservations()
	dir := filepath.Join(b.TempDir(), "data")
	written := fillStartupStore(b, dir, n)
	st, err := store.Open(context.Background(), store.Config{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for _, mode := range []string{"full-replay", "snapshot"} {
		b.Run(fmt.Sprintf("%s/observations=%d", mode, n), func(b *testing.B) {
			var peak uint64 // largest live heap after a start
			for range b.N {
				m := mapper.New(startupConfig(st, mode == "snapshot"))
				runtime.GC()
				runUntilReady(b, m)
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
				if s := m.SnapshotStats(); mode == "snapshot" && s.Loaded == 0 {
					b.Fatal("started without a snapshot")
				} else if mode == "snapshot" {
					b.ReportMetric(float64(s.LastBytes)/(1<<20), "snapshot-MB")
					b.ReportMetric(written.LastEncode.Seconds()*1000, "encode-ms")
					b.ReportMetric(written.LastWrite.Seconds()*1000, "write-ms")
				}
			}
			b.ReportMetric(float64(peak)/(1<<20), "live-heap-MB")
		})
	}
}
