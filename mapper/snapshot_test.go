package mapper_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// snapObs is one observation of the snapshot scenarios.
type snapObs struct {
	kind, key string
	body      any
}

// snapScenario returns orders, reports and studies for n accessions.
func snapScenario(n int) []snapObs {
	var items []snapObs
	for i := range n {
		pid, acc, uid := fmt.Sprintf("P%d", i%7), fmt.Sprintf("ACC-%d", i), fmt.Sprintf("1.2.826.0.1.3680043.10.1447.%d", 1000+i)
		items = append(items,
			snapObs{ingest.KindHL7, fmt.Sprintf("hl7:RIS|HOSP|O%d", i), ingest.HL7Body{Raw: joinORM(pid, acc, fmt.Sprint("O", i))}},
			snapObs{ingest.KindHL7, fmt.Sprintf("hl7:RIS|HOSP|F%d", i), ingest.HL7Body{Raw: joinORU(pid, acc, fmt.Sprint("F", i), "F")}})
		for _, in := range joinStudy(pid, acc, uid, 2) {
			items = append(items, snapObs{ingest.KindDICOMInstance, "dicom:" + in.SOPInstanceUID, in})
		}
	}
	return items
}

func appendAll(t *testing.T, in ingest.Log, items []snapObs, at time.Time) uint64 {
	t.Helper()
	var last uint64
	for i, it := range items {
		body, _ := json.Marshal(it.body)
		seq, _, err := in.Append(context.Background(), ingest.Observation{Kind: it.kind, Key: it.key, Time: at.Add(time.Duration(i) * time.Millisecond), Body: body})
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	return last
}

// runTo runs a mapper until it applied seq and, when settle is set, until
// every timer has fired (the ingest log then holds its timer records).
func runTo(t *testing.T, cfg mapper.Config, in *ingest.Memory, seq uint64, settle bool) *mapper.Mapper {
	t.Helper()
	m := mapper.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mapper Run: %v", err)
		}
	}()
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	if _, err := m.Await(actx, seq); err != nil && !errors.Is(err, readmodel.ErrForgotten) {
		t.Fatalf("await %d: %v", seq, err)
	}
	for settle {
		// Quiet periods end; each records a timer the mapper applies.
		last, _ := in.Last(actx)
		if _, err := m.Await(actx, last); err != nil && !errors.Is(err, readmodel.ErrForgotten) {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // settled once no timer record comes for a while: no state to wait for
		if now, _ := in.Last(actx); now == last {
			break
		}
	}
	return m
}

