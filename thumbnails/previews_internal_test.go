package thumbnails

import (
	"testing"

	"radbridge/ingest"
)

// TestPreviewsBounded: previews keeps at most previewSlots instances, one
// per series, drops when full, frees a slot on Take(nil) and does not
// want a series again once it was previewed.
func TestPreviewsBounded(t *testing.T) {
	p := NewPreviews()
	inst := func(series string) *ingest.Instance { return &ingest.Instance{SeriesInstanceUID: series} }
	want := func(series string, ok bool) {
		t.Helper()
		max, got := p.Want(inst(series))
		if got != ok || (ok && max != previewMaxBytes) {
			t.Fatalf("Want(%s) = %d, %v; want %v", series, max, got, ok)
		}
	}
	want("1.1", true)
	want("1.1", false) // the series is held
	want("1.2", true)
	want("1.3", false) // both slots taken: dropped
	if got := p.dropped.Load(); got != 1 {
		t.Errorf("dropped %d, want 1", got)
	}
	p.Take(inst("1.2"), nil) // not recorded: the slot is free again
	want("1.3", true)
	p.Take(inst("1.3"), []byte("part10")) // queued, never blocks
	if got := len(p.queue); got != 1 {
		t.Fatalf("queue %d, want 1", got)
	}
	p.release("1.3", true) // rendered
	want("1.3", false)     // previewed already
	want("1.2", true)      // never previewed: wanted again
}
