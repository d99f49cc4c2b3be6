package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/store"
)

// TestSnapshotsKeepTheNewestThree: snapshots larger than a key-value entry
// may be (2 MiB here) are stored, listed newest first, read back intact,
// and only the newest three are kept.
func TestSnapshotsKeepTheNewestThree(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "data"))
	ctx := context.Background()
	snaps := s.Snapshots()
	if seqs, err := snaps.Snapshots(ctx); err != nil || len(seqs) != 0 {
		t.Fatalf("empty bucket lists %v, %v", seqs, err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 128<<10)
	for _, seq := range []uint64{10, 30, 20, 40, 50} {
		data := append([]byte(fmt.Sprintf("snapshot %d\n", seq)), big...)
		if err := snaps.PutSnapshot(ctx, seq, data); err != nil {
			t.Fatal(err)
		}
	}
	seqs, err := snaps.Snapshots(ctx)
	if err != nil || !slices.Equal(seqs, []uint64{50, 40, 30}) {
		t.Fatalf("snapshots %v (%v), want [50 40 30]", seqs, err)
	}
	b, err := snaps.GetSnapshot(ctx, 40)
	if err != nil || !bytes.HasPrefix(b, []byte("snapshot 40\n")) || len(b) != len("snapshot 40\n")+len(big) {
		t.Fatalf("snapshot 40 read back as %d bytes (%v)", len(b), err)
	}
	if _, err := snaps.GetSnapshot(ctx, 10); err == nil {
		t.Error("the snapshot at 10 should have been deleted")
	}
}

// TestIngestTrim: Trim removes the records before a sequence; First and
// FirstAtOrAfter report the retained range.
func TestIngestTrim(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "data"))
	ctx := context.Background()
	in := s.Ingest()
	for i := range 6 {
		if _, _, err := in.Append(ctx, ingest.Observation{Kind: "api.viewed", Key: fmt.Sprint("k", i)}); err != nil {
			t.Fatal(err)
		}
	}
	mid := time.Now()
	time.Sleep(20 * time.Millisecond) // records on either side of mid by the clock: not a wait
	for i := 6; i < 8; i++ {
		if _, _, err := in.Append(ctx, ingest.Observation{Kind: "api.viewed", Key: fmt.Sprint("k", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if seq, err := in.FirstAtOrAfter(ctx, mid); err != nil || seq != 7 {
		t.Errorf("first record after the pause: %d (%v), want 7", seq, err)
	}
	if n, err := in.Trim(ctx, 4); err != nil || n != 3 {
		t.Fatalf("Trim(4) removed %d (%v), want 3", n, err)
	}
	if n, _ := in.Trim(ctx, 2); n != 0 {
		t.Errorf("Trim below the first record removed %d", n)
	}
	if first, err := in.First(ctx); err != nil || first != 4 {
		t.Errorf("First after the trim: %d (%v), want 4", first, err)
	}
	if last, _ := in.Last(ctx); last != 8 {
		t.Errorf("Last after the trim: %d, want 8", last)
	}
}

// TestDataDirLocked: a second store on a data directory in use is refused
// with ErrLocked, and allowed once the first is closed.
func TestDataDirLocked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(ctx, store.Config{DataDir: dir}); !errors.Is(err, store.ErrLocked) {
		t.Errorf("second open while in use: %v, want ErrLocked", err)
	}
	s.Close()
	s2, err := store.Open(ctx, store.Config{DataDir: dir})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s2.Close()
}