func allEvents(t *testing.T, l eventlog.Log) []*rbv1.Event {
	t.Helper()
	evs, err := l.Read(context.Background(), 1, eventlog.Filter{}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func newestSnapshot(t *testing.T, s *mapper.MemorySnapshots) *mapper.Snapshot {
	t.Helper()
	seqs, _ := s.Snapshots(context.Background())
	if len(seqs) == 0 {
		t.Fatal("no snapshot stored")
	}
	b, _ := s.GetSnapshot(context.Background(), seqs[0])
	snap, err := mapper.DecodeSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func sameEvents(t *testing.T, got, want []*rbv1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, a clean replay derives %d", len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("event %d differs from a clean replay's:\n%v\n%v", i+1, got[i], want[i])
		}
	}
}

// cleanReplay maps the whole ingest log into a fresh event log with no
// snapshot and returns its events and final state.
func cleanReplay(t *testing.T, in *ingest.Memory, o rules.Options) ([]*rbv1.Event, *mapper.Snapshot) {
	t.Helper()
	evs, snaps := eventlog.NewMemory(), &mapper.MemorySnapshots{}
	last, _ := in.Last(context.Background())
	// Timers are never due on this clock: the log's own timer records drive it.
	runTo(t, mapper.Config{Ingest: in, Events: evs, Rules: rules.New(o), Snapshots: snaps, DedupHorizon: time.Hour,
		SnapshotEvery: 1 << 30, Now: func() time.Time { return time.Unix(0, 0) }}, in, last, false)
	return allEvents(t, evs), newestSnapshot(t, snaps)
}

func TestSnapshotRoundTrip(t *testing.T) {
	in, evs, snaps := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}
	o := rules.Options{QuietPeriod: 50 * time.Millisecond}
	last := appendAll(t, in, snapScenario(5), time.Now())
	runTo(t, mapper.Config{Ingest: in, Events: evs, Rules: rules.New(o), Snapshots: snaps}, in, last, true)
	snap := newestSnapshot(t, snaps)
	if snap.Applied == 0 || len(snap.State.Patients) == 0 || len(snap.State.Studies) != 5 || len(snap.State.Seen) != 0 {
		t.Fatalf("snapshot at %d holds %d patients, %d studies, %d keys; want the scenario's (and no keys: they are the SeenStore's)", snap.Applied, len(snap.State.Patients), len(snap.State.Studies), len(snap.State.Seen))
	}
	_, lastSeq, _ := evs.Bounds(context.Background())
	if snap.NextSeq != lastSeq+1 {
		t.Errorf("snapshot's next event sequence %d, the log ends at %d", snap.NextSeq, lastSeq)
	}
	re, err := mapper.EncodeSnapshot(snap.State, snap.Position, snap.Mapping, snap.Taken)
	if err != nil {
		t.Fatal(err)
	}
	again, err := mapper.DecodeSnapshot(re)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Raw, snap.Raw) {
		t.Error("state changed by a decode/encode round trip")
	}
	// Damage is detected: a flipped byte, a truncation, another format.
	for name, b := range map[string][]byte{
		"flipped":   append(re[:len(re)-3:len(re)-3], 'x', re[len(re)-2], re[len(re)-1]),
		"truncated": re[:len(re)-10],
		"format":    bytes.Replace(re, []byte(`"format":1`), []byte(`"format":9`), 1),
		"empty":     nil,
	} {
		if _, err := mapper.DecodeSnapshot(b); err == nil {
			t.Errorf("%s snapshot decoded without error", name)
		}
	}
}

// TestRestartFromSnapshotMatchesFullReplay: a mapper stopped mid-stream
// (and killed, leaving only periodic snapshots) restarts from its newest
// snapshot, replays only the rest, and ends with the same events, byte for
// byte, and the same state as a clean replay of the whole log.
func TestRestartFromSnapshotMatchesFullReplay(t *testing.T) {
	in, evs, snaps := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}
	o := rules.Options{QuietPeriod: 50 * time.Millisecond}
	cfg := mapper.Config{Ingest: in, Events: evs, Rules: rules.New(o), Snapshots: snaps, SnapshotEvery: 7, SnapshotWait: true, DedupHorizon: time.Hour}
	items := snapScenario(12)
	half := len(items) / 2
	last := appendAll(t, in, items[:half], time.Now())
	runTo(t, cfg, in, last, true)
	first := newestSnapshot(t, snaps)
	last = appendAll(t, in, items[half:], time.Now())
	m := runTo(t, cfg, in, last, true)
	if got := m.SnapshotStats().Loaded; got != first.Applied || got == 0 {
		t.Errorf("second run started from the snapshot at %d, want %d", got, first.Applied)
	}
	if st := m.Stats(); st.Applied >= last {
		t.Errorf("second run applied %d records: it replayed the whole log (%d) instead of starting from the snapshot", st.Applied, last)
	}
	// A third start with nothing new replays nothing.
	total, _ := in.Last(context.Background())
	m = runTo(t, cfg, in, total, false)
	if st := m.Stats(); st.Applied != 0 {
		t.Errorf("restart with an up-to-date snapshot applied %d records, want 0", st.Applied)
	}
	wantEvs, wantState := cleanReplay(t, in, o)
	sameEvents(t, allEvents(t, evs), wantEvs)
	got := newestSnapshot(t, snaps)
	if got.Applied != wantState.Applied || !bytes.Equal(got.Raw, wantState.Raw) {
		t.Errorf("state at %d after restarts differs from a clean replay's at %d:\n%s\n%s", got.Applied, wantState.Applied, got.Raw, wantState.Raw)
	}
}

