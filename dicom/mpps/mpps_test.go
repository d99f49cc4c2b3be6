package mpps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"radbridge/dicom/dimse"
	"radbridge/dicom/scp"
	"radbridge/ingest"
	"radbridge/store"
)

// memSteps is a Steps in memory with revisions, as the bucket has.
type memSteps struct {
	mu  sync.Mutex
	m   map[string][]byte
	rev map[string]uint64
	// before runs before each write (to let another writer in).
	before func()
}

func (s *memSteps) Get(_ context.Context, uid string) ([]byte, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[uid], s.rev[uid], nil
}

func (s *memSteps) Create(ctx context.Context, uid string, v []byte) error {
	return s.Update(ctx, uid, v, 0)
}

func (s *memSteps) Update(_ context.Context, uid string, v []byte, rev uint64) error {
	if f := s.before; f != nil {
		s.before = nil
		f()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rev[uid] != rev {
		return store.ErrStepChanged
	}
	s.m[uid], s.rev[uid] = v, rev+1
	return nil
}

func statusOf(err error) dimse.Status {
	var se *scp.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	if err != nil {
		return 0xFFFF
	}
	return dimse.StatusSuccess
}

// TestAdmitMPPSCrashAndRace: the state is claimed before the record; when
// the record is lost (a crash, a failed append: the sender got no
// success), the resend of the same message is admitted, another one is
// judged by the claimed state. A concurrent writer that changes the state
// between read and write makes the loser read again.
func TestAdmitMPPSCrashAndRace(t *testing.T) {
	ctx := context.Background()
	s := &memSteps{m: map[string][]byte{}, rev: map[string]uint64{}}
	create := &ingest.MPPSUpdate{SOPInstanceUID: "1.2.3", Create: true, Status: ingest.MPPSInProgress, StudyInstanceUIDs: []string{"1.2"}}
	completed := &ingest.MPPSUpdate{SOPInstanceUID: "1.2.3", Status: ingest.MPPSCompleted}
	discontinued := &ingest.MPPSUpdate{SOPInstanceUID: "1.2.3", Status: ingest.MPPSDiscontinued}
	for _, tc := range []struct {
		what string
		u    *ingest.MPPSUpdate
		want dimse.Status
	}{
		{"N-CREATE", create, dimse.StatusSuccess},
		{"N-SET COMPLETED (then the daemon dies before recording it)", completed, dimse.StatusSuccess},
		{"N-SET COMPLETED resent", completed, dimse.StatusSuccess},
		{"N-SET DISCONTINUED", discontinued, dimse.StatusProcessingFailure},
		{"N-CREATE resent after the step moved on", create, dimse.StatusDuplicateSOPInstance},
	} {
		if got := statusOf(Admit(ctx, s, tc.u)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, got, tc.want)
		}
	}

	// Race: N-SET COMPLETED reads IN PROGRESS, then another process
	// writes DISCONTINUED before it: COMPLETED must lose and be refused.
	s = &memSteps{m: map[string][]byte{}, rev: map[string]uint64{}}
	if err := Admit(ctx, s, create); err != nil {
		t.Fatal(err)
	}
	s.before = func() {
		if err := Admit(ctx, s, discontinued); err != nil {
			t.Errorf("the racing DISCONTINUED: %v", err)
		}
	}
	if got := statusOf(Admit(ctx, s, completed)); got != dimse.StatusProcessingFailure {
		t.Errorf("COMPLETED that lost the race to DISCONTINUED: %v, want 0110", got)
	}
}

// The state of an MPPS step is stored as JSON in the RADBRIDGE_MPPS bucket
// and judged by later releases (a resend after an upgrade must still be
// recognised). mpps-step-v1.json is the format as first stored.
func TestMPPSStepStoredFormat(t *testing.T) {
	want := step{Status: ingest.MPPSInProgress, Last: "mpps:1.2.3.8:91e13e6a68135a55"}
	b, err := os.ReadFile(filepath.Join("testdata", "mpps-step-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got step
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("decoded stored step = %+v, want %+v", got, want)
	}
	if enc := stepJSON(want); !bytes.Equal(enc, bytes.TrimSpace(b)) {
		t.Errorf("a step encodes as\n%s\nnot as stored by the first release:\n%s", enc, b)
	}
}
