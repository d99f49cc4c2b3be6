package mapper

import (
	"testing"

	"radbridge/mapper/rules"
)

// TestArchiveEntriesOfTheTimeline: an index entry is read only when it was
// written at or before the record being applied, by the timeline stretch
// that covers its sequence (a crashed run's entries of the same options
// after the snapshot are those the restart writes again; those of other
// options after the branch are never read).
func TestArchiveEntriesOfTheTimeline(t *testing.T) {
	a := &archiver{seq: 20, lineage: []rules.Lineage{{ID: "A", From: 0, Cfg: "x"}, {ID: "B", From: 10, Cfg: "y"}}}
	for _, c := range []struct {
		r    indexRef
		want bool
	}{
		{indexRef{Seq: 5, T: "A"}, true},   // before the branch, old options
		{indexRef{Seq: 10, T: "A"}, true},  // evicted while applying the snapshot's last record
		{indexRef{Seq: 12, T: "A"}, false}, // old options after the branch
		{indexRef{Seq: 12, T: "B"}, true},  // this stretch
		{indexRef{Seq: 5, T: "B"}, false},  // cannot be (B starts at 10)
		{indexRef{Seq: 20, T: "B"}, true},  // evicted while applying this record
		{indexRef{Seq: 21, T: "B"}, false}, // in the future
		{indexRef{Seq: 15, T: "C"}, false}, // another timeline
	} {
		if got := a.valid(c.r); got != c.want {
			t.Errorf("entry %+v at record 20: valid %v, want %v", c.r, got, c.want)
		}
	}
	st := &rules.State{Applied: 0}
	l := lineageFor(st, "x")
	if len(l) != 1 || l[0].From != 0 || l[0].Cfg != "x" {
		t.Fatalf("fresh lineage %+v", l)
	}
	st.Lineage, st.Applied = l, 30
	if again := lineageFor(st, "x"); len(again) != 1 || again[0] != l[0] {
		t.Errorf("same options from a snapshot: %+v, want the same timeline", again)
	}
	br := lineageFor(st, "y")
	if len(br) != 2 || br[1].From != 30 || br[1].ID == l[0].ID || br[1].Cfg != "y" {
		t.Errorf("other options: %+v, want a branch at 30", br)
	}
	if again := lineageFor(st, "y"); again[1] != br[1] {
		t.Errorf("the branch is not a function of its parent, point and options: %+v %+v", again[1], br[1])
	}
}