// TestBrokenSnapshotFallsBack: a damaged newest snapshot is skipped for the
// previous one; with every snapshot damaged the mapper replays the whole
// log. Either way the events are those of a clean replay and none is
// appended twice.
func TestBrokenSnapshotFallsBack(t *testing.T) {
	in, evs, snaps := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}
	o := rules.Options{QuietPeriod: 50 * time.Millisecond}
	cfg := mapper.Config{Ingest: in, Events: evs, Rules: rules.New(o), Snapshots: snaps, SnapshotEvery: 5, SnapshotWait: true, DedupHorizon: time.Hour}
	last := appendAll(t, in, snapScenario(6), time.Now())
	runTo(t, cfg, in, last, true)
	seqs, _ := snaps.Snapshots(context.Background())
	if len(seqs) != 3 {
		t.Fatalf("%d snapshots kept, want 3", len(seqs))
	}
	snaps.Corrupt(seqs[0])
	total, _ := in.Last(context.Background())
	m := runTo(t, cfg, in, total, false)
	if got := m.SnapshotStats().Loaded; got != seqs[1] {
		t.Errorf("with the newest snapshot damaged the mapper started from %d, want the previous one %d", got, seqs[1])
	}
	seqs, _ = snaps.Snapshots(context.Background())
	for _, s := range seqs {
		snaps.Corrupt(s)
	}
	m = runTo(t, cfg, in, total, false)
	if got := m.SnapshotStats().Loaded; got != 0 {
		t.Errorf("with every snapshot damaged the mapper started from %d, want a full replay", got)
	}
	wantEvs, _ := cleanReplay(t, in, o)
	sameEvents(t, allEvents(t, evs), wantEvs)
}

