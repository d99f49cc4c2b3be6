package mapper

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"radbridge/mapper/rules"
	"radbridge/readmodel"
)

// Archive keeps the state of patients that went cold, so the mapper holds
// in memory only the patients observed within Config.StateIdle (by the
// times recorded in the ingest log). A patient is evicted with its studies,
// orders and accession entries, and reloaded when an observation names it
// again (by patient id, Study Instance UID, order key, accession number or
// MPPS instance), so the events and read models are those of a mapper that
// never evicts.
//
// Keys are made of [-_.A-Za-z0-9] (what a JetStream key-value bucket
// allows), and few: one per patient ever evicted, whose values are its
// versions, each labelled with the ingest sequence at which it was evicted
// and the mapper's timeline (see rules.Lineage); and 65,536 index shards whose
// entries only grow (unions).
type Archive interface {
	// GetArchive returns the newest value at key, nil when there is none.
	GetArchive(ctx context.Context, key string) ([]byte, error)
	// ArchiveHistory returns the values kept at key, oldest first (at
	// least the newest ArchiveVersions).
	ArchiveHistory(ctx context.Context, key string) ([][]byte, error)
	// PutArchive stores value as the newest at key.
	PutArchive(ctx context.Context, key string, value []byte) error
	// MergeArchive replaces the value at key (nil when none) by merge's,
	// atomically against other writers.
	MergeArchive(ctx context.Context, key string, merge func(old []byte) []byte) error
}

// ArchiveVersions is how many values an Archive keeps per key: a patient's
// versions are one key, and a restart from an older snapshot needs the
// version before the few evictions a crashed run made after it.
const ArchiveVersions = 8

// MemoryArchive is an in-memory Archive (tests, read-only replays).
type MemoryArchive struct {
	mu sync.Mutex
	m  map[string][][]byte
}

// GetArchive implements Archive.
func (a *MemoryArchive) GetArchive(_ context.Context, key string) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if vs := a.m[key]; len(vs) > 0 {
		return slices.Clone(vs[len(vs)-1]), nil
	}
	return nil, nil
}

// ArchiveHistory implements Archive.
func (a *MemoryArchive) ArchiveHistory(_ context.Context, key string) ([][]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out [][]byte
	for _, v := range a.m[key] {
		out = append(out, slices.Clone(v))
	}
	return out, nil
}

func (a *MemoryArchive) put(key string, value []byte) {
	if a.m == nil {
		a.m = map[string][][]byte{}
	}
	vs := append(a.m[key], slices.Clone(value))
	if len(vs) > ArchiveVersions {
		vs = vs[len(vs)-ArchiveVersions:]
	}
	a.m[key] = vs
}

// PutArchive implements Archive.
func (a *MemoryArchive) PutArchive(_ context.Context, key string, value []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.put(key, value)
	return nil
}

// MergeArchive implements Archive.
func (a *MemoryArchive) MergeArchive(_ context.Context, key string, merge func(old []byte) []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var old []byte
	if vs := a.m[key]; len(vs) > 0 {
		old = vs[len(vs)-1]
	}
	a.put(key, merge(slices.Clone(old)))
	return nil
}

// Len is the number of keys stored.
func (a *MemoryArchive) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}

// OverlayArchive reads Base under what was written to it, and writes only
// to memory: a dry run sees the daemon's archive and changes nothing.
type OverlayArchive struct {
	Base Archive
	mem  MemoryArchive
}

// GetArchive implements Archive.
func (a *OverlayArchive) GetArchive(ctx context.Context, key string) ([]byte, error) {
	if b, _ := a.mem.GetArchive(ctx, key); b != nil {
		return b, nil
	}
	return a.Base.GetArchive(ctx, key)
}

// ArchiveHistory implements Archive: Base's, then what was written here.
func (a *OverlayArchive) ArchiveHistory(ctx context.Context, key string) ([][]byte, error) {
	base, err := a.Base.ArchiveHistory(ctx, key)
	if err != nil {
		return nil, err
	}
	mine, _ := a.mem.ArchiveHistory(ctx, key)
	return append(base, mine...), nil
}

// PutArchive implements Archive.
func (a *OverlayArchive) PutArchive(ctx context.Context, key string, value []byte) error {
	return a.mem.PutArchive(ctx, key, value)
}

// MergeArchive implements Archive.
func (a *OverlayArchive) MergeArchive(ctx context.Context, key string, merge func(old []byte) []byte) error {
	old, err := a.GetArchive(ctx, key)
	if err != nil {
		return err
	}
	return a.mem.PutArchive(ctx, key, merge(old))
}

