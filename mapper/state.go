package mapper

import (
	"encoding/json"
	"log/slog"
	"sort"
	"time"
)

// State is everything the mapper knows. It is a pure function of the ingest
// log prefix it has applied.
type State struct {
	Patients map[string]*Patient `json:"patients"`
	Timers   map[string]*Timer   `json:"timers"`
	// Studies by Study Instance UID (DICOM mapping).
	Studies map[string]*StudyState `json:"studies"`
	// Orders by accession number, or by filler/placer order number when
	// there is none (HL7 mapping).
	Orders map[string]*OrderState `json:"orders"`
	// Accessions lists the resources that carry each accession number.
	Accessions map[string][]ResourceRef `json:"accessions"`
	// Seen is only read: snapshots of older radbridge versions carried
	// the observation keys here; they now live in Config.Seen (or the
	// mapper's memory) and the mapper empties this at start.
	Seen map[string]SeenKey `json:"seen,omitempty"`
	// Applied is the last ingest sequence applied.
	Applied uint64 `json:"applied"`
}

// NewState returns empty state.
func NewState() *State {
	return &State{Patients: map[string]*Patient{}, Timers: map[string]*Timer{},
		Studies: map[string]*StudyState{}, Orders: map[string]*OrderState{}}
}

// Patient is one patient's current imaging, the read model behind
// GetPatientImaging. Resources are FHIR R4 JSON objects keyed by their id.
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

// setResource stores res (a FHIR resource) encoded under id in *m.
func setResource(m *map[string]json.RawMessage, id string, res map[string]any) {
	b, err := json.Marshal(res)
	if err != nil {
		return // unreachable: resources are built from JSON-shaped maps
	}
	if *m == nil {
		*m = map[string]json.RawMessage{}
	}
	(*m)[id] = b
}

// Patient returns the patient with id, creating it.
func (s *State) Patient(id string) *Patient {
	p := s.Patients[id]
	if p == nil {
		p = &Patient{ID: id}
		s.Patients[id] = p
	}
	return p
}

// Timer is a pending wake-up of a rule.
type Timer struct {
	Key  string          `json:"key"`
	Kind string          `json:"kind"` // the rule to wake
	At   time.Time       `json:"at"`
	Body json.RawMessage `json:"body,omitempty"`
}

// nextTimer returns the earliest timer, or nil.
func (s *State) nextTimer() *Timer {
	var ts []*Timer
	for _, t := range s.Timers {
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return nil
	}
	sort.Slice(ts, func(i, j int) bool {
		if !ts[i].At.Equal(ts[j].At) {
			return ts[i].At.Before(ts[j].At)
		}
		return ts[i].Key < ts[j].Key
	})
	return ts[0]
}
