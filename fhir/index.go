package fhir

import (
	"cmp"
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	rbv1 "radbridge/proto/radbridge/v1"
)

// Resource types served.
const (
	typeStudy   = "ImagingStudy"
	typeReport  = "DiagnosticReport"
	typeRequest = "ServiceRequest"
)

func served(typ string) bool { return typ == typeStudy || typ == typeReport || typ == typeRequest }

// ident is a FHIR Identifier (system, value).
type ident struct{ system, value string }

// version is one version of a resource: the event that carried it, and
// the values the search parameters match.
type version struct {
	seq        uint64
	unixNano   int64 // the event's time
	patient    string
	status     string
	subject    ident
	modalities []string
	ids        []ident
	basedOn    []string // ServiceRequest ids
}

func (v *version) time() time.Time { return time.Unix(0, v.unixNano).UTC() }

// entry is a resource and every version of it seen, oldest first.
type entry struct {
	typ, id  string
	versions []version
	// patients and idents are the byPatient and byIdent keys it is
	// listed under.
	patients, idents []string
	// trimmed is the horizon it was last trimmed to.
	trimmed uint64
}

type resKey struct{ typ, id string }

// at returns the version current at event sequence n, or nil.
func (e *entry) at(n uint64) *version {
	i := sort.Search(len(e.versions), func(i int) bool { return e.versions[i].seq > n })
	if i == 0 {
		return nil
	}
	return &e.versions[i-1]
}

// index follows the event log and keeps, per resource, its versions and
// their search values (not the resources: those are read back from the
// event log by sequence). Keyed by resource, by patient and by identifier
// value, so a search touches the candidates of its patient or identifier,
// never every resource.
type index struct {
	mu  sync.RWMutex
	pos uint64 // every event up to pos is indexed
	// horizon: versions superseded at or before it are dropped, so a
	// search as of an older sequence (a cursor) cannot be answered.
	horizon   uint64
	nextSweep uint64
	// superseded lists the versions kept that a later one superseded,
	// oldest first, by the sequence of the version that superseded each
	// (from index head on): what a sweep may drop.
	superseded []supersession
	head       int
	// moved is closed and replaced whenever pos moves.
	moved     chan struct{}
	byKey     map[resKey]*entry
	byPatient map[string][]*entry // patient id → resources that ever had a version of it
	byIdent   map[string][]*entry // identifier value → resources
	byType    map[string][]*entry // resource type → every resource
	// strs interns the strings many versions repeat (patient ids,
	// statuses, systems, codes).
	strs map[string]string
}

func newIndex() *index {
	return &index{nextSweep: PagingWindow, moved: make(chan struct{}), byKey: map[resKey]*entry{}, byPatient: map[string][]*entry{},
		byIdent: map[string][]*entry{}, byType: map[string][]*entry{}, strs: map[string]string{}}
}

func (x *index) intern(s string) string {
	if v, ok := x.strs[s]; ok {
		return v
	}
	if len(x.strs) < 1<<20 {
		x.strs[s] = s
	}
	return s
}

// listUnder adds e to m[k] unless e is listed there already (*seen holds
// the keys e is listed under).
func listUnder(m map[string][]*entry, k string, e *entry, seen *[]string) {
	if slices.Contains(*seen, k) {
		return
	}
	*seen = append(*seen, k)
	m[k] = append(m[k], e)
}

