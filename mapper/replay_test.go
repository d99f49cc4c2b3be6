package mapper_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	"radbridge/readmodel/readmodeltest"
)

func replay(t *testing.T, cfg mapper.Config, o mapper.ReplayOptions) *mapper.ReplayReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := mapper.New(cfg).Replay(ctx, o)
	if err != nil {
		t.Fatalf("replay %+v: %v", o, err)
	}
	return rep
}

// TestReplay: a check of an untouched store is clean; after a mapping
// change it reports how many logged events differ (by type and resource)
// and the state differs; a real replay appends no duplicate, writes the
// rebuilt read models and a snapshot, after which a check is clean.
func TestReplay(t *testing.T) {
	in, evs, snaps := ingest.NewMemory(), eventlog.NewMemory(), &mapper.MemorySnapshots{}
	rm := &readmodeltest.Memory{}
	o := rules.Options{QuietPeriod: 50 * time.Millisecond}
	cfg := mapper.Config{Ingest: in, Events: evs, ReadModel: rm, Rules: rules.New(o), Snapshots: snaps, SnapshotEvery: 9, DedupHorizon: time.Hour}
	last := appendAll(t, in, snapScenario(4), time.Now())
	runTo(t, cfg, in, last, true)
	logged := allEvents(t, evs)
	head, _ := in.Last(context.Background())
	snapsBefore, _ := snaps.Snapshots(context.Background())

	rep := replay(t, cfg, mapper.ReplayOptions{From: 1, DryRun: true})
	if !rep.Clean() || rep.Compared != len(logged) || rep.Applied != head || rep.StatesCompared != len(snapsBefore) || rep.Appended != 0 {
		t.Fatalf("check of an untouched store: %+v; want clean, %d compared, %d applied, %d states", rep, len(logged), head, len(snapsBefore))
	}
	// From a later point: starts from an older snapshot.
	rep = replay(t, cfg, mapper.ReplayOptions{From: snapsBefore[1] + 1, DryRun: true})
	if !rep.Clean() || rep.StartedFrom != snapsBefore[1] || rep.Applied != head-snapsBefore[1] {
		t.Errorf("check from %d: %+v; want clean from snapshot %d", snapsBefore[1]+1, rep, snapsBefore[1])
	}

	// A mapping fix: studies now carry a viewer link.
	fixed := o
	fixed.ViewerURL = "https://viewer.example/?study={{study}}"
	cfg2 := cfg
	cfg2.Rules = rules.New(fixed)
	rep = replay(t, cfg2, mapper.ReplayOptions{From: 1, DryRun: true})
	if rep.Clean() || rep.Differ == 0 || rep.DifferByResource["ImagingStudy"] != rep.Differ || rep.DifferByType["IMAGING_STUDY_AVAILABLE"] == 0 || len(rep.StateDiffers) == 0 {
		t.Fatalf("check after a mapping change: %+v; want ImagingStudy events and the state to differ", rep)
	}
	if got := allEvents(t, evs); len(got) != len(logged) {
		t.Fatalf("a dry run changed the event log: %d events, had %d", len(got), len(logged))
	}
	rep2 := replay(t, cfg2, mapper.ReplayOptions{From: 1})
	if rep2.Differ != rep.Differ || rep2.PatientsWritten == 0 || rep2.Snapshot != head {
		t.Errorf("replay: %+v; want the same %d differences, read models and a snapshot at %d", rep2, rep.Differ, head)
	}
	got := allEvents(t, evs)
	sameEvents(t, got, logged) // nothing re-emitted, nothing appended twice
	var linked bool
	for _, p := range rm.Patients() {
		for _, s := range p.Studies {
			linked = linked || strings.Contains(string(s), "viewer.example")
		}
	}
	if !linked {
		t.Error("the read models do not reflect the rebuilt state (no viewer link)")
	}
	// The new snapshot is the rebuilt state: a check from it is clean.
	if rep := replay(t, cfg2, mapper.ReplayOptions{From: head + 1, DryRun: true}); rep.StartedFrom != head || !rep.Clean() {
		t.Errorf("check from the replay's snapshot: %+v", rep)
	}
}
