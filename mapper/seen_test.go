package mapper_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper"
	"radbridge/mapper/rules"
)

// appendViewed appends a viewer's IMAGING_STUDY_VIEWED with key at t.
func appendViewed(t *testing.T, in ingest.Log, key string, at time.Time) uint64 {
	t.Helper()
	o, err := ingest.NewViewed(ingest.Viewed{PatientID: "P1", StudyInstanceUID: "1.2.3"}, strings.TrimPrefix(key, "api:"), "", at)
	if err != nil {
		t.Fatal(err)
	}
	seq, _, err := in.Append(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// TestSeenSurvivesRestartFromTheStore: with a SeenStore the snapshots carry
// no observation key, yet a resend after a restart (the mapper starting
// from its snapshot with an empty memory of keys) is still a duplicate; and
// a restart from an older snapshot, whose replay meets keys the store got
// "in its future", derives exactly the events of a clean replay.
func TestSeenSurvivesRestartFromTheStore(t *testing.T) {
	in, evs, snaps, seen := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}, &mapper.MemorySeen{}
	in.RecordDuplicates = true
	cfg := mapper.Config{Ingest: in, Events: evs, Snapshots: snaps, SnapshotEvery: 4, DedupHorizon: time.Hour, Seen: seen}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var last uint64
	for i := range 12 {
		last = appendViewed(t, in, fmt.Sprint("api:", i), t0.Add(time.Duration(i)*time.Minute))
	}
	runTo(t, cfg, in, last, false)
	if seen.Len() != 12 {
		t.Fatalf("the key store holds %d keys after an orderly stop, want 12", seen.Len())
	}
	if snap := newestSnapshot(t, snaps); len(snap.State.Seen) != 0 {
		t.Fatalf("the snapshot carries %d keys, want none", len(snap.State.Seen))
	}
	// Resends after the restart: 3 from before the newest snapshot, one new.
	appendViewed(t, in, "api:3", t0.Add(20*time.Minute))
	appendViewed(t, in, "api:11", t0.Add(21*time.Minute))
	last = appendViewed(t, in, "api:new", t0.Add(22*time.Minute))
	m := runTo(t, cfg, in, last, false)
	if st := m.Stats(); st.Duplicates != 2 || st.Applied != 3 {
		t.Errorf("after the restart: %d applied, %d duplicates; want 3 and 2 (the resends of api:3 and api:11)", st.Applied, st.Duplicates)
	}
	if n := len(allEvents(t, evs)); n != 13 {
		t.Errorf("%d events, want 13", n)
	}
	// Back to the oldest snapshot: the store holds every key, including
	// those of records after it, which the replay must map again.
	seqs, _ := snaps.Snapshots(context.Background())
	for _, s := range seqs[:len(seqs)-1] {
		snaps.Corrupt(s)
	}
	m = runTo(t, cfg, in, last, false)
	if got := m.SnapshotStats().Loaded; got != seqs[len(seqs)-1] {
		t.Fatalf("restarted from %d, want the oldest snapshot %d", got, seqs[len(seqs)-1])
	}
	if st := m.Stats(); st.Duplicates != 2 || st.Applied != last-seqs[len(seqs)-1] {
		t.Errorf("replay from %d: %d applied, %d duplicates; want %d and 2", seqs[len(seqs)-1], st.Applied, st.Duplicates, last-seqs[len(seqs)-1])
	}
	wantEvs, _ := cleanReplay(t, in, rules.Options{})
	sameEvents(t, allEvents(t, evs), wantEvs)
}

// TestSeenStoreFailureKeepsTheSnapshotBack: a snapshot is not written while
// its keys cannot be stored (it would rely on keys the store lacks); the
// keys are written with the next snapshot once the store is back.
func TestSeenStoreFailureKeepsTheSnapshotBack(t *testing.T) {
	in, evs, snaps, seen := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}, &mapper.MemorySeen{}
	in.RecordDuplicates = true
	cfg := mapper.Config{Ingest: in, Events: evs, Snapshots: snaps, SnapshotEvery: 1 << 20, DedupHorizon: time.Hour, Seen: seen}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	last := appendViewed(t, in, "api:1", t0)
	seen.FailWrites = errors.New("store down")
	m := runTo(t, cfg, in, last, false) // its stop takes a snapshot
	if s := m.SnapshotStats(); s.Failed != 1 || s.Taken != 0 {
		t.Errorf("snapshot with the key store down: %d taken, %d failed; want 0 and 1", s.Taken, s.Failed)
	}
	if seqs, _ := snaps.Snapshots(context.Background()); len(seqs) != 0 {
		t.Errorf("snapshots %v written without their keys", seqs)
	}
	seen.FailWrites = nil
	last = appendViewed(t, in, "api:2", t0.Add(time.Minute))
	appendViewed(t, in, "api:1", t0.Add(2*time.Minute))
	m = runTo(t, cfg, in, last+1, false)
	if st := m.Stats(); st.Duplicates != 1 {
		t.Errorf("%d duplicates, want 1 (the resend of api:1)", st.Duplicates)
	}
	if seen.Len() != 2 {
		t.Errorf("the key store holds %d keys, want 2", seen.Len())
	}
}