// add indexes ev (events must come in sequence order; older ones are
// ignored).
func (x *index) add(ev *rbv1.Event) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if ev.GetSequence() <= x.pos {
		return
	}
	x.pos = ev.GetSequence()
	close(x.moved)
	x.moved = make(chan struct{})
	if ev.GetType() == rbv1.EventType_IMAGING_STUDY_VIEWED || !served(ev.GetResourceType()) || ev.GetResourceId() == "" || ev.GetResource() == nil {
		return
	}
	v := x.versionOf(ev)
	k := resKey{x.intern(ev.GetResourceType()), ev.GetResourceId()}
	e := x.byKey[k]
	if e == nil {
		e = &entry{typ: k.typ, id: k.id}
		x.byKey[k] = e
		x.byType[e.typ] = append(x.byType[e.typ], e)
	}
	if n := len(e.versions); n > 0 {
		// Versions of a resource mostly repeat its search values: share
		// the previous version's slices (never changed once stored).
		last := &e.versions[n-1]
		if slices.Equal(v.ids, last.ids) {
			v.ids = last.ids
		}
		if slices.Equal(v.modalities, last.modalities) {
			v.modalities = last.modalities
		}
		if slices.Equal(v.basedOn, last.basedOn) {
			v.basedOn = last.basedOn
		}
		x.superseded = append(x.superseded, supersession{v.seq, e})
	}
	e.versions = append(e.versions, v)
	listUnder(x.byPatient, v.patient, e, &e.patients)
	for _, id := range v.ids {
		listUnder(x.byIdent, id.value, e, &e.idents)
	}
	if x.pos >= x.nextSweep || len(x.superseded)-x.head > SupersededKept {
		x.sweep()
	}
}

// PagingWindow is how many events a search's cursor outlives at most: its
// pages are answered as of its first page's sequence while fewer than this
// many events have been appended since, and while the versions current
// then are still kept (see SupersededKept); later, the next page is 410
// Gone (search again).
const PagingWindow = 1 << 18

// SupersededKept bounds the superseded versions kept in memory (for the
// cursors of searches still paging): when more were superseded within
// PagingWindow, the oldest are dropped down to half of it, and cursors
// older than the newest dropped are expired. 200–300 bytes each (less
// when a version repeats its resource's identifiers, modalities and
// orders, as a report sent again does).
const SupersededKept = 1 << 15

// supersession says that a version of e was superseded at sequence seq
// (by the version with that sequence).
type supersession struct {
	seq uint64
	e   *entry
}

// sweep raises the horizon to the start of the paging window, or higher
// to keep at most half of SupersededKept superseded versions, and drops
// the versions superseded at or before it (each resource keeps its
// version current at the horizon and every later one).
func (x *index) sweep() {
	x.nextSweep = x.pos + PagingWindow/4
	h := x.horizon
	if x.pos > PagingWindow {
		h = max(h, x.pos-PagingWindow)
	}
	if live := len(x.superseded) - x.head; live > SupersededKept/2 {
		h = max(h, x.superseded[len(x.superseded)-SupersededKept/2-1].seq)
	}
	x.horizon = h
	for x.head < len(x.superseded) && x.superseded[x.head].seq <= h {
		e := x.superseded[x.head].e
		x.superseded[x.head] = supersession{}
		x.head++
		if e.trimmed == h {
			continue
		}
		e.trimmed = h
		j := sort.Search(len(e.versions), func(i int) bool { return e.versions[i].seq > h })
		if j > 1 {
			e.versions = slices.Clone(e.versions[j-1:])
		}
	}
	if x.head > len(x.superseded)/2 {
		x.superseded = slices.Clone(x.superseded[x.head:])
		x.head = 0
	}
}

// expired reports whether a search as of seq can no longer be answered.
func (x *index) expired(seq uint64) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return seq < x.horizon
}

// versionOf extracts the search values of an event's resource.
func (x *index) versionOf(ev *rbv1.Event) version {
	v := version{seq: ev.GetSequence(), patient: x.intern(ev.GetPatientId())}
	if t := ev.GetTime(); t != nil {
		v.unixNano = t.AsTime().Truncate(time.Microsecond).UnixNano()
	}
	fields := ev.GetResource().GetFields()
	v.status = x.intern(fields["status"].GetStringValue())
	if s := fields["subject"].GetStructValue().GetFields()["identifier"].GetStructValue().GetFields(); s != nil {
		v.subject = ident{x.intern(s["system"].GetStringValue()), x.intern(s["value"].GetStringValue())}
	}
	for _, m := range fields["modality"].GetListValue().GetValues() {
		if c := m.GetStructValue().GetFields()["code"].GetStringValue(); c != "" {
			v.modalities = append(v.modalities, x.intern(c))
		}
	}
	for _, i := range fields["identifier"].GetListValue().GetValues() {
		f := i.GetStructValue().GetFields()
		if val := f["value"].GetStringValue(); val != "" {
			v.ids = append(v.ids, ident{x.intern(f["system"].GetStringValue()), strings.Clone(val)})
		}
	}
	for _, b := range fields["basedOn"].GetListValue().GetValues() {
		if id, ok := strings.CutPrefix(b.GetStructValue().GetFields()["reference"].GetStringValue(), typeRequest+"/"); ok {
			v.basedOn = append(v.basedOn, strings.Clone(id))
		}
	}
	return v
}