// TestSeenPrunedByLogTime: observation keys are forgotten by the times in
// the log, not the wall clock: a resend within the horizon is ignored, one
// after it is mapped as new, the set stays bounded, and a restart from a
// snapshot decides exactly as a clean replay does.
func TestSeenPrunedByLogTime(t *testing.T) {
	in, evs, snaps := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}
	in.RecordDuplicates = true
	seen := &mapper.MemorySeen{}
	cfg := mapper.Config{Ingest: in, Events: evs, Snapshots: snaps, SnapshotEvery: 3, SnapshotWait: true, DedupHorizon: time.Hour, Seen: seen}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(key string, at time.Time) uint64 {
		body, _ := json.Marshal(ingest.Viewed{PatientID: "P1", StudyInstanceUID: "1.2.3"})
		seq, _, err := in.Append(context.Background(), ingest.Observation{Kind: ingest.KindViewed, Key: key, Time: at, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	for i := range 10 {
		add(fmt.Sprint("api:", i), t0.Add(time.Duration(i)*time.Minute))
	}
	add("api:1", t0.Add(30*time.Minute)) // within the hour: ignored
	last := add("api:x", t0.Add(3*time.Hour))
	runTo(t, cfg, in, last, false)
	add("api:2", t0.Add(3*time.Hour+time.Minute)) // long forgotten: new
	last = add("api:y", t0.Add(3*time.Hour+2*time.Minute))
	runTo(t, cfg, in, last, false)
	got := allEvents(t, evs)
	if len(got) != 13 {
		t.Fatalf("%d events, want 13 (10 + x + the late resend of 2 + y; the early resend of 1 ignored)", len(got))
	}
	snap := newestSnapshot(t, snaps)
	if len(snap.State.Seen) != 0 || seen.Len() != 12 {
		t.Errorf("the snapshot holds %d keys and the key store %d, want none and 12 (0-9, x, y)", len(snap.State.Seen), seen.Len())
	}
	wantEvs, _ := cleanReplay(t, in, rules.Options{})
	sameEvents(t, got, wantEvs)
}

// FuzzDecodeSnapshot: a damaged snapshot is an error, never a panic, and
// whatever decodes re-encodes to a snapshot that decodes to the same state.
func FuzzDecodeSnapshot(f *testing.F) {
	st := rules.NewState()
	st.Applied = 7
	st.Patient("P1").LastSequence = 3
	st.Seen = map[string]mapper.SeenKey{"hl7:1": {Seq: 2, At: 1700000000000}} // as older versions wrote
	good, err := mapper.EncodeSnapshot(st, mapper.Position{Applied: 7, NextSeq: 4}, "m", time.Unix(0, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("{}\n{}"))
	f.Add([]byte(`{"format":1,"applied":0,"sha256":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}` + "\n{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := mapper.DecodeSnapshot(b)
		if err != nil {
			return
		}
		again, err := mapper.EncodeSnapshot(s.State, s.Position, s.Mapping, s.Taken)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := mapper.DecodeSnapshot(again)
		if err != nil {
			t.Fatalf("re-encoded snapshot does not decode: %v", err)
		}
		if s2.Applied != s.Applied || len(s2.State.Patients) != len(s.State.Patients) || len(s2.State.Seen) != len(s.State.Seen) {
			t.Fatalf("round trip changed the state")
		}
	})
}

// TestEncodeStateIsJSONMarshal: the snapshot encoder writes exactly what
// encoding/json writes, on a mapped scenario (with escapes) and a large
// synthetic state.
func TestEncodeStateIsJSONMarshal(t *testing.T) {
	in, evs, snaps := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}
	last := appendAll(t, in, snapScenario(5), time.Now())
	body, _ := json.Marshal(ingest.Viewed{PatientID: "P<&>\"\u00e9\x01", StudyInstanceUID: "1.2.3"})
	if _, _, err := in.Append(context.Background(), ingest.Observation{Kind: ingest.KindViewed, Key: "api:<odd>", Body: body}); err != nil {
		t.Fatal(err)
	}
	runTo(t, mapper.Config{Ingest: in, Events: evs, Rules: rules.New(rules.Options{QuietPeriod: 50 * time.Millisecond}), Snapshots: snaps}, in, last+1, true)
	for name, st := range map[string]*rules.State{"mapped": newestSnapshot(t, snaps).State, "synthetic": bigState(), "empty": rules.NewState()} {
		got, err := mapper.EncodeState(st)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(st)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encodeState differs from json.Marshal:\n%s\n%s", name, got[:min(len(got), 400)], want[:min(len(want), 400)])
		}
	}
}

// TestSnapshotAfterCatchingUpAppends: when the event log is behind the
// ingest log at start (a crash between recording and mapping), the replay
// appends the missing events; the snapshot then holds the true next event
// sequence, and a restart from it numbers on without a gap or a reuse.
func TestSnapshotAfterCatchingUpAppends(t *testing.T) {
	in, evs, snaps := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}
	var last uint64
	for i := 1; i <= 10; i++ {
		last = viewed(t, in, i)
	}
	cfg := mapper.Config{Ingest: in, Events: evs, Snapshots: snaps}
	runTo(t, cfg, in, last, false)
	if s := newestSnapshot(t, snaps); s.NextSeq != 11 || s.Applied != 10 {
		t.Fatalf("snapshot after catching up: applied %d, next event %d; want 10, 11", s.Applied, s.NextSeq)
	}
	for i := 11; i <= 12; i++ {
		last = viewed(t, in, i)
	}
	runTo(t, cfg, in, last, false)
	got := allEvents(t, evs)
	if len(got) != 12 || got[11].Sequence != 12 {
		t.Fatalf("%d events, last sequence %d; want 12, 12", len(got), got[len(got)-1].Sequence)
	}
	if s := newestSnapshot(t, snaps); s.NextSeq != 13 {
		t.Errorf("snapshot's next event %d, want 13", s.NextSeq)
	}
}