// TestSeenFromAnOlderSnapshot: a snapshot written before the key store
// existed carries its keys in the state; the mapper still treats them as
// seen, and stores them with its next snapshot.
func TestSeenFromAnOlderSnapshot(t *testing.T) {
	in, evs, snaps, seen := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}, &mapper.MemorySeen{}
	in.RecordDuplicates = true
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	last := appendViewed(t, in, "api:1", t0)
	// Map it without a key store, then move the keys into the snapshot's
	// state as an older radbridge wrote them.
	runTo(t, mapper.Config{Ingest: in, Events: evs, Snapshots: snaps, DedupHorizon: time.Hour}, in, last, false)
	snap := newestSnapshot(t, snaps)
	snap.State.Seen = map[string]mapper.SeenKey{"api:1": {Seq: last, At: t0.UnixMilli()}}
	b, err := mapper.EncodeSnapshot(snap.State, snap.Position, snap.Mapping, snap.Taken)
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.PutSnapshot(context.Background(), snap.Applied, b); err != nil {
		t.Fatal(err)
	}
	last = appendViewed(t, in, "api:1", t0.Add(time.Minute))
	cfg := mapper.Config{Ingest: in, Events: evs, Snapshots: snaps, DedupHorizon: time.Hour, Seen: seen}
	m := runTo(t, cfg, in, last, false)
	if st := m.Stats(); st.Duplicates != 1 {
		t.Errorf("%d duplicates, want 1: the old snapshot's key was forgotten (%+v, %+v)", st.Duplicates, st, m.SnapshotStats())
	}
	if seen.Len() != 1 {
		t.Errorf("the key store holds %d keys, want the old snapshot's 1", seen.Len())
	}
	if s := newestSnapshot(t, snaps); len(s.State.Seen) != 0 {
		t.Errorf("the new snapshot still carries %d keys", len(s.State.Seen))
	}
}

// TestReusedIdentifier: the same HL7 sender and control id with other
// content is mapped as new data and counted; the same content again is a
// resend, whichever earlier message it repeats, and whether the earlier one
// was recorded by a release that keyed HL7 by the control id alone.
func TestReusedIdentifier(t *testing.T) {
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	in.RecordDuplicates = true
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	msg := func(msh7, acc string) []byte {
		return []byte("MSH|^~\\&|RIS|HOSP|RB|HOSP|" + msh7 + "||ORM^O01|CTL1|P|2.3\rPID|1||MRN1\rORC|NW|P" + acc + "\rOBR|1|P" + acc + "||CT^CT||||||||||||||" + acc + "\r")
	}
	add := func(raw []byte, at time.Time, legacyKey bool) uint64 {
		o, err := ingest.NewHL7(raw, "RIS", "HOSP", "CTL1", at)
		if err != nil {
			t.Fatal(err)
		}
		if legacyKey {
			o.Key = ingest.HL7ControlKey("RIS", "HOSP", "CTL1")
		}
		seq, _, err := in.Append(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	add(msg("20260101000000", "A1"), t0, true)                            // recorded before the upgrade
	add(msg("20260101000100", "A1"), t0.Add(time.Minute), false)          // its resend after the upgrade
	add(msg("20260101000200", "A2"), t0.Add(2*time.Minute), false)        // the counter restarted: another order
	add(msg("20260101000300", "A1"), t0.Add(3*time.Minute), false)        // the first again
	last := add(msg("20260101000400", "A2"), t0.Add(4*time.Minute), true) // the second again, old key form
	cfg := mapper.Config{Ingest: in, Events: evs, Snapshots: &mapper.MemorySnapshots{}, DedupHorizon: time.Hour, Seen: &mapper.MemorySeen{}, Rules: rules.New(rules.Options{})}
	m := runTo(t, cfg, in, last, false)
	if st := m.Stats(); st.Reused != 1 || st.Duplicates != 3 {
		t.Errorf("%d reused, %d duplicates; want 1 and 3", st.Reused, st.Duplicates)
	}
	var accs []string
	for _, e := range allEvents(t, evs) {
		accs = append(accs, e.GetType().String()+" "+e.GetAccessionNumber())
	}
	if d := cmp.Diff(accs, []string{"ORDER_PLACED A1", "ORDER_PLACED A2"}); d != "" {
		t.Errorf("events (-got +want):\n%s", d)
	}
	wantEvs, _ := cleanReplay(t, in, rules.Options{})
	sameEvents(t, allEvents(t, evs), wantEvs)
}
