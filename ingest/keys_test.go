package ingest_test

import (
	"testing"
	"time"

	"radbridge/ingest"
)

// TestMPPSKey: MPPSKey is the key of the MPPS observation, the same for a
// resend from another peer at another time, and another for other content.
func TestMPPSKey(t *testing.T) {
	u := &ingest.MPPSUpdate{
		Peer:           ingest.Peer{RemoteAddr: "10.0.0.5:104", CallingAE: "CT1", CalledAE: "RADBRIDGE"},
		SOPInstanceUID: "1.2.3.4", Create: true, Status: ingest.MPPSInProgress,
		StudyInstanceUIDs: []string{"1.2.3"}, AccessionNumbers: []string{"ACC1"}, PatientID: "MRN1",
		ReceivedAt: time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC),
	}
	o, err := ingest.NewMPPS(u)
	if err != nil {
		t.Fatal(err)
	}
	if got := ingest.MPPSKey(u); got != o.Key {
		t.Errorf("MPPSKey = %q, want the observation's key %q", got, o.Key)
	}
	resent := *u
	resent.Peer = ingest.Peer{RemoteAddr: "10.0.0.6:104", CallingAE: "CT2", CalledAE: "RADBRIDGE"}
	resent.ReceivedAt = u.ReceivedAt.Add(time.Hour)
	if got, want := ingest.MPPSKey(&resent), ingest.MPPSKey(u); got != want {
		t.Errorf("resent from another peer later: key %q, want %q", got, want)
	}
	completed := *u
	completed.Create, completed.Status = false, ingest.MPPSCompleted
	if ingest.MPPSKey(&completed) == ingest.MPPSKey(u) {
		t.Errorf("an N-SET COMPLETED has the N-CREATE's key %q", ingest.MPPSKey(u))
	}
}
