package mapper_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/internal/testkit"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel/readmodeltest"
)

const (
	evictQuiet = 10 * time.Minute
	evictIdle  = 3 * 24 * time.Hour
)

var evictT0 = time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)

func evictUID(n string) string { return "1.2.826.0.1.3680043.10.1447.77." + n }

// evictSteps is a mixed HL7/DICOM history over 20 days in which patients
// go cold (idle 3 days) and come back: an order whose study and report
// arrive after its patient went cold, an MPPS N-SET naming only its step,
// a study that moves to another patient by a Patient ID correction of a
// cold study, an accession shared by two patients, a patient evicted,
// reloaded, changed and evicted again, and a study without accession that
// joins a cold order by its Study Instance UID.
func evictSteps() [][]snapObs {
	hl7 := func(key string, raw []byte) snapObs { return snapObs{ingest.KindHL7, key, ingest.HL7Body{Raw: raw}} }
	inst := func(in ingest.Instance) snapObs {
		return snapObs{ingest.KindDICOMInstance, "dicom:" + in.SOPInstanceUID + "|" + in.PatientID, in}
	}
	study := func(pid, acc, uid string, n int) []snapObs {
		var out []snapObs
		for _, in := range joinStudy(pid, acc, uid, n) {
			out = append(out, inst(in))
		}
		return out
	}
	ian := func(pid, acc, uid string, n int) snapObs {
		ins := joinStudy(pid, acc, uid, n)
		se := ingest.IANSeries{SeriesInstanceUID: uid + ".1"}
		for _, in := range ins {
			se.Instances = append(se.Instances, ingest.IANInstance{SOPClassUID: in.SOPClassUID, SOPInstanceUID: in.SOPInstanceUID, InstanceAvailability: "ONLINE"})
		}
		return snapObs{ingest.KindDICOMIAN, "ian:" + uid, ingest.IAN{SOPInstanceUID: uid + ".9", StudyInstanceUID: uid, Series: []ingest.IANSeries{se}}}
	}
	viewedBy := func(key, pid, uid string) snapObs {
		return snapObs{ingest.KindViewed, key, ingest.Viewed{PatientID: pid, StudyInstanceUID: uid, ViewerName: "Dr X"}}
	}
	s1, s3, s4, sx := evictUID("1"), evictUID("3"), evictUID("4"), evictUID("9")
	mpps := "1.2.826.0.1.3680043.10.1447.78.4"
	s4ins := joinStudy("P4", "A4", s4, 2)
	moved := func(i int) ingest.Instance { in := joinStudy("P6", "A3", s3, 2)[i]; return in }
	d0 := []snapObs{
		hl7("hl7:o1", joinORM("P1", "A1", "o1")), hl7("hl7:o2", joinORM("P2", "A2", "o2")), hl7("hl7:o5", joinORM("P5", "AX", "o5")),
	}
	// An OMI naming the Study Instance UID of a study whose images, with
	// no accession, arrive after its patient went cold.
	// And one naming a study that comes for another patient: a warning.
	s7, s8 := evictUID("7"), evictUID("8")
	d0 = append(d0, hl7("hl7:o7", uidOMI("P7", "A7", s7, "o7")), hl7("hl7:o8", uidOMI("P8", "A8", s8, "o8")))
	d0 = append(d0, study("P3", "A3", s3, 2)...)
	d0 = append(d0, ian("P3", "A3", s3, 2),
		snapObs{ingest.KindDICOMMPPS, "mpps:c", ingest.MPPSUpdate{SOPInstanceUID: mpps, Create: true, Status: ingest.MPPSInProgress,
			StudyInstanceUIDs: []string{s4}, AccessionNumbers: []string{"A4"}, PatientID: "P4", Modality: "CT"}},
		inst(s4ins[0]), inst(s4ins[1]))
	d1 := append([]snapObs{viewedBy("api:v1", "P3", s3)}, study("P2", "AX", sx, 2)...)
	// Day 5: every patient is cold.
	d5 := append([]snapObs{hl7("hl7:r2", joinORU("P2", "A2", "r2", "F"))}, study("P1", "A1", s1, 2)...)
	d5 = append(d5, study("P7", "", s7, 2)...)
	d5 = append(d5, study("P9", "", s8, 1)...)
	d5 = append(d5,
		// An N-SET names only its step: the study it names is cold.
		snapObs{ingest.KindDICOMMPPS, "mpps:s", ingest.MPPSUpdate{SOPInstanceUID: mpps, Status: ingest.MPPSDiscontinued}})
	// A new instance: the update says the step was discontinued.
	d6 := []snapObs{inst(moved(0)), hl7("hl7:rx", joinORU("P5", "AX", "rx", "F")), inst(joinStudy("P4", "A4", s4, 3)[2])}
	d10 := []snapObs{viewedBy("api:v0", "P4", s4), viewedBy("api:v2", "P1", s1), inst(joinStudy("P1", "A1", s1, 3)[2])}
	d14 := []snapObs{hl7("hl7:o9", joinORM("P1", "A9", "o9")), hl7("hl7:r1", joinORU("P1", "A1", "r1", "C")), inst(moved(1))}
	d20 := []snapObs{viewedBy("api:v3", "P6", s3), hl7("hl7:o2b", joinORM("P2", "A2", "o2b")), viewedBy("api:v4", "P3", s3)}
	return [][]snapObs{d0, d1, nil, nil, nil, d5, d6, nil, nil, nil, d10, nil, nil, nil, d14, nil, nil, nil, nil, nil, d20}
}