// indexRef says that unit (a patient id) was evicted at ingest sequence
// Seq on timeline T carrying the key indexed.
type indexRef struct {
	Unit string `json:"u"`
	Seq  uint64 `json:"s"`
	T    string `json:"t"`
}

// unitVersion is a patient as evicted, with the objects that left memory
// with it.
type unitVersion struct {
	Patient    *readmodel.Patient             `json:"patient"`
	Studies    map[string]*rules.StudyState   `json:"studies,omitempty"`
	Orders     map[string]*rules.OrderState   `json:"orders,omitempty"`
	Accessions map[string][]rules.ResourceRef `json:"accessions,omitempty"`
	// StudyOrders are the rules.State.StudyOrders entries whose orders left.
	StudyOrders map[string][]string `json:"study_orders,omitempty"`
}

func archiveHash(kind, key string) string {
	sum := sha256.Sum256([]byte(kind + ":" + key))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// indexSlot returns the index shard of a key and its id there: the index
// is spread over 65,536 entries by the first 16 bits of a SHA-256 (one
// entry per key would cost the JetStream server a few hundred bytes of
// memory each, for ever), each mapping 96 more bits to the key's refs.
func indexSlot(kind, key string) (shard, id string) {
	sum := sha256.Sum256([]byte(kind + ":" + key))
	return fmt.Sprintf("i.%02x%02x", sum[0], sum[1]), base64.RawURLEncoding.EncodeToString(sum[2:14])
}

// versionKey is the key of a patient's versions (one value per eviction).
func versionKey(unit string) string { return "v." + archiveHash(rules.KeyPatient, unit) }

// storedVersion is a value at a versionKey.
type storedVersion struct {
	Seq uint64       `json:"s"`
	T   string       `json:"t"`
	V   *unitVersion `json:"v"`
}

// archiver faults evicted state back in and evicts cold patients. It is
// used on the mapper's goroutine only.
type archiver struct {
	m     *Mapper
	store Archive
	ctx   context.Context
	// seq and at are the ingest record being applied.
	seq uint64
	at  time.Time
	// err is set when the store failed until the mapper stopped; the
	// record is then not finished.
	err     error
	lineage []rules.Lineage
	// Counters (for Stats).
	evicted, reloaded uint64
}

// retry runs f until it succeeds or the mapper stops (then a.err is set).
func (a *archiver) retry(what string, f func() error) bool {
	if a.err != nil {
		return false
	}
	a.err = a.m.retry(a.ctx, "state archive: "+what, a.seq, f)
	return a.err == nil
}

func (a *archiver) get(key string) ([]byte, bool) {
	var b []byte
	ok := a.retry("read", func() (err error) {
		b, err = a.store.GetArchive(a.ctx, key)
		return err
	})
	return b, ok
}

func (a *archiver) put(key string, b []byte) bool {
	return a.retry("write", func() error { return a.store.PutArchive(a.ctx, key, b) })
}

// version reads the version of unit evicted at r.
func (a *archiver) version(unit string, r indexRef) (*unitVersion, bool) {
	k := versionKey(unit)
	match := func(b []byte) *unitVersion {
		var sv storedVersion
		if b != nil && json.Unmarshal(b, &sv) == nil && sv.Seq == r.Seq && sv.T == r.T {
			return sv.V
		}
		return nil
	}
	b, ok := a.get(k)
	if !ok {
		return nil, false
	}
	if v := match(b); v != nil {
		return v, true
	}
	// An older one (the newest was written after the snapshot this run
	// started from).
	var hist [][]byte
	if !a.retry("read", func() (err error) {
		hist, err = a.store.ArchiveHistory(a.ctx, k)
		return err
	}) {
		return nil, false
	}
	for i := len(hist) - 1; i >= 0; i-- {
		if v := match(hist[i]); v != nil {
			return v, true
		}
	}
	return nil, true
}

// valid reports whether an index entry belongs to the state at the record
// being applied.
func (a *archiver) valid(r indexRef) bool {
	if r.Seq > a.seq {
		return false
	}
	for i, l := range a.lineage {
		if l.ID == r.T && r.Seq > l.From && (i == len(a.lineage)-1 || r.Seq <= a.lineage[i+1].From) {
			return true
		}
	}
	return false
}

// refs returns the valid entries of an index key.
func (a *archiver) refs(kind, key string) ([]indexRef, bool) {
	shard, id := indexSlot(kind, key)
	b, ok := a.get(shard)
	if !ok || b == nil {
		return nil, ok
	}
	var m map[string][]indexRef
	if err := json.Unmarshal(b, &m); err != nil {
		a.m.log.Error("state archive: unreadable index entry ignored", "err", err)
		return nil, true
	}
	all := m[id]
	var out []indexRef
	for _, r := range all {
		if a.valid(r) {
			out = append(out, r)
		}
	}
	return out, true
}

// addRefs merges refs (by kind+":"+key) into their index shards.
func (a *archiver) addRefs(add map[string][]indexRef) bool {
	byShard := map[string]map[string][]indexRef{}
	for k, refs := range add {
		kind, key, _ := cutKind(k)
		shard, id := indexSlot(kind, key)
		if byShard[shard] == nil {
			byShard[shard] = map[string][]indexRef{}
		}
		byShard[shard][id] = append(byShard[shard][id], refs...)
	}
	for _, shard := range slices.Sorted(maps.Keys(byShard)) {
		in := byShard[shard]
		if !a.retry("write", func() error {
			return a.store.MergeArchive(a.ctx, shard, func(old []byte) []byte {
				m := map[string][]indexRef{}
				if old != nil && json.Unmarshal(old, &m) != nil {
					m = map[string][]indexRef{} // unreadable: rebuilt from what follows
				}
				for id, refs := range in {
					all := m[id]
					for _, r := range refs {
						if !slices.Contains(all, r) {
							all = append(all, r)
						}
					}
					sort.Slice(all, func(i, j int) bool {
						if all[i].Seq != all[j].Seq {
							return all[i].Seq < all[j].Seq
						}
						if all[i].Unit != all[j].Unit {
							return all[i].Unit < all[j].Unit
						}
						return all[i].T < all[j].T
					})
					m[id] = all
				}
				b, _ := json.Marshal(m)
				return b
			})
		}) {
			return false
		}
	}
	return true
}

// faultIn reloads the evicted patients that may hold the key (kind, key)
// unless it is in memory.
func (a *archiver) faultIn(s *rules.State, kind, key string) {
	if a == nil || a.err != nil || key == "" {
		return
	}
	switch kind {
	case rules.KeyPatient:
		if s.Patients[key] != nil {
			return
		}
	case rules.KeyStudy:
		if s.Studies[key] != nil {
			return
		}
	case rules.KeyOrder:
		if s.Orders[key] != nil {
			return
		}
	case rules.KeyAccession:
		if _, ok := s.Accessions[key]; ok {
			return
		}
	case rules.KeyStudyOrders:
		if _, ok := s.StudyOrders[key]; ok {
			return
		}
	}
	refs, ok := a.refs(kind, key)
	if !ok || len(refs) == 0 {
		return
	}
	var units []string
	for _, r := range refs {
		units = append(units, r.Unit)
	}
	a.reload(s, units)
}

// FaultIn implements rules.Reloader.
func (a *archiver) FaultIn(s *rules.State, kind, key string) {
	if kind == rules.KeyMPPS {
		a.mppsStudies(s, key)
		return
	}
	a.faultIn(s, kind, key)
}

// At implements rules.Reloader.
func (a *archiver) At() int64 { return a.at.UnixMilli() }

// mppsStudies reloads the patients of the evicted studies that MPPS
// instance uid named.
func (a *archiver) mppsStudies(s *rules.State, uid string) {
	refs, ok := a.refs(rules.KeyMPPS, uid)
	if !ok {
		return
	}
	var units []string
	for _, r := range refs {
		units = append(units, r.Unit)
	}
	if len(units) > 0 {
		a.reload(s, units)
	}
}

// objCopy is an evicted object found in a version, with the sequence of
// the eviction that wrote it.
type objCopy struct {
	seq uint64
	v   any
}

// reload brings units back into memory with every object that left with
// them. An object that left with several patients (an accession of two
// patients), or a stale copy of one that moved to another patient, is
// taken from the newest eviction that carried it: the index of each object
// found names every patient it ever left with, and those are read too.
func (a *archiver) reload(s *rules.State, units []string) {
	queue := slices.Clone(units)
	seenUnit, seenKey := map[string]bool{}, map[string]bool{}
	patients := map[string]*readmodel.Patient{}
	copies := map[string]objCopy{} // kind+":"+key
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		if seenUnit[u] || s.Patients[u] != nil {
			continue
		}
		seenUnit[u] = true
		refs, ok := a.refs(rules.KeyPatient, u)
		if !ok {
			return
		}
		var newest *indexRef
		for i := range refs {
			if refs[i].Unit == u && (newest == nil || refs[i].Seq > newest.Seq) {
				newest = &refs[i]
			}
		}
		if newest == nil {
			continue
		}
		vp, ok := a.version(u, *newest)
		if !ok {
			return
		}
		if vp == nil || vp.Patient == nil {
			a.m.log.Error("state archive: a version of a patient is missing or unreadable; the patient starts empty", "ingest_seq", a.seq)
			continue
		}
		v := *vp
		patients[u] = v.Patient
		found := func(kind, key string, obj any) {
			id := kind + ":" + key
			if c, ok := copies[id]; !ok || newest.Seq > c.seq {
				copies[id] = objCopy{newest.Seq, obj}
			}
			if seenKey[id] {
				return
			}
			seenKey[id] = true
			more, ok := a.refs(kind, key)
			if !ok {
				return
			}
			for _, r := range more {
				queue = append(queue, r.Unit)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(v.Studies)) {
			if s.Studies[k] == nil {
				found(rules.KeyStudy, k, v.Studies[k])
			}
		}
		for _, k := range slices.Sorted(maps.Keys(v.Orders)) {
			if s.Orders[k] == nil {
				found(rules.KeyOrder, k, v.Orders[k])
			}
		}
		for _, k := range slices.Sorted(maps.Keys(v.Accessions)) {
			if _, ok := s.Accessions[k]; !ok {
				found(rules.KeyAccession, k, v.Accessions[k])
			}
		}
		for _, k := range slices.Sorted(maps.Keys(v.StudyOrders)) {
			if _, ok := s.StudyOrders[k]; !ok {
				found(rules.KeyStudyOrders, k, v.StudyOrders[k])
			}
		}
		if a.err != nil {
			return
		}
	}
	if a.err != nil {
		return
	}
	at := a.at.UnixMilli()
	for id, p := range patients {
		s.Patients[id] = p
		s.Active[id] = at
		a.reloaded++
	}
	for id, c := range copies {
		kind, key, _ := cutKind(id)
		switch kind {
		case rules.KeyStudy:
			s.Studies[key] = c.v.(*rules.StudyState)
		case rules.KeyOrder:
			s.Orders[key] = c.v.(*rules.OrderState)
		case rules.KeyAccession:
			if s.Accessions == nil {
				s.Accessions = map[string][]rules.ResourceRef{}
			}
			s.Accessions[key] = c.v.([]rules.ResourceRef)
		case rules.KeyStudyOrders:
			if s.StudyOrders == nil {
				s.StudyOrders = map[string][]string{}
			}
			s.StudyOrders[key] = c.v.([]string)
		}
	}
}

func cutKind(id string) (kind, key string, ok bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == ':' {
			return id[:i], id[i+1:], true
		}
	}
	return "", id, false
}

