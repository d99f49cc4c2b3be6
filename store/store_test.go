package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/eventlog"
	"radbridge/eventlog/eventlogtest"
	"radbridge/ingest"
	"radbridge/ingest/ingesttest"
	"radbridge/mapper"
	"radbridge/readmodel"
	"radbridge/store"
)

func open(t *testing.T, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Config{DataDir: dir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestEventLogConformance(t *testing.T) {
	eventlogtest.Run(t, func(t *testing.T) eventlog.Log {
		return open(t, filepath.Join(t.TempDir(), "data")).Events()
	})
}

func TestIngestLogConformance(t *testing.T) {
	ingesttest.Run(t, func(t *testing.T) ingest.Log {
		return open(t, filepath.Join(t.TempDir(), "data")).Ingest()
	})
}

func TestIngestDeduplicatesByKey(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "data"))
	ctx := context.Background()
	o := ingest.Observation{Kind: "hl7.message", Key: "hl7:RIS|HOSP|123", Time: time.Now(), Body: []byte(`{"a":1}`)}
	s1, dup1, err := s.Ingest().Append(ctx, o)
	if err != nil || dup1 {
		t.Fatalf("first append: %d %v %v", s1, dup1, err)
	}
	s2, dup2, err := s.Ingest().Append(ctx, o)
	if err != nil || !dup2 || s2 != s1 {
		t.Fatalf("resend: seq %d dup %v err %v; want seq %d dup true", s2, dup2, err, s1)
	}
	if last, _ := s.Ingest().Last(ctx); last != 1 {
		t.Errorf("ingest log holds %d records, want 1", last)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{DataDir: dir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Ingest().Append(ctx, ingest.Observation{Kind: "api.viewed", Key: "k1"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	if last, err := s.Ingest().Last(ctx); err != nil || last != 1 {
		t.Fatalf("after reopen the ingest log holds %d records (%v), want 1", last, err)
	}
}

func TestDataDirProblemsAreClearErrors(t *testing.T) {
	base := t.TempDir()
	foreign := filepath.Join(base, "foreign")
	os.Mkdir(foreign, 0o755)
	os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("x"), 0o644)
	corrupt := filepath.Join(base, "corrupt")
	os.Mkdir(corrupt, 0o755)
	os.WriteFile(filepath.Join(corrupt, "radbridge.json"), []byte("{not json"), 0o644)
	emptied := filepath.Join(base, "emptied")
	os.Mkdir(emptied, 0o755)
	os.WriteFile(filepath.Join(emptied, "radbridge.json"), []byte(`{"format":1}`), 0o644)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(base, "no", "such", "parent"), "create"},
		{foreign, "not a radbridge data directory"},
		{corrupt, "corrupt"},
		{emptied, "jetstream directory missing"},
		{file, "not a directory"},
	} {
		_, err := store.Open(context.Background(), store.Config{DataDir: tc.dir})
		if err == nil {
			t.Errorf("Open(%s) succeeded, want an error", tc.dir)
			continue
		}
		if !strings.Contains(err.Error(), tc.dir) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s) error %q: want the path and %q", tc.dir, err, tc.want)
		}
	}
}

// TestInterruptedFirstStartIsFinished: a first start killed (kill -9, power
// loss) before it created the store acknowledged nothing; whatever it left
// behind, the next start finishes creating the store instead of refusing
// the directory. (cmd/radbridge TestKillDashNineDuringFirstStart kills the
// real binary there.)
func TestInterruptedFirstStartIsFinished(t *testing.T) {
	creating := []byte(`{"format":1,"created":"2026-11-26T00:00:00Z","creating":true}`)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"killed while writing the first marker", func(t *testing.T, dir string) {
			os.Mkdir(dir, 0o750)
			os.WriteFile(filepath.Join(dir, "radbridge.json.tmp"), []byte(`{"form`), 0o640)
		}},
		{"killed before JetStream created its directory", func(t *testing.T, dir string) {
			os.Mkdir(dir, 0o750)
			os.WriteFile(filepath.Join(dir, "radbridge.json"), creating, 0o640)
		}},
		{"killed after the streams, before the final marker", func(t *testing.T, dir string) {
			s, err := store.Open(context.Background(), store.Config{DataDir: dir, SyncAlways: true})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			os.WriteFile(filepath.Join(dir, "radbridge.json"), creating, 0o640)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			tc.setup(t, dir)
			s, err := store.Open(context.Background(), store.Config{DataDir: dir, SyncAlways: true})
			if err != nil {
				t.Fatalf("start after an interrupted first start: %v", err)
			}
			if _, _, err := s.Ingest().Append(context.Background(), ingest.Observation{Kind: "api.viewed", Key: "k1"}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if b, _ := os.ReadFile(filepath.Join(dir, "radbridge.json")); strings.Contains(string(b), "creating") {
				t.Errorf("marker after the store was created: %s", b)
			}
			if _, err := os.Stat(filepath.Join(dir, "radbridge.json.tmp")); err == nil {
				t.Error("radbridge.json.tmp left behind")
			}
			// From now on it is an ordinary store: its data is kept, and
			// losing its jetstream directory is refused again.
			if last, err := open(t, dir).Ingest().Last(context.Background()); err != nil || last != 1 {
				t.Errorf("reopened store holds %d records (%v), want 1", last, err)
			}
		})
	}
}

