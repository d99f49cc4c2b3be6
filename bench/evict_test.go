package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	"radbridge/store"
)

// evictDays is how many days of traffic BenchmarkMapperEviction records
// (RADBRIDGE_BENCH_DAYS overrides; default 120).
func evictDays() int { return envCount("RADBRIDGE_BENCH_DAYS", 120) }

// fillEvictStore records days of traffic: every day 60 new patients, each
// with an HL7 order, three DICOM instances of its study and a final report
// (5 observations), and 6 patients from 30 days before coming back with a
// new order; log time advances 2 minutes an observation within the day.
func fillEvictStore(b *testing.B, st *store.Store, days int) int {
	b.Helper()
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 7, 0, 0, 0, time.UTC)
	n := 0
	rec := func(at time.Time, kind, key string, body any) {
		raw, _ := json.Marshal(body)
		if _, _, err := st.Ingest().Append(ctx, ingest.Observation{Kind: kind, Key: key, Time: at, Body: raw}); err != nil {
			b.Fatal(err)
		}
		n++
	}
	msh := "MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMG|20260310083000+0000||"
	order := func(at time.Time, pid, acc string) {
		orm := strings.Join([]string{msh + "ORM^O01|O" + acc + "|P|2.3", "PID|1||" + pid + "^^^HOSP^MR||TEST^PAT",
			"ORC|NW|P" + acc + "|F" + acc + "||SC", "OBR|1|P" + acc + "|F" + acc + "|71250^CT CHEST^C4||||||||||||||" + acc + "||||||CT"}, "\r")
		rec(at, ingest.KindHL7, "hl7:O"+acc, ingest.HL7Body{Raw: []byte(orm)})
	}
	for d := range days {
		day := t0.Add(time.Duration(d) * 24 * time.Hour)
		i := 0
		next := func() time.Time { i++; return day.Add(time.Duration(i) * 2 * time.Minute) }
		for p := range 60 {
			pid, acc := fmt.Sprintf("MRN%03d%02d", d, p), fmt.Sprintf("ACC%03d%02d", d, p)
			uid := fmt.Sprintf("1.2.826.0.1.3680043.10.1447.%d.%d", d, p)
			order(next(), pid, acc)
			for k := 1; k <= 3; k++ {
				in := ingest.Instance{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: fmt.Sprintf("%s.1.%d", uid, k), StudyInstanceUID: uid,
					SeriesInstanceUID: uid + ".1", PatientID: pid, AccessionNumber: acc, Modality: "CT", StudyDescription: "CT CHEST",
					BodyPartExamined: "CHEST", StudyDate: "20260310", StudyTime: "090000", SeriesNumber: 1, InstanceNumber: k}
				rec(next(), ingest.KindDICOMInstance, "dicom:"+in.SOPInstanceUID, in)
			}
			oru := strings.Join([]string{msh + "ORU^R01|R" + acc + "|P|2.5.1", "PID|1||" + pid + "^^^HOSP^MR||TEST^PAT",
				"OBR|1|P" + acc + "|F" + acc + "|71250^CT CHEST^C4||||||||||||||" + acc + "||||20260310113000+0000||CT|F",
				"OBX|1|TX|RPT^Report^L|1|No acute findings.||||||F"}, "\r")
			rec(next(), ingest.KindHL7, "hl7:R"+acc, ingest.HL7Body{Raw: []byte(oru)})
		}
		if d >= 30 {
			for p := range 6 { // patients from a month ago come back
				order(next(), fmt.Sprintf("MRN%03d%02d", d-30, p*10), fmt.Sprintf("ACC%03d%02dB", d, p))
			}
		}
	}
	return n
}

// BenchmarkMapperEviction maps RADBRIDGE_BENCH_DAYS (120) days of traffic
// (60 new patients a day, 5 observations each, some coming back a month
// later) on the embedded store, with observation keys in the store and a
// snapshot every 5,000 records, once keeping every patient in memory
// (--state-idle 0) and once evicting patients idle 14 days to the archive
// bucket, and reports the live heap 15 s after each run (GC'd; the whole
// process: mapper state and the embedded JetStream), its growth over the
// heap before the mapper started (the store filled), the size of the state
// (the snapshot written at the stop) and the patients in memory.
func BenchmarkMapperEviction(b *testing.B) {
	days := evictDays()
	for _, idle := range []time.Duration{0, 14 * 24 * time.Hour} {
		name := "off"
		if idle > 0 {
			name = "on"
		}
		b.Run(fmt.Sprintf("eviction=%s/days=%d", name, days), func(b *testing.B) {
			var heap uint64
			var stats mapper.Stats
			var snapBytes int
			var base uint64
			for range b.N {
				b.StopTimer()
				st, err := store.Open(context.Background(), store.Config{DataDir: filepath.Join(b.TempDir(), "data"), SeenMaxAge: store.SeenMaxAge(30 * 24 * time.Hour)})
				if err != nil {
					b.Fatal(err)
				}
				n := fillEvictStore(b, st, days)
				cfg := mapper.Config{Ingest: st.Ingest(), Events: st.Events(), ReadModel: st.Patients(),
					Rules: rules.New(rules.Options{QuietPeriod: time.Hour}), DedupHorizon: 30 * 24 * time.Hour,
					Snapshots: st.Snapshots(), SnapshotEvery: 5000, Seen: st.Seen(), Archive: st.Archive(), StateIdle: idle,
					Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
					// Quiet periods never end on this clock: no timer records.
					Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }}
				m := mapper.New(cfg)
				time.Sleep(15 * time.Second) // as below: a measurement's settling time, not a wait
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				base = ms.HeapAlloc // the store, before mapping
				b.StartTimer()
				runUntilReady(b, m)
				b.StopTimer()
				stats = m.Stats()
				snapBytes = m.SnapshotStats().LastBytes // the state written at the stop
				if stats.Applied != uint64(n) {
					b.Fatalf("applied %d of %d", stats.Applied, n)
				}
				// The JetStream file store drops its block caches after a few
				// idle seconds (no state to wait for): measure what stays.
				time.Sleep(15 * time.Second)
				runtime.GC()
				runtime.ReadMemStats(&ms)
				heap = ms.HeapAlloc
				runtime.KeepAlive(m)
				st.Close()
			}
			b.ReportMetric(float64(heap)/(1<<20), "live-heap-MB")
			b.ReportMetric((float64(heap)-float64(base))/(1<<20), "heap-growth-MB")
			b.ReportMetric(float64(snapBytes)/(1<<20), "state-MB")
			b.ReportMetric(float64(stats.Patients), "patients-in-memory")
			b.ReportMetric(float64(stats.Evicted), "evicted")
			b.ReportMetric(float64(stats.Reloaded), "reloaded")
		})
	}
}