// buildEvictLog records evictSteps into a fresh log through a mapper that
// never evicts, on a clock that follows the steps so quiet periods end
// (their timer records land in the log), and returns the log with that
// mapper's events and read models: what eviction must reproduce.
func buildEvictLog(t *testing.T) (*ingest.Memory, []*rbv1.Event, map[string][]byte) {
	t.Helper()
	in, evs, rm := ingest.NewMemory(), eventlog.NewMemory(), &readmodeltest.Memory{}
	in.RecordDuplicates = true
	var clock atomic.Int64
	clock.Store(evictT0.UnixNano())
	m, stop := start(t, mapper.Config{Ingest: in, Events: evs, ReadModel: rm, DedupHorizon: 30 * 24 * time.Hour,
		Rules: rules.New(rules.Options{QuietPeriod: evictQuiet}), Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }})
	defer stop()
	for d, items := range evictSteps() {
		at := evictT0.Add(time.Duration(d) * 24 * time.Hour)
		clock.Store(at.Add(time.Hour).UnixNano()) // every quiet period of the day ends at once
		for i, it := range items {
			body, _ := json.Marshal(it.body)
			if _, _, err := in.Append(context.Background(), ingest.Observation{Kind: it.kind, Key: it.key, Time: at.Add(time.Duration(i) * time.Minute), Body: body}); err != nil {
				t.Fatal(err)
			}
		}
		var last uint64
		if !testkit.Poll(30*time.Second, func() bool {
			last, _ = in.Last(context.Background())
			return m.Ready() && m.Applied() == last && m.PendingTimers() == 0
		}) {
			t.Fatalf("day %d: applied %d of %d, %d timers pending", d, m.Applied(), last, m.PendingTimers())
		}
	}
	return in, allEvents(t, evs), rm.JSON()
}

// copyLog appends the records of src up to seq to dst (same sequences).
func copyLog(t *testing.T, src, dst *ingest.Memory, seq uint64) {
	t.Helper()
	have, _ := dst.Last(context.Background())
	if have >= seq {
		return
	}
	stop := errors.New("stop")
	err := src.Watch(context.Background(), have+1, func(r ingest.Record) error {
		if _, _, err := dst.Append(context.Background(), r.Observation); err != nil {
			return err
		}
		if r.Seq >= seq {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatal(err)
	}
}

func sameEventsAs(t *testing.T, what string, got, want []*rbv1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d events, never evicting derives %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if !proto.Equal(got[i], want[i]) {
			g, _ := protojson.Marshal(got[i])
			w, _ := protojson.Marshal(want[i])
			t.Fatalf("%s: event %d differs from never evicting:\n%s\n%s", what, i+1, g, w)
		}
	}
}

func sameReadModels(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d read models, never evicting writes %d", what, len(got), len(want))
	}
	for id, w := range want {
		if g := got[id]; !bytes.Equal(g, w) {
			t.Errorf("%s: read model of %s differs from never evicting:\n%s\n%s", what, id, g, w)
		}
	}
}

