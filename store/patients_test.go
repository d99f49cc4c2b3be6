package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"testing"

	"radbridge/internal/natstest"
	"radbridge/readmodel"
	"radbridge/store"
)

// runNATS starts a JetStream server on 127.0.0.1 that several stores (the
// processes of a cluster) share.
func runNATS(t testing.TB) string {
	t.Helper()
	return natstest.Server(t, store.MaxPayload).ClientURL()
}

func openURL(t testing.TB, url string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Config{NATSURL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// patientWith is a read model holding studies named by their uids.
func patientWith(last uint64, studies ...string) *readmodel.Patient {
	p := &readmodel.Patient{ID: "MRN-1", LastSequence: last, Studies: map[string]json.RawMessage{}}
	for _, s := range studies {
		p.Studies[s] = json.RawMessage(`{"resourceType":"ImagingStudy","id":"` + s + `"}`)
	}
	return p
}

func studiesOf(t *testing.T, s *store.Store) (uint64, []string) {
	t.Helper()
	p, err := s.Patients().Patient(context.Background(), "MRN-1")
	if err != nil || p == nil {
		t.Fatalf("read model: %v %v", p, err)
	}
	var ids []string
	for id := range p.Studies {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return p.LastSequence, ids
}

// TestStaleLeaderReadModelWriteIsFenced: two processes share one JetStream.
// The old leader wrote a patient's read model and was paused; its successor
// wrote a newer one; the old leader wakes up and writes what it computed
// before. The newer read model stays.
func TestStaleLeaderReadModelWriteIsFenced(t *testing.T) {
	url := runNATS(t)
	old, successor := openURL(t, url), openURL(t, url)
	ctx := context.Background()

	if err := old.Patients().PutPatientAt(ctx, patientWith(5, "A"), 50); err != nil {
		t.Fatal(err)
	}
	if err := successor.Patients().PutPatientAt(ctx, patientWith(7, "A", "B"), 80); err != nil {
		t.Fatal(err)
	}
	// The old leader, awake, with state older by event sequence.
	if err := old.Patients().PutPatientAt(ctx, patientWith(6, "A"), 60); !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("stale write (older LastSequence): %v, want ErrSuperseded", err)
	}
	// Same newest event, but an older ingest position (a study moved away
	// since, instances arrived between progress events): still older.
	if err := old.Patients().PutPatientAt(ctx, patientWith(7, "A"), 70); !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("stale write (equal LastSequence, older ingest position): %v, want ErrSuperseded", err)
	}
	for _, s := range []*store.Store{old, successor} {
		if last, ids := studiesOf(t, s); last != 7 || fmt.Sprint(ids) != "[A B]" {
			t.Errorf("after the stale writes the read model is at %d with %v, want 7 with [A B]", last, ids)
		}
	}

	// Equal LastSequence, newer ingest position: written (by either).
	if err := successor.Patients().PutPatientAt(ctx, patientWith(7, "B"), 90); err != nil {
		t.Fatalf("newer write at equal LastSequence: %v", err)
	}
	if last, ids := studiesOf(t, old); last != 7 || fmt.Sprint(ids) != "[B]" {
		t.Errorf("read model at %d with %v, want 7 with [B]", last, ids)
	}
	// The old process, leader again later and caught up, writes again.
	if err := old.Patients().PutPatientAt(ctx, patientWith(9, "B", "C"), 120); err != nil {
		t.Fatalf("newer write by the former stale leader: %v", err)
	}
	if last, ids := studiesOf(t, successor); last != 9 || fmt.Sprint(ids) != "[B C]" {
		t.Errorf("read model at %d with %v, want 9 with [B C]", last, ids)
	}
	// The same write twice (a flush repeated after a restart) is fine.
	if err := old.Patients().PutPatientAt(ctx, patientWith(9, "B", "C"), 120); err != nil {
		t.Errorf("repeated write: %v", err)
	}

	// radbridge replay rewrites whatever is stored, even at a lower
	// LastSequence (changed mapping options), and the daemon's fenced
	// writes go on from there.
	if err := successor.Patients().Overwrite().PutPatientAt(ctx, patientWith(8, "C"), 120); err != nil {
		t.Fatalf("replay overwrite: %v", err)
	}
	if last, ids := studiesOf(t, old); last != 8 || fmt.Sprint(ids) != "[C]" {
		t.Errorf("after replay the read model is at %d with %v, want 8 with [C]", last, ids)
	}
	// The old process remembers having written 9: it reads again, and its
	// write at 8 after the replay goes through.
	if err := old.Patients().PutPatientAt(ctx, patientWith(8, "C", "D"), 130); err != nil {
		t.Fatalf("write after replay: %v", err)
	}
	if last, ids := studiesOf(t, successor); last != 8 || fmt.Sprint(ids) != "[C D]" {
		t.Errorf("read model at %d with %v, want 8 with [C D]", last, ids)
	}
}

// TestReadModelWrittenBeforeFencing: a read model stored before writes were
// fenced (the plain patient JSON) is read, and fenced by its LastSequence.
func TestReadModelWrittenBeforeFencing(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "data"))
	ctx := context.Background()
	b, _ := json.Marshal(patientWith(7, "A"))
	if _, err := s.State().Put(ctx, "patient.TVJOLTE", b); err != nil { // base64url("MRN-1")
		t.Fatal(err)
	}
	if last, ids := studiesOf(t, s); last != 7 || fmt.Sprint(ids) != "[A]" {
		t.Fatalf("old read model at %d with %v, want 7 with [A]", last, ids)
	}
	if err := s.Patients().PutPatientAt(ctx, patientWith(6), 100); !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("write at an older LastSequence: %v, want ErrSuperseded", err)
	}
	if err := s.Patients().PutPatientAt(ctx, patientWith(7, "A", "B"), 100); err != nil {
		t.Errorf("write at an equal LastSequence: %v", err)
	}
	if last, ids := studiesOf(t, s); last != 7 || fmt.Sprint(ids) != "[A B]" {
		t.Errorf("read model at %d with %v, want 7 with [A B]", last, ids)
	}
}