// sweepEvery is how often (in log time) cold patients are looked for.
func sweepEvery(idle time.Duration) time.Duration { return max(idle/16, time.Second) }

// sweep evicts the patients not observed within idle before the record
// being applied, with the objects that belong to no patient left in
// memory. The versions and index entries are written before the state
// changes. written is called for each evicted patient whose read model may
// not be written yet. It reports false when the mapper stopped first.
func (a *archiver) sweep(s *rules.State, idle time.Duration, written func(p *readmodel.Patient) bool) bool {
	at := a.at.UnixMilli()
	if s.Swept != 0 && at < s.Swept+sweepEvery(idle).Milliseconds() {
		return true
	}
	s.Swept = at
	cut := at - idle.Milliseconds()
	var cold []string
	for _, id := range slices.Sorted(maps.Keys(s.Patients)) {
		t, ok := s.Active[id]
		if !ok {
			// Loaded from a snapshot taken without eviction: idle from now.
			s.Active[id] = at
			continue
		}
		if t < cut {
			cold = append(cold, id)
		}
	}
	if len(cold) == 0 {
		return true
	}
	out := map[string]bool{}
	for _, id := range cold {
		out[id] = true
	}
	t := a.lineage[len(a.lineage)-1].ID
	vs := map[string]*unitVersion{}
	for _, id := range cold {
		vs[id] = &unitVersion{Patient: s.Patients[id]}
	}
	var studies, orders, accs []string
	for _, uid := range slices.Sorted(maps.Keys(s.Studies)) {
		if v := vs[s.Studies[uid].ReadModelPatient]; v != nil {
			if v.Studies == nil {
				v.Studies = map[string]*rules.StudyState{}
			}
			v.Studies[uid] = s.Studies[uid]
			studies = append(studies, uid)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Orders)) {
		if v := vs[s.Orders[k].PatientID]; v != nil {
			if v.Orders == nil {
				v.Orders = map[string]*rules.OrderState{}
			}
			v.Orders[k] = s.Orders[k]
			orders = append(orders, k)
		}
	}
	for _, acc := range slices.Sorted(maps.Keys(s.Accessions)) {
		refs := s.Accessions[acc]
		leaves := len(refs) > 0
		for _, r := range refs {
			if s.Patients[r.Patient] != nil && !out[r.Patient] {
				leaves = false // a patient in memory still holds it
			}
		}
		if !leaves {
			continue
		}
		accs = append(accs, acc)
		for _, r := range refs {
			if v := vs[r.Patient]; v != nil {
				if v.Accessions == nil {
					v.Accessions = map[string][]rules.ResourceRef{}
				}
				v.Accessions[acc] = refs
			}
		}
	}
	// A study's order list leaves when every order in it left (or did
	// before), with each patient whose order it names.
	var uidOrders []string
	for _, uid := range slices.Sorted(maps.Keys(s.StudyOrders)) {
		keys := s.StudyOrders[uid]
		var owners []string
		leaves := true
		for _, k := range keys {
			o := s.Orders[k]
			switch {
			case o == nil:
			case out[o.PatientID] && vs[o.PatientID] != nil:
				owners = append(owners, o.PatientID)
			default:
				leaves = false
			}
		}
		if !leaves || len(owners) == 0 {
			continue
		}
		uidOrders = append(uidOrders, uid)
		for _, id := range owners {
			v := vs[id]
			if v.StudyOrders == nil {
				v.StudyOrders = map[string][]string{}
			}
			v.StudyOrders[uid] = keys
		}
	}
	// Versions first, then the index entries naming them.
	index := map[string][]indexRef{}
	addIndex := func(kind, key, unit string) {
		index[kind+":"+key] = append(index[kind+":"+key], indexRef{Unit: unit, Seq: a.seq, T: t})
	}
	for _, id := range cold {
		v := vs[id]
		b, err := json.Marshal(storedVersion{Seq: a.seq, T: t, V: v})
		if err != nil {
			a.m.log.Error("state archive: encode patient; kept in memory", "err", err)
			delete(vs, id)
			continue
		}
		if !a.put(versionKey(id), b) {
			return false
		}
		addIndex(rules.KeyPatient, id, id)
		for uid, st := range v.Studies {
			addIndex(rules.KeyStudy, uid, id)
			for mpps := range st.MPPS {
				addIndex(rules.KeyMPPS, mpps, id)
			}
		}
		for k := range v.Orders {
			addIndex(rules.KeyOrder, k, id)
		}
		for acc := range v.Accessions {
			addIndex(rules.KeyAccession, acc, id)
		}
		for uid := range v.StudyOrders {
			addIndex(rules.KeyStudyOrders, uid, id)
		}
	}
	if !a.addRefs(index) {
		return false
	}
	for _, id := range cold {
		if vs[id] == nil {
			continue
		}
		if !written(s.Patients[id]) {
			return false
		}
	}
	for _, id := range cold {
		if vs[id] == nil {
			continue
		}
		delete(s.Patients, id)
		delete(s.Active, id)
		a.evicted++
	}
	for _, uid := range studies {
		if vs[s.Studies[uid].ReadModelPatient] != nil {
			delete(s.Studies, uid)
		}
	}
	for _, k := range orders {
		if vs[s.Orders[k].PatientID] != nil {
			delete(s.Orders, k)
		}
	}
	for _, uid := range uidOrders {
		all := true
		for _, k := range s.StudyOrders[uid] {
			if o := s.Orders[k]; o != nil {
				all = false // its patient stayed (not encodable)
			}
		}
		if all {
			delete(s.StudyOrders, uid)
		}
	}
	for _, acc := range accs {
		all := true
		for _, r := range s.Accessions[acc] {
			if out[r.Patient] && vs[r.Patient] == nil {
				all = false // its patient stayed (not encodable)
			}
		}
		if all {
			delete(s.Accessions, acc)
		}
	}
	return true
}

// lineageFor returns the timeline of a run starting from st with the
// options fingerprint cfg: st's own when the options are those it was
// built with, else a new stretch branching at st.Applied.
func lineageFor(st *rules.State, cfg string) []rules.Lineage {
	id := func(parent string, from uint64) string {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s|%d|%s", parent, from, cfg)))
		return hex.EncodeToString(sum[:8])
	}
	if len(st.Lineage) == 0 {
		// An empty state, or a snapshot from before archiving (nothing
		// before it was archived): the root a replay from the start has.
		return []rules.Lineage{{ID: id("", 0), From: 0, Cfg: cfg}}
	}
	last := st.Lineage[len(st.Lineage)-1]
	if last.Cfg == cfg {
		return st.Lineage
	}
	return append(slices.Clone(st.Lineage), rules.Lineage{ID: id(last.ID, st.Applied), From: st.Applied, Cfg: cfg})
}
