package ingest

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// KindSTOWRequest is the end of a STOW-RS request (PS3.18 10.5): the
// instances of one study it stored, recorded after its last part, so the
// mapper can count the study complete then (completion reason stow-rs).
// The body is a STOWRequest.
const KindSTOWRequest = "dicomweb.stow"

// STOWRequest is the body of a KindSTOWRequest observation: one study's
// instances a STOW-RS request stored (each recorded before as a
// KindDICOMInstance).
type STOWRequest struct {
	Peer             Peer     `json:"peer"`
	StudyInstanceUID string   `json:"study_instance_uid"`
	SOPInstanceUIDs  []string `json:"sop_instance_uids"`
}

// stowPrefix is the key prefix of KindSTOWRequest observations.
const stowPrefix = "stow:"

// NewSTOWRequest builds the observation of a STOW-RS request's end for one
// study. The key is the study and a digest of its sorted instances, so a
// resent request is recorded once. At most MaxIANInstances instances (a
// larger request completes by the quiet period): an error beyond.
func NewSTOWRequest(r *STOWRequest, at time.Time) (Observation, error) {
	if len(r.SOPInstanceUIDs) > MaxIANInstances {
		return Observation{}, fmt.Errorf("STOW-RS request of %d instances: more than %d", len(r.SOPInstanceUIDs), MaxIANInstances)
	}
	sops := slices.Clone(r.SOPInstanceUIDs)
	slices.Sort(sops)
	v := *r
	v.SOPInstanceUIDs = sops
	b, err := json.Marshal(v)
	if err != nil {
		return Observation{}, fmt.Errorf("encode stow request: %w", err)
	}
	content, _ := json.Marshal(struct {
		Study string
		SOPs  []string
	}{r.StudyInstanceUID, sops})
	return Observation{
		Kind: KindSTOWRequest, Key: stowPrefix + r.StudyInstanceUID + ":" + digestBytes(content, 8), Time: at.UTC(),
		Source: Source{Protocol: "dicom", Remote: r.Peer.RemoteAddr, CallingAETitle: r.Peer.CallingAE}, Body: b,
	}, nil
}

// DecodeSTOWRequest returns the body of a KindSTOWRequest observation.
func DecodeSTOWRequest(o Observation) (*STOWRequest, error) {
	var v STOWRequest
	return &v, decode(o, KindSTOWRequest, &v)
}
