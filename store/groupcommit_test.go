package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"radbridge/eventlog"
	"radbridge/eventlog/eventlogtest"
	"radbridge/ingest"
	"radbridge/ingest/ingesttest"
	"radbridge/store"
)

func openGroup(t *testing.T, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Config{DataDir: dir, SyncAlways: true, GroupCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestGroupCommitConformance(t *testing.T) {
	t.Run("ingest", func(t *testing.T) {
		ingesttest.Run(t, func(t *testing.T) ingest.Log {
			return openGroup(t, filepath.Join(t.TempDir(), "data")).Ingest()
		})
	})
	t.Run("events", func(t *testing.T) {
		eventlogtest.Run(t, func(t *testing.T) eventlog.Log {
			return openGroup(t, filepath.Join(t.TempDir(), "data")).Events()
		})
	})
}

// TestGroupCommitSharesFsyncs: concurrent appends each get their own
// sequence, resends are duplicates of the first, every record is there once
// after a reopen, and the appends shared fsyncs.
func TestGroupCommitSharesFsyncs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := openGroup(t, dir)
	ctx := context.Background()
	const writers, each = 16, 40
	var mu sync.Mutex
	seqs := map[uint64]string{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("hl7:RIS|HOSP|%d-%d", w, i)
				o := ingest.Observation{Kind: "hl7.message", Key: key, Body: []byte(`{}`)}
				seq, dup, err := s.Ingest().Append(ctx, o)
				if err != nil || dup {
					t.Errorf("append %s: seq %d dup %v err %v", key, seq, dup, err)
					return
				}
				again, dup, err := s.Ingest().Append(ctx, o)
				if err != nil || !dup || again != seq {
					t.Errorf("resend %s: seq %d dup %v err %v; want %d, duplicate", key, again, dup, err, seq)
				}
				mu.Lock()
				if other, ok := seqs[seq]; ok {
					t.Errorf("%s and %s both got sequence %d", key, other, seq)
				}
				seqs[seq] = key
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fsyncs := s.Ingest().GroupCommits()
	t.Logf("%d appends (and as many resends), %d fsyncs", writers*each, fsyncs)
	if fsyncs == 0 || fsyncs >= writers*each {
		t.Errorf("%d fsyncs for %d appends from %d writers: want fewer than one per append", fsyncs, writers*each, writers)
	}
	s.Close()
	s = openGroup(t, dir)
	if last, err := s.Ingest().Last(ctx); err != nil || last != writers*each {
		t.Fatalf("after reopen the ingest log ends at %d (%v), want %d", last, err, writers*each)
	}
	for seq, key := range seqs {
		r, err := s.Ingest().Get(ctx, seq)
		if err != nil || r.Key != key {
			t.Errorf("record %d: key %q (%v), want %q", seq, r.Key, err, key)
		}
	}
}