// TestEvictionIsTransparent: a mapper that evicts cold patients to the
// archive and reloads them when they are named again, stopped and
// restarted from its snapshots along the way, derives exactly the events
// (proto.Equal) and read models of a mapper that never evicts; and every
// restart from any of its snapshots (each with versions "in its future" in
// the archive) re-derives the same events and the same state.
func TestEvictionIsTransparent(t *testing.T) {
	src, wantEvs, wantRM := buildEvictLog(t)
	last, _ := src.Last(context.Background())
	in, evs, rm, snaps, arch := ingest.NewMemory(), eventlog.NewMemory(), &readmodeltest.Memory{}, &mapper.MemorySnapshots{Keep: 1000}, &mapper.MemoryArchive{}
	in.RecordDuplicates = true
	cfg := mapper.Config{Ingest: in, Events: evs, ReadModel: rm, Snapshots: snaps, SnapshotEvery: 3, SnapshotWait: true, DedupHorizon: 30 * 24 * time.Hour,
		Rules: rules.New(rules.Options{QuietPeriod: evictQuiet}), Now: func() time.Time { return time.Unix(0, 0) },
		Archive: arch, StateIdle: evictIdle, Seen: &mapper.MemorySeen{}}
	var evicted, reloaded uint64
	for seq := uint64(7); ; seq += 7 { // a restart every 7 records
		seq = min(seq, last)
		copyLog(t, src, in, seq)
		m := runTo(t, cfg, in, seq, false)
		st := m.Stats()
		evicted, reloaded = evicted+st.Evicted, reloaded+st.Reloaded
		if seq == last {
			if st.Patients >= len(wantRM) {
				t.Errorf("%d patients in memory at the end, of %d: none evicted", st.Patients, len(wantRM))
			}
			break
		}
	}
	if evicted < 8 || reloaded < 5 {
		t.Errorf("%d evictions and %d reloads: the scenario does not exercise the archive", evicted, reloaded)
	}
	sameEventsAs(t, "evicting", allEvents(t, evs), wantEvs)
	sameReadModels(t, "evicting", rm.JSON(), wantRM)

	// Restart from each snapshot: the replay reads the archive as it was
	// then (later versions are ignored), derives the logged events, and
	// its state equals every later snapshot's.
	seqs, _ := snaps.Snapshots(context.Background())
	if len(seqs) < 8 {
		t.Fatalf("%d snapshots", len(seqs))
	}
	for _, s := range seqs {
		rep, err := mapper.New(cfg).Replay(context.Background(), mapper.ReplayOptions{From: s + 1, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Clean() || rep.StartedFrom != s {
			t.Errorf("replay from the snapshot at %d (started from %d): %d compared, %d differ, %d missing, %d dropped; states differ at %v",
				s, rep.StartedFrom, rep.Compared, rep.Differ, rep.Missing, rep.Dropped, rep.StateDiffers)
		}
	}
	// Other idle times branch the archive's timeline at the snapshot:
	// the versions written with 3 days are not read, and the events are
	// the same (the state is not: other patients are in memory).
	for _, idle := range []time.Duration{0, 24 * time.Hour, 10 * 24 * time.Hour} {
		c := cfg
		c.StateIdle = idle
		for _, from := range []uint64{1, seqs[len(seqs)/2] + 1} {
			rep, err := mapper.New(c).Replay(context.Background(), mapper.ReplayOptions{From: from, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Differ+rep.Missing+rep.Dropped != 0 || rep.Compared == 0 {
				t.Errorf("replay from %d with idle %v: %d compared, %d differ, %d missing, %d dropped", from, idle, rep.Compared, rep.Differ, rep.Missing, rep.Dropped)
			}
		}
	}
	if n := arch.Len(); n == 0 {
		t.Error("dry runs or the evicting run left the archive empty")
	}
}

// TestReloadTakesTheVersionOfItsTime: a patient evicted, reloaded, changed
// and evicted again has two versions in the archive; a mapper restarted
// from a snapshot taken between the two evictions reloads the first (the
// second was written "in its future") and re-derives exactly the logged
// events, and the state of every later snapshot.
func TestReloadTakesTheVersionOfItsTime(t *testing.T) {
	src, _, _ := buildEvictLog(t)
	last, _ := src.Last(context.Background())
	in, evs, snaps, arch := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{Keep: 1000}, &mapper.MemoryArchive{}
	in.RecordDuplicates = true
	copyLog(t, src, in, last)
	cfg := mapper.Config{Ingest: in, Events: evs, Snapshots: snaps, SnapshotEvery: 1, SnapshotWait: true, DedupHorizon: 30 * 24 * time.Hour,
		Rules: rules.New(rules.Options{QuietPeriod: evictQuiet}), Now: func() time.Time { return time.Unix(0, 0) },
		Archive: arch, StateIdle: evictIdle}
	runTo(t, cfg, in, last, false)
	// P1 is evicted by day 5, reloaded on day 5 (its study), evicted, then
	// reloaded on day 10 (a view and a new instance) and evicted again by
	// day 14: find a snapshot with P1 out before day 10 and one after.
	seqs, _ := snaps.Snapshots(context.Background())
	var before, after uint64
	day10 := evictT0.Add(10 * 24 * time.Hour).UnixMilli()
	for _, s := range seqs { // newest first
		b, _ := snaps.GetSnapshot(context.Background(), s)
		snap, err := mapper.DecodeSnapshot(b)
		if err != nil {
			t.Fatal(err)
		}
		_, in1 := snap.State.Patients["P1"]
		switch {
		case !in1 && snap.State.Swept > day10 && after == 0:
			after = s
		case !in1 && snap.State.Swept > 0 && snap.State.Swept < day10 && before == 0 && after != 0:
			before = s
		}
	}
	if before == 0 || after == 0 {
		t.Fatalf("no snapshots with P1 evicted before and after day 10 (%d, %d)", before, after)
	}
	rep, err := mapper.New(cfg).Replay(context.Background(), mapper.ReplayOptions{From: before + 1, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || rep.StartedFrom != before || rep.Compared == 0 || rep.StatesCompared == 0 {
		t.Errorf("replay from %d (P1 evicted once), across P1's second eviction at or before %d: started from %d, %d compared, %d differ, %d missing, %d dropped, %d states compared, differing at %v",
			before, after, rep.StartedFrom, rep.Compared, rep.Differ, rep.Missing, rep.Dropped, rep.StatesCompared, rep.StateDiffers)
	}
}

// flakyArchive fails one call in every 25 (a store that comes and goes).
type flakyArchive struct {
	mapper.MemoryArchive
	n atomic.Int64
}

func (a *flakyArchive) GetArchive(ctx context.Context, key string) ([]byte, error) {
	if a.n.Add(1)%25 == 0 {
		return nil, errors.New("archive unavailable")
	}
	return a.MemoryArchive.GetArchive(ctx, key)
}

func (a *flakyArchive) PutArchive(ctx context.Context, key string, value []byte) error {
	if a.n.Add(1)%25 == 0 {
		return errors.New("archive unavailable")
	}
	return a.MemoryArchive.PutArchive(ctx, key, value)
}

func (a *flakyArchive) ArchiveHistory(ctx context.Context, key string) ([][]byte, error) {
	if a.n.Add(1)%25 == 0 {
		return nil, errors.New("archive unavailable")
	}
	return a.MemoryArchive.ArchiveHistory(ctx, key)
}

func (a *flakyArchive) MergeArchive(ctx context.Context, key string, merge func([]byte) []byte) error {
	if a.n.Add(1)%25 == 0 {
		return errors.New("archive unavailable")
	}
	return a.MemoryArchive.MergeArchive(ctx, key, merge)
}

// TestArchiveFailuresAreRetried: reads and writes of the archive that fail
// are retried (the mapper waits, as for the event log): the events and read
// models are still those of a mapper that never evicts.
func TestArchiveFailuresAreRetried(t *testing.T) {
	src, wantEvs, wantRM := buildEvictLog(t)
	last, _ := src.Last(context.Background())
	in, evs, rm, arch := ingest.NewMemory(), eventlog.NewMemory(), &readmodeltest.Memory{}, &flakyArchive{}
	in.RecordDuplicates = true
	copyLog(t, src, in, last)
	cfg := mapper.Config{Ingest: in, Events: evs, ReadModel: rm, DedupHorizon: 30 * 24 * time.Hour,
		Rules: rules.New(rules.Options{QuietPeriod: evictQuiet}), Now: func() time.Time { return time.Unix(0, 0) },
		Archive: arch, StateIdle: evictIdle}
	m := runTo(t, cfg, in, last, false)
	if arch.n.Load() < 50 || m.Stats().Evicted == 0 {
		t.Fatalf("%d archive calls, %d evictions: no failure injected", arch.n.Load(), m.Stats().Evicted)
	}
	sameEventsAs(t, "flaky archive", allEvents(t, evs), wantEvs)
	sameReadModels(t, "flaky archive", rm.JSON(), wantRM)
}