// position returns the newest event sequence indexed.
func (x *index) position() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.pos
}

// await waits until every event up to seq is indexed, or ctx ends.
func (x *index) await(ctx context.Context, seq uint64) error {
	for {
		x.mu.RLock()
		pos, moved := x.pos, x.moved
		x.mu.RUnlock()
		if pos >= seq {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// hit is a resource version a search matched.
type hit struct {
	e *entry
	v *version // immutable: versions are appended or cloned, never changed
}

// lookup returns the version of Type/id current at n, if any.
func (x *index) lookup(typ, id string, n uint64) (version, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.byKey[resKey{typ, id}]
	if e == nil {
		return version{}, false
	}
	v := e.at(n)
	if v == nil {
		return version{}, false
	}
	return *v, true
}

// search returns the resources of q.typ, as of event sequence n, that
// match q and that allowed accepts (by patient), sorted by q; false if
// the versions current at n are no longer kept (n is before the horizon).
func (x *index) search(q *query, n uint64, allowed func(patient string) bool) ([]hit, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if n < x.horizon {
		return nil, false
	}
	// Candidates: the smallest set the query names.
	var cands []*entry
	switch {
	case len(q.ids) > 0:
		for _, id := range q.ids {
			if e := x.byKey[resKey{q.typ, id}]; e != nil && !slices.Contains(cands, e) {
				cands = append(cands, e)
			}
		}
	case q.patient != "":
		cands = x.byPatient[q.patient]
	case len(q.identifiers) == 1:
		cands = x.byIdent[q.identifiers[0].value]
	default:
		cands = x.byType[q.typ]
	}
	var out []hit
	for _, e := range cands {
		if e.typ != q.typ || (len(q.ids) > 0 && !slices.Contains(q.ids, e.id)) {
			continue
		}
		v := e.at(n)
		if v == nil || !allowed(v.patient) || !q.match(v) {
			continue
		}
		out = append(out, hit{e, v})
	}
	slices.SortFunc(out, func(a, b hit) int {
		if q.ascending {
			return cmp.Compare(a.v.seq, b.v.seq)
		}
		return cmp.Compare(b.v.seq, a.v.seq)
	})
	return out, true
}

// match reports whether v matches every parameter of q but the type.
func (q *query) match(v *version) bool {
	if q.patient != "" && v.patient != q.patient {
		return false
	}
	if q.subject != nil && v.subject != *q.subject && !(q.subject.system == "" && q.subject.value == v.subject.value) {
		return false
	}
	if len(q.statuses) > 0 && !slices.Contains(q.statuses, v.status) {
		return false
	}
	if len(q.modalities) > 0 && !slices.ContainsFunc(v.modalities, func(m string) bool { return slices.Contains(q.modalities, m) }) {
		return false
	}
	if len(q.identifiers) > 0 && !slices.ContainsFunc(v.ids, func(id ident) bool {
		return slices.ContainsFunc(q.identifiers, func(w identQuery) bool { return w.matches(id) })
	}) {
		return false
	}
	if len(q.basedOn) > 0 && !slices.ContainsFunc(v.basedOn, func(b string) bool { return slices.Contains(q.basedOn, b) }) {
		return false
	}
	for _, c := range q.lastUpdated {
		if !c.matches(v.time()) {
			return false
		}
	}
	return true
}

// resourceJSON renders an event's resource with meta.versionId and
// meta.lastUpdated of its version.
func resourceJSON(ev *rbv1.Event) (map[string]any, error) {
	m := ev.GetResource().AsMap()
	meta, _ := m["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["versionId"] = versionID(ev.GetSequence())
	if t := ev.GetTime(); t != nil {
		meta["lastUpdated"] = fhirInstant(t.AsTime())
	}
	m["meta"] = meta
	return m, nil
}