// TestLargeReadModelIsWritten: a patient with a few hundred studies has a
// read model of several megabytes; it is written and read back (NATS'
// default 1 MB payload limit used to refuse it, and GetPatientImaging then
// served a stale picture).
func TestLargeReadModelIsWritten(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "data"))
	ctx := context.Background()
	p := &readmodel.Patient{ID: "MRN-MANY", Studies: map[string]json.RawMessage{}}
	study := json.RawMessage(`{"resourceType":"ImagingStudy","series":[{"instance":[` + strings.Repeat(`{"uid":"1.2.826.0.1.3680043.10.1447.90.1.1.1","number":1},`, 100) + `{"uid":"1"}]}]}`)
	for i := range 400 {
		p.Studies[fmt.Sprintf("1.2.3.%d", i)] = study
	}
	b, _ := json.Marshal(p)
	if len(b) < 2<<20 {
		t.Fatalf("read model is %d bytes; the test wants more than 2 MB", len(b))
	}
	if err := s.Patients().PutPatient(ctx, p); err != nil {
		t.Fatalf("write a %d-byte read model: %v", len(b), err)
	}
	got, err := s.Patients().Patient(ctx, "MRN-MANY")
	if err != nil || got == nil || len(got.Studies) != 400 {
		t.Fatalf("read back: %v studies, %v", len(got.Studies), err)
	}
}

