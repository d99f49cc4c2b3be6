package mapper

import (
	"encoding/json"
	"radbridge/ingest"
	"radbridge/readmodel"
	"slices"
	"sort"
)

// State is everything the mapper knows. It is a pure function of the ingest
// log prefix it has applied.
type State struct {
	Patients map[string]*readmodel.Patient `json:"patients"`
	Timers   map[string]*ingest.Timer      `json:"timers"`
	// Studies by Study Instance UID (DICOM mapping).
	Studies map[string]*StudyState `json:"studies"`
	// Orders by accession number, or by filler/placer order number when
	// there is none (HL7 mapping).
	Orders map[string]*OrderState `json:"orders"`
	// Accessions lists the resources that carry each accession number.
	Accessions map[string][]ResourceRef `json:"accessions"`
	// StudyOrders lists, by Study Instance UID, the keys (as in Orders) of
	// the orders that name the study (IPC-3, ZDS-1).
	StudyOrders map[string][]string `json:"study_orders,omitempty"`
	// Active maps each patient in memory to the log time (Unix ms) of the
	// last observation that touched it, Swept is the log time of the last
	// look for cold patients, and Lineage the archive's timeline: all only
	// with Config.Archive (see Archive).
	Active  map[string]int64 `json:"active,omitempty"`
	Swept   int64            `json:"swept,omitempty"`
	Lineage []Lineage        `json:"lineage,omitempty"`
	// Seen is only read: snapshots of older radbridge versions carried
	// the observation keys here; they now live in Config.Seen (or the
	// mapper's memory) and the mapper empties this at start.
	Seen map[string]SeenKey `json:"seen,omitempty"`
	// Applied is the last ingest sequence applied.
	Applied uint64 `json:"applied"`
	// ResourceIDs is the scheme of order and report ids: 1 for per-patient
	// ids (orders keyed by patient and accession), 0 in a state built by a
	// radbridge before them, which may still hold orders keyed by accession
	// alone (continued under their old ids until a replay from the first
	// record; README, "Upgrading: resource ids").
	ResourceIDs int `json:"resource_ids,omitempty"`

	arch *archiver // faults evicted state back in (nil: everything in memory)
}

// NewState returns empty state.
func NewState() *State {
	return &State{Patients: map[string]*readmodel.Patient{}, Timers: map[string]*ingest.Timer{},
		Studies: map[string]*StudyState{}, Orders: map[string]*OrderState{}, ResourceIDs: 1}
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
func (s *State) Patient(id string) *readmodel.Patient {
	p := s.patient(id)
	if p == nil {
		p = &readmodel.Patient{ID: id}
		s.Patients[id] = p
		s.active(id)
	}
	return p
}

// The accessors below reload evicted state (see Archive) before they look:
// every rule reads the state through them.

// active records that the record being applied touched patient id.
func (s *State) active(id string) {
	if s.arch != nil && s.Patients[id] != nil {
		s.Active[id] = s.arch.at.UnixMilli()
	}
}

// patient returns the patient with id, or nil.
func (s *State) patient(id string) *readmodel.Patient {
	s.arch.faultIn(s, keyPatient, id)
	s.active(id)
	return s.Patients[id]
}

// study returns the study with uid, or nil.
func (s *State) study(uid string) *StudyState {
	s.arch.faultIn(s, keyStudy, uid)
	st := s.Studies[uid]
	if st != nil {
		s.active(st.ReadModelPatient)
	}
	return st
}

// order returns the order with key, or nil.
func (s *State) order(key string) *OrderState {
	s.arch.faultIn(s, keyOrder, key)
	o := s.Orders[key]
	if o != nil {
		s.active(o.PatientID)
	}
	return o
}

// accession returns the resources that carry accession acc.
func (s *State) accession(acc string) []ResourceRef {
	s.arch.faultIn(s, keyAccession, acc)
	return s.Accessions[acc]
}

// studyOrders returns the keys of the orders that name Study Instance UID
// uid.
func (s *State) studyOrders(uid string) []string {
	s.arch.faultIn(s, keyStudyOrders, uid)
	return s.StudyOrders[uid]
}

// setStudyOrder adds (or removes) the order key to the orders naming Study
// Instance UID uid.
func (s *State) setStudyOrder(uid, key string, add bool) {
	keys := s.studyOrders(uid)
	i, found := slices.BinarySearch(keys, key)
	switch {
	case add && !found:
		keys = slices.Insert(slices.Clone(keys), i, key)
	case !add && found:
		keys = slices.Delete(slices.Clone(keys), i, i+1)
	default:
		return
	}
	if s.StudyOrders == nil {
		s.StudyOrders = map[string][]string{}
	}
	if len(keys) == 0 {
		delete(s.StudyOrders, uid)
		return
	}
	s.StudyOrders[uid] = keys
}

// mppsStudies reloads the evicted studies that an MPPS instance named.
func (s *State) mppsStudies(uid string) {
	if s.arch == nil || uid == "" {
		return
	}
	refs, ok := s.arch.refs(keyMPPS, uid)
	if !ok {
		return
	}
	var units []string
	for _, r := range refs {
		units = append(units, r.Unit)
	}
	if len(units) > 0 {
		s.arch.reload(s, units)
	}
}

// nextTimer returns the earliest timer, or nil.
func (s *State) nextTimer() *ingest.Timer {
	var ts []*ingest.Timer
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
