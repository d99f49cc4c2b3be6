package eventlog_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"radbridge/eventlog"
)

var update = flag.Bool("update", false, "rewrite testdata/stored-event.bin (only when the stored encoding changes on purpose, with a migration)")

// TestStoredEventGolden pins the stored encoding of an event (the event
// log's records): bytes written by an earlier build decode to the same
// event, in full and by routing fields, and what this build stores decodes
// the same way. proto.Marshal does not order a Struct's map entries, so
// the comparison is of decoded events, not bytes.
func TestStoredEventGolden(t *testing.T) {
	path := filepath.Join("testdata", "stored-event.bin")
	want := reportEvent(t)
	if *update {
		stored, err := eventlog.EncodeStored(want)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, stored, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	current, err := eventlog.EncodeStored(want)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"golden": golden, "current": current} {
		var full = eventlog.WithSequence(data, want.GetSequence())
		got := want.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(full, got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s stored event decodes to %v, want %v", name, got, want)
		}
		routing, had, err := eventlog.DecodeRouting(data, want.GetSequence())
		if err != nil || !had || routing.GetPatientId() != want.GetPatientId() || routing.GetType() != want.GetType() || routing.GetResource() != nil {
			t.Errorf("%s routing fields: %v, resource %v, %v", name, routing, had, err)
		}
	}
}