// TestSeenKeysAreUnions: the observation key store returns nothing for an
// unknown key, keeps a key's sightings across reopening, and merges a later
// batch with them instead of replacing them (a mapper replaying from an
// older snapshot writes sightings again, in any order).
func TestSeenKeysAreUnions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{DataDir: dir, SeenMaxAge: store.SeenMaxAge(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("hl7:RIS|HOSP|ü ", 40) // any bytes, any length
	if ks, err := s.Seen().GetSeen(ctx, long); err != nil || ks != nil {
		t.Fatalf("unknown key: %v %v", ks, err)
	}
	if err := s.Seen().AddSeen(ctx, map[string][]mapper.SeenKey{long: {{Seq: 9, At: 90}}, "k2": {{Seq: 3, At: 30}}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	if err := s.Seen().AddSeen(ctx, map[string][]mapper.SeenKey{long: {{Seq: 4, At: 40}, {Seq: 9, At: 90}}}); err != nil {
		t.Fatal(err)
	}
	ks, err := s.Seen().GetSeen(ctx, long)
	if err != nil || len(ks) != 2 || ks[0] != (mapper.SeenKey{Seq: 4, At: 40}) || ks[1] != (mapper.SeenKey{Seq: 9, At: 90}) {
		t.Errorf("sightings after two batches: %v %v; want [4 9]", ks, err)
	}
	if ks, _ := s.Seen().GetSeen(ctx, "k2"); len(ks) != 1 || ks[0].Seq != 3 {
		t.Errorf("k2: %v", ks)
	}
}

// TestArchiveEvictsAndReloadsOnJetStream: the mapper evicts a cold patient
// into the RADBRIDGE_ARCHIVE bucket (keys JetStream accepts, whatever the
// ids) and reloads it when it is named again: its read model counts both
// views, across a restart of the store.
func TestArchiveEvictsAndReloadsOnJetStream(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	view := func(s *store.Store, key, pid string, at time.Time) uint64 {
		body, _ := json.Marshal(ingest.Viewed{PatientID: pid, StudyInstanceUID: "1.2.3"})
		seq, _, err := s.Ingest().Append(ctx, ingest.Observation{Kind: ingest.KindViewed, Key: key, Time: at, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	run := func(s *store.Store, seq uint64) mapper.Stats {
		m := mapper.New(mapper.Config{Ingest: s.Ingest(), Events: s.Events(), ReadModel: s.Patients(), Snapshots: s.Snapshots(),
			Seen: s.Seen(), Archive: s.Archive(), StateIdle: 24 * time.Hour, DedupHorizon: time.Hour})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- m.Run(rctx) }()
		actx, acancel := context.WithTimeout(ctx, 30*time.Second)
		defer acancel()
		if _, err := m.Await(actx, seq); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return m.Stats()
	}
	odd := "MRN 7/ü:*>" // not a valid key as it is
	s, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	view(s, "api:1", odd, t0)
	last := view(s, "api:2", "P2", t0.Add(3*24*time.Hour)) // the first patient is cold
	if st := run(s, last); st.Evicted != 1 || st.Patients != 1 {
		t.Fatalf("after 3 idle days: %d evicted, %d in memory; want 1 and 1", st.Evicted, st.Patients)
	}
	s.Close()
	s = open(t, dir)
	last = view(s, "api:3", odd, t0.Add(3*24*time.Hour+time.Minute))
	if st := run(s, last); st.Reloaded != 1 {
		t.Errorf("the view of the evicted patient reloaded %d patients, want 1", st.Reloaded)
	}
	p, err := s.Patients().Patient(ctx, odd)
	if err != nil || p == nil || p.Views["1.2.3"] != 2 {
		t.Fatalf("read model after the reload: %+v %v; want 2 views", p, err)
	}
}

// TestSeenShardDropsOldKeys: writing a shard drops its keys whose newest
// sighting is older (by log time) than SeenMaxAge before the newest
// sighting written; the keys live in 65,536 shards, not one entry each.
func TestSeenShardDropsOldKeys(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{DataDir: filepath.Join(t.TempDir(), "data"), SeenMaxAge: store.SeenMaxAge(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Two keys of one shard (the first 16 bits of their SHA-256).
	shard := func(k string) [2]byte { h := sha256.Sum256([]byte(k)); return [2]byte{h[0], h[1]} }
	old, late := "hl7:old", ""
	for i := 0; late == ""; i++ {
		if k := fmt.Sprint("hl7:", i); shard(k) == shard(old) {
			late = k
		}
	}
	h := time.Hour.Milliseconds()
	if err := s.Seen().AddSeen(ctx, map[string][]mapper.SeenKey{old: {{Seq: 1, At: 0}}, "hl7:other": {{Seq: 2, At: 0}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Seen().AddSeen(ctx, map[string][]mapper.SeenKey{late: {{Seq: 3, At: 2*h - 1}}}); err != nil {
		t.Fatal(err)
	}
	if ks, _ := s.Seen().GetSeen(ctx, old); len(ks) != 1 {
		t.Errorf("a key 2h-1ms older than the newest written was dropped (max age 2h): %v", ks)
	}
	if err := s.Seen().AddSeen(ctx, map[string][]mapper.SeenKey{late: {{Seq: 4, At: 2*h + 1}}}); err != nil {
		t.Fatal(err)
	}
	if ks, _ := s.Seen().GetSeen(ctx, old); ks != nil {
		t.Errorf("a key older than the max age survived the rewrite of its shard: %v", ks)
	}
	if ks, _ := s.Seen().GetSeen(ctx, late); len(ks) != 2 || ks[0].Seq != 3 || ks[1].Seq != 4 {
		t.Errorf("sightings of the late key: %v, want [3 4]", ks)
	}
	if ks, _ := s.Seen().GetSeen(ctx, "hl7:other"); len(ks) != 1 {
		t.Errorf("a key of another shard, not rewritten, is kept: %v", ks)
	}
	st, err := s.Seen().Status(ctx)
	if err != nil || st.Values() != 2 {
		t.Errorf("the bucket holds %d entries, want 2 shards (%v)", st.Values(), err)
	}
}
