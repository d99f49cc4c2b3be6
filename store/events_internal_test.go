package store

import (
	"context"
	"path/filepath"
	"testing"

	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

// TestReadLeavesNoConsumer: every Read deletes the server-side consumer it
// used, so that clients polling GET /v1/events do not pile consumers up.
func TestReadLeavesNoConsumer(t *testing.T) {
	s, err := Open(context.Background(), Config{DataDir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		ev := &rbv1.Event{Id: "ev" + string(rune('0'+i)), PatientId: "P1", Type: rbv1.EventType_IMAGING_STUDY_VIEWED}
		if _, err := s.Events().Append(ctx, eventlog.Key{IngestSeq: uint64(i)}, ev); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.events.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		got, err := s.Events().Read(ctx, 1, eventlog.Filter{PatientIDs: []string{"P1"}}, 10)
		if err != nil || len(got) != 3 {
			t.Fatalf("read %d: %d events, %v", i, len(got), err)
		}
	}
	after, err := s.events.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.State.Consumers != before.State.Consumers {
		t.Errorf("consumers on the events stream: %d after 10 reads, %d before", after.State.Consumers, before.State.Consumers)
	}
}
