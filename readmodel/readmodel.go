// Package readmodel holds what the mapper publishes for the serving side to
// read: a patient's read model (the durable JSON stored per patient and
// served by GetPatientImaging and the FHIR API), the stable ids of events,
// and how a reader recognises a critical report. The mapper writes these;
// api, fhir and store read them without depending on the mapper.
package readmodel

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"radbridge/eventlog"
)

// Patient is one patient's current imaging, the read model behind
// GetPatientImaging. Resources are FHIR R4 JSON objects keyed by their id.
// Its JSON encoding is durable: read models are stored in it.
type Patient struct {
	ID string `json:"id"`
	// LastSequence is the sequence of the newest event about this patient.
	LastSequence uint64 `json:"last_sequence"`
	// Resources are kept encoded: compact in memory and written as they are.
	Studies map[string]json.RawMessage `json:"studies,omitempty"`
	Orders  map[string]json.RawMessage `json:"orders,omitempty"`
	Reports map[string]json.RawMessage `json:"reports,omitempty"`
	// BodyRegions counts studies per body region.
	BodyRegions map[string]uint32 `json:"body_regions,omitempty"`
	// Views counts IMAGING_STUDY_VIEWED events per study.
	Views map[string]uint32 `json:"views,omitempty"`
}

// LogValue keeps patient data out of logs.
func (p *Patient) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("studies", len(p.Studies)), slog.Int("orders", len(p.Orders)), slog.Int("reports", len(p.Reports)))
}

// Writer stores patients' read models (GetPatientImaging reads them).
type Writer interface {
	PutPatient(ctx context.Context, p *Patient) error
}

// FencedWriter is a Writer that is also told the ingest sequence the
// written state was applied to, so it can refuse a write older than the one
// it holds (a paused cluster leader waking up after its successor wrote).
type FencedWriter interface {
	PutPatientAt(ctx context.Context, p *Patient, applied uint64) error
}

// ErrSuperseded is a FencedWriter's answer to a write older than the
// read model it holds; the write was dropped.
var ErrSuperseded = errors.New("a newer read model is stored (written by another mapper)")

// EventID is the stable id of the event with key k.
func EventID(k eventlog.Key) string {
	h := sha1.Sum([]byte("radbridge/event/" + k.MsgID()))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// ErrForgotten means the events of an ingest sequence are no longer kept in
// memory.
var ErrForgotten = errors.New("mapper: result no longer in memory")

// InterpretationSystem is FHIR R4's v3 ObservationInterpretation code
// system, of the interpretation of a critical finding.
const InterpretationSystem = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

// CriticalFlags are the abnormal flags (HL7 table 0078, OBX-8) of a
// critical result, with their FHIR display.
var CriticalFlags = map[string]string{"AA": "Critical abnormal", "HH": "Critical high", "LL": "Critical low"}

// CriticalReport reports whether a DiagnosticReport carries a critical
// result: a contained Observation interpreted HH, LL or AA.
func CriticalReport(dr map[string]any) bool {
	cs, _ := dr["contained"].([]any)
	for _, c := range cs {
		o, _ := c.(map[string]any)
		if o["resourceType"] != "Observation" {
			continue
		}
		is, _ := o["interpretation"].([]any)
		for _, i := range is {
			cc, _ := i.(map[string]any)
			codings, _ := cc["coding"].([]any)
			for _, x := range codings {
				cd, _ := x.(map[string]any)
				if _, ok := CriticalFlags[fmt.Sprint(cd["code"])]; ok && cd["system"] == InterpretationSystem {
					return true
				}
			}
		}
	}
	return false
}
