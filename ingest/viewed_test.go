package ingest_test

import (
	"testing"
	"time"

	"radbridge/ingest"
)

// TestScopedClientEventID: the parts cannot run into each other, and a
// viewed observation keyed by a scoped id has that id as its identity.
func TestScopedClientEventID(t *testing.T) {
	a := ingest.ScopedClientEventID("ward/1", "P", "evt")
	b := ingest.ScopedClientEventID("ward", "1/P", "evt")
	c := ingest.ScopedClientEventID("ward", "1", "P/evt")
	if a == b || b == c || a == c {
		t.Errorf("ambiguous: %q %q %q", a, b, c)
	}
	if got, want := ingest.ScopedClientEventID("nurse 1", "MRN#4711", "evt-1"), "s/nurse%201/MRN%234711/evt-1"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	id := ingest.ScopedClientEventID("nurse", "P1", "evt#1")
	o, err := ingest.NewViewed(ingest.Viewed{PatientID: "P1", StudyInstanceUID: "1.2", Agent: "nurse"}, id, "", at)
	if err != nil {
		t.Fatal(err)
	}
	if seen, content := ingest.SeenKey(o), ingest.ContentKey(o); seen != "api:"+id || content != o.Key {
		t.Errorf("identity %q, %q of key %q", seen, content, o.Key)
	}
}
