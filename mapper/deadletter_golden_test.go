package mapper_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/mapper"
)

// A dead letter is stored as JSON (store.DeadLetterBucket) and read back by
// status, /metrics and `replay --retry-dead-letters` of later releases.
// deadletter-v1.json is the format as first stored: it must keep decoding
// to the same value, and today's encoding must be the same bytes.
func TestDeadLetterStoredFormat(t *testing.T) {
	want := mapper.DeadLetter{Seq: 42, Kind: "hl7", Key: "hl7:RIS|NW:C42:0123456789abcdef",
		At: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Reason: "event too large: 3145729 bytes (limit 3145728)", Retry: 57}
	b, err := os.ReadFile(filepath.Join("testdata", "stored", "deadletter-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got mapper.DeadLetter
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded stored dead letter (-want +got):\n%s", diff)
	}
	enc, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, bytes.TrimSpace(b)) {
		t.Errorf("a dead letter encodes as\n%s\nnot as stored by the first release:\n%s", enc, b)
	}
}
