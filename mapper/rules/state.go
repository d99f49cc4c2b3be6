package rules

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

	arch Reloader // faults evicted state back in (nil: everything in memory)
}

// Reloader brings evicted state back into memory: the engine's archive of
// the patients that went cold. The state's accessors ask it before they
// look, so the rules see the state of a mapper that never evicts.
type Reloader interface {
	// FaultIn reloads the evicted patients that may hold the key of kind
	// (a Key constant) into s, unless it is in memory; for KeyMPPS, the
	// patients of the studies an MPPS instance named.
	FaultIn(s *State, kind, key string)
	// At is the log time (Unix milliseconds) of the record being applied.
	At() int64
}

// SetReloader makes r the state's Reloader (nil: everything is in memory).
func (s *State) SetReloader(r Reloader) { s.arch = r }

// The kinds of keys the state's accessors ask a Reloader for.
const (
	KeyPatient   = "p"
	KeyStudy     = "s"
	KeyOrder     = "o"
	KeyAccession = "a"
	KeyMPPS      = "m"
	// KeyStudyOrders indexes State.StudyOrders by Study Instance UID.
	KeyStudyOrders = "u"
)

// Lineage is one stretch of the mapper's history: archive entries of
// timeline ID with an ingest sequence above From (and up to the next
// stretch's From) belong to the state. A run that starts from an empty
// state begins a timeline; one that starts from a snapshot continues its
// timeline, or branches a new one at the snapshot when the mapping options
// or the idle time changed. Entries a crashed run wrote "in the future" of
// the snapshot a restart uses are thus read only when they are those the
// restart writes again, and those of another mapping never.
type Lineage struct {
	ID   string `json:"id"`
	From uint64 `json:"from"`
	// Cfg fingerprints the mapping options and idle time of the stretch.
	Cfg string `json:"cfg"`
}

// SeenKey records a first sighting of an observation key (the
// engine's dedup; snapshots of older versions carried them in the state).
type SeenKey struct {
	Seq uint64 `json:"s"`
	// At is the observation's time (Unix milliseconds) as recorded in the
	// ingest log.
	At int64 `json:"t"`
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
		s.Active[id] = s.arch.At()
	}
}

// patient returns the patient with id, or nil.
func (s *State) patient(id string) *readmodel.Patient {
	if s.arch != nil {
		s.arch.FaultIn(s, KeyPatient, id)
	}
	s.active(id)
	return s.Patients[id]
}

// study returns the study with uid, or nil.
func (s *State) study(uid string) *StudyState {
	if s.arch != nil {
		s.arch.FaultIn(s, KeyStudy, uid)
	}
	st := s.Studies[uid]
	if st != nil {
		s.active(st.ReadModelPatient)
	}
	return st
}

// order returns the order with key, or nil.
func (s *State) order(key string) *OrderState {
	if s.arch != nil {
		s.arch.FaultIn(s, KeyOrder, key)
	}
	o := s.Orders[key]
	if o != nil {
		s.active(o.PatientID)
	}
	return o
}

// accession returns the resources that carry accession acc.
func (s *State) accession(acc string) []ResourceRef {
	if s.arch != nil {
		s.arch.FaultIn(s, KeyAccession, acc)
	}
	return s.Accessions[acc]
}

// studyOrders returns the keys of the orders that name Study Instance UID
// uid.
func (s *State) studyOrders(uid string) []string {
	if s.arch != nil {
		s.arch.FaultIn(s, KeyStudyOrders, uid)
	}
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
	s.arch.FaultIn(s, KeyMPPS, uid)
}

// NextTimer returns the earliest timer, or nil.
func (s *State) NextTimer() *ingest.Timer {
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

// sortedMapKeys returns m's keys in order.
func sortedMapKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
