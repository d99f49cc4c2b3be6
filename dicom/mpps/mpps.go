// Package mpps admits Modality Performed Procedure Step messages (DICOM
// PS3.4 annex F, N-CREATE and N-SET) by the state machine of PS3.4 F.7,
// over the durable state of each step (the store's RADBRIDGE_MPPS
// bucket, JSON as step encodes it).
package mpps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"radbridge/dicom/dimse"
	"radbridge/dicom/scp"
	"radbridge/ingest"
	"radbridge/store"
)

// Steps keeps the state of each MPPS step the SCP accepted (the
// store's RADBRIDGE_MPPS bucket). Get returns nil for an unknown step;
// Create and Update fail with store.ErrStepChanged when the step was
// created or changed since it was read.
type Steps interface {
	Get(ctx context.Context, uid string) (state []byte, rev uint64, err error)
	Create(ctx context.Context, uid string, state []byte) error
	Update(ctx context.Context, uid string, state []byte, rev uint64) error
}

// step is the state of one Modality Performed Procedure Step, stored as
// JSON and judged by later releases (testdata/mpps-step-v1.json).
type step struct {
	// Status is IN PROGRESS, COMPLETED or DISCONTINUED.
	Status string `json:"status"`
	// Last is the content digest of the last message accepted, so that
	// its resend (its response was lost, or recording it failed after the
	// state was written) is accepted again.
	Last string `json:"last"`
}

// Admit applies the state machine of PS3.4 F.7 to an N-CREATE or
// N-SET before it is recorded, and claims the new state with
// compare-and-swap:
//   - N-CREATE (its status is IN PROGRESS: the SCP checked) of a step that
//     exists: 0111 Duplicate SOP Instance;
//   - N-SET of an unknown step: 0112 No such SOP Instance;
//   - N-SET of a COMPLETED or DISCONTINUED step: 0110 Processing failure
//     (the step may no longer be updated), nothing changes;
//   - a message whose content equals the one that made the current state
//     is a resend (a lost response) and is accepted again: the ingest log
//     and the mapper deduplicate it.
//
// The state is written before the observation is recorded. A crash in
// between leaves a state no record explains; the sender got no success
// and resends the same message, which is then accepted and recorded, so a
// legal message is never refused for ever and an illegal one never
// accepted. Two processes racing on one step are ordered by the
// compare-and-swap; the loser reads the new state and is judged by it.
func Admit(ctx context.Context, steps Steps, u *ingest.MPPSUpdate) error {
	digest := ingest.MPPSKey(u) // the content digest, not the peer nor the time
	status := strings.ToUpper(strings.TrimSpace(u.Status))
	for range 8 {
		b, rev, err := steps.Get(ctx, u.SOPInstanceUID)
		if err != nil {
			return err
		}
		var cur *step
		if b != nil {
			cur = &step{}
			if err := json.Unmarshal(b, cur); err != nil {
				return fmt.Errorf("MPPS step state: %w", err)
			}
			if cur.Last == digest {
				return nil
			}
		}
		next := step{Status: status, Last: digest}
		switch {
		case u.Create && cur != nil:
			return &scp.StatusError{Status: dimse.StatusDuplicateSOPInstance, Comment: "MPPS SOP Instance exists (" + cur.Status + ")"}
		case u.Create:
			err = steps.Create(ctx, u.SOPInstanceUID, stepJSON(next))
		case cur == nil:
			return &scp.StatusError{Status: dimse.StatusNoSuchSOPInstance, Comment: "no such MPPS SOP Instance"}
		case cur.Status != ingest.MPPSInProgress:
			return &scp.StatusError{Status: dimse.StatusProcessingFailure, Comment: "Performed Procedure Step may no longer be updated: it is " + cur.Status}
		default:
			if next.Status == "" {
				next.Status = cur.Status
			}
			err = steps.Update(ctx, u.SOPInstanceUID, stepJSON(next), rev)
		}
		if !errors.Is(err, store.ErrStepChanged) {
			return err
		}
	}
	return errors.New("MPPS step changed too often meanwhile")
}

func stepJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings
	}
	return b
}
