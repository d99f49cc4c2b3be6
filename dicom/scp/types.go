package scp

import (
	"context"
	"fmt"
	"radbridge/dicom/dimse"
	"radbridge/ingest"
)

// Handler records what the SCP receives. The SCP answers success only after
// the handler returned nil, so a handler must have durably recorded the
// observation by then. A resent SOP Instance UID is the handler's business
// (it should count as success). An error is answered with a failure status:
// a *StatusError chooses it (its Comment is the Error Comment), any other
// error gives A700 (out of resources, the sender may retry) with a fixed
// Error Comment, the error being logged, never sent.
type Handler interface {
	// StoreInstance is called once per C-STORE whose data set header parsed.
	StoreInstance(ctx context.Context, inst *ingest.Instance) error
	// InstanceAvailability is called per N-CREATE of an Instance
	// Availability Notification (PS3.4 annex R, IHE RAD-49).
	InstanceAvailability(ctx context.Context, ian *ingest.IAN) error
	// MPPS is called per N-CREATE or N-SET of a Modality Performed
	// Procedure Step (PS3.4 annex F.7).
	MPPS(ctx context.Context, u *ingest.MPPSUpdate) error
}

// StatusError lets a Handler choose the DIMSE status of its failure.
type StatusError struct {
	Status  dimse.Status
	Comment string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("DIMSE status %v: %s", e.Status, e.Comment)
}

// Sampler may keep some received instances in memory when no StoreDir
// holds them (for previews). It must never block: the C-STORE answer
// does not wait for it, and nothing it does changes that answer.
type Sampler interface {
	// Want is asked once an instance's header parsed: keep this
	// instance, of at most max bytes? A yes is a reservation that Take
	// ends.
	Want(inst *ingest.Instance) (max int, ok bool)
	// Take ends a reservation: part10 is the instance as a Part-10 file
	// once it was recorded, or nil (too large, not recorded).
	Take(inst *ingest.Instance, part10 []byte)
}