// BenchmarkReadModelPut: the fenced write against the plain KV Put it
// replaced, for a patient with 20 studies of 100 instances (~120 KB) on
// the embedded store with and without fsync (on by default). "fenced" is the
// steady state (this process wrote the key last); "fenced-takeover" reads
// the stored position first (the first write of a key after a takeover).
func BenchmarkReadModelPut(b *testing.B) { benchFsync(b, benchReadModelPut) }

// benchFsync runs bench, as sub-benchmarks fsync=true and fsync=false, on
// a new embedded store with fsync on (the daemon's default) and off.
func benchFsync(b *testing.B, bench func(b *testing.B, s *store.Store, fsync bool)) {
	for _, fsync := range []bool{true, false} {
		b.Run(fmt.Sprintf("fsync=%v", fsync), func(b *testing.B) {
			s, err := store.Open(context.Background(), store.Config{DataDir: filepath.Join(b.TempDir(), "data"), SyncAlways: fsync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			bench(b, s, fsync)
		})
	}
}

func benchReadModelPut(b *testing.B, s *store.Store, _ bool) {
	ctx := context.Background()
	inst := ""
	for i := range 100 {
		inst += fmt.Sprintf(`{"uid":"1.2.826.0.1.3680043.10.1447.90.1.1.%d","number":%d},`, i, i)
	}
	p := &readmodel.Patient{ID: "MRN-BENCH", Studies: map[string]json.RawMessage{}}
	for i := range 20 {
		p.Studies[fmt.Sprint(i)] = json.RawMessage(`{"resourceType":"ImagingStudy","series":[{"instance":[` + inst + `{"uid":"1"}]}]}`)
	}
	var seq uint64 // positions only grow, across the benchmark's runs
	b.Run("plain", func(b *testing.B) {
		for i := range b.N {
			p.LastSequence = uint64(i + 1)
			v, err := json.Marshal(p)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.State().Put(ctx, "patient.plain", v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fenced", func(b *testing.B) {
		for range b.N {
			seq++
			p.LastSequence = seq
			if err := s.Patients().PutPatientAt(ctx, p, seq); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fenced-takeover", func(b *testing.B) {
		for range b.N {
			seq++
			p.LastSequence = seq
			// No memory of its writes, as after a takeover.
			s.Patients().ForgetWrites()
			if err := s.Patients().PutPatientAt(ctx, p, seq); err != nil {
				b.Fatal(err)
			}
		}
	})
}
