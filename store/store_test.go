package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/eventlog"
	"radbridge/eventlog/eventlogtest"
	"radbridge/ingest"
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
