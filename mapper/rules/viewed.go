package rules

import (
	"fmt"
	"time"

	"radbridge/eventlog"
	"radbridge/ingest"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// viewed maps a viewer's IMAGING_STUDY_VIEWED to an event carrying a FHIR R4
// AuditEvent (DICOM "Instances Accessed").
func viewed(c *Context) error {
	v, err := ingest.DecodeViewed(c.Rec.Observation)
	if err != nil {
		return err
	}
	if v.PatientID == "" || v.StudyInstanceUID == "" {
		return fmt.Errorf("viewed: patient id and study uid required")
	}
	id := readmodel.EventID(eventlog.Key{IngestSeq: c.Rec.Seq, Index: len(c.events)})
	agent := map[string]any{"requestor": true}
	if v.Agent != "" {
		// The authenticated subject is the agent; what the client said of
		// its user is extra information (name, altId).
		agent["who"] = map[string]any{
			"identifier": map[string]any{"system": SubjectSystem, "value": v.Agent},
			"display":    v.Agent,
		}
		if v.ViewerName != "" {
			agent["name"] = v.ViewerName
		}
		if v.ViewerID != "" {
			agent["altId"] = v.ViewerID
		}
	} else {
		// A record written before the subject was recorded: the agent is
		// what the client said, as it was mapped then.
		who := map[string]any{}
		if v.ViewerID != "" {
			who["identifier"] = map[string]any{"value": v.ViewerID}
		}
		if v.ViewerName != "" {
			who["display"] = v.ViewerName
		}
		if len(who) == 0 {
			who["display"] = "unknown viewer"
		}
		agent["who"] = who
	}
	study := map[string]any{
		"reference": "ImagingStudy/" + StudyResourceID(v.StudyInstanceUID),
		"identifier": map[string]any{
			"system": "urn:dicom:uid",
			"value":  "urn:oid:" + v.StudyInstanceUID,
		},
	}
	res := map[string]any{
		"resourceType": "AuditEvent",
		"id":           id,
		"type": map[string]any{
			"system":  "http://dicom.nema.org/resources/ontology/DCM",
			"code":    "110103",
			"display": "DICOM Instances Accessed",
		},
		"action":   "R",
		"recorded": c.Rec.Time.UTC().Format(time.RFC3339Nano),
		"outcome":  "0",
		"agent":    []any{agent},
		"source":   map[string]any{"observer": map[string]any{"display": "radbridge"}},
		"entity": []any{
			map[string]any{"what": study},
			map[string]any{"what": map[string]any{"identifier": map[string]any{"value": v.PatientID}}},
		},
	}
	st := toStruct(res)
	if st == nil {
		return fmt.Errorf("viewed resource is not JSON")
	}
	msg := "Imaging study viewed"
	if v.ViewerName != "" {
		msg += " by " + v.ViewerName
	}
	c.Emit(&rbv1.Event{
		Type:             rbv1.EventType_IMAGING_STUDY_VIEWED,
		PatientId:        v.PatientID,
		AccessionNumber:  v.AccessionNumber,
		StudyInstanceUid: v.StudyInstanceUID,
		Severity:         rbv1.Severity_SEVERITY_INFO,
		Message:          msg,
		ResourceType:     "AuditEvent",
		ResourceId:       id,
		Resource:         st,
	})
	p := c.State.Patient(v.PatientID)
	if p.Views == nil {
		p.Views = map[string]uint32{}
	}
	p.Views[v.StudyInstanceUID]++
	c.Touch(v.PatientID)
	return nil
}

// SubjectSystem is the identifier system of an AuditEvent agent that is an
// authenticated API client (the token's subject).
const SubjectSystem = "urn:radbridge:subject"

// StudyResourceID is the FHIR id of the ImagingStudy for a Study Instance
// UID: DICOM UIDs (digits and dots, at most 64) are valid FHIR ids.
func StudyResourceID(uid string) string { return uid }

// Viewed is the rule of ingest.KindViewed (IMAGING_STUDY_VIEWED published
// through the API); the mapper always has it.
var Viewed Rule = RuleFunc(viewed)
