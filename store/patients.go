package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"radbridge/eventlog"
	"radbridge/readmodel"
)

// Patients is the patients' read model in the state bucket.
//
// Layout. A patient's read model is a manifest at patient.<token> (id,
// last_sequence, body_regions, views, the write fence, and per resource
// its id and either the resource itself or where it is). A patient whose
// resources total at most inlineMax bytes keeps them in the manifest: one
// key, as most patients (a few studies) need. A bigger one keeps in the
// manifest, per resource, its content hash and the revision of its key,
// and each resource at a key of its own, content-addressed:
//
//	patient.<token>.<study|order|report>.<hash of the id>.<hash of the content>
//
// (the split layout). Every write picks the layout from the patient's size,
// so a patient moves to the split layout when it grows past inlineMax and
// back to one key when it shrinks (a study moved to another patient); the
// keys the replaced manifest referenced are then purged as below.
//
// Why not always split: the JetStream server keeps about 100–270 bytes of
// memory per key of a bucket for as long as the key exists, and read
// models are never deleted, so a key per resource of every patient ever
// seen costs the server memory forever. Why not always one value: a big
// patient's whole value (6 MB for 400 CT studies) was rewritten per event
// and passes the 1 MB max_payload of a default NATS server.
//
// In the split layout a resource value is immutable once written. A write stores only the
// resources whose content changed since the manifest it replaces (an event
// about one study of a patient with 400 studies writes that study and the
// manifest, not every study), then the manifest, then deletes the keys the
// old manifest referenced and the new one does not (a study moved to
// another patient by a Patient ID correction, a resource's previous
// content). Those are purged only if the key is still at the revision the
// old manifest recorded, so exactly the value it referenced goes; the purge
// marker expires after a minute (NATS 2.11 or later). Read models written before this layout (one value holding
// every resource) are read, and converted by their next write.
//
// Writes are fenced. In a cluster only the mapper lease holder maps, but a
// holder that was paused (GC, a VM stall) can wake up after a successor
// took over and still hold a read model it computed before: written blindly
// it would replace the successor's newer one. So every manifest carries its
// position (the patient's LastSequence and the ingest sequence the state
// was applied to) and is written with a compare-and-set (KV Update) against
// the revision it checked: a read model whose stored position is newer is
// left alone and the write reports ErrSuperseded. Equal positions are
// written (the mapper is deterministic: the same ingest prefix gives the
// same state, and an equal LastSequence alone does not mean equal content:
// instances arriving between progress events, a study moved to another
// patient). Replay rewrites read models unconditionally (Overwrite).
//
// What the fence allows a stale writer: resource keys it wrote before its
// manifest was refused stay as orphans (unreferenced, never read; radbridge
// replay removes them). It never changes a resource a newer manifest
// references: a key's content is its name, and the only deletes are of
// revisions the deleting writer's replaced manifest referenced. A crash
// between the resources and the manifest leaves the same kind of orphans
// (the next write of the same content reuses them). Read models still lag
// events, never lead: the manifest, which makes new resources visible, is
// written after the events, as before.
type Patients struct {
	kv jetstream.KeyValue
	// noMarkerTTL: purge markers cannot expire (NATS before 2.11).
	noMarkerTTL bool
	// overwrite skips the fence (radbridge replay).
	overwrite bool

	mu sync.Mutex
	// revs holds, per manifest key, the revision, position and resources
	// this process last wrote. While no other process writes the key, the
	// next write is an Update against it and writes only the changed
	// resources, without a read; a conflict reads the stored manifest and
	// decides. Bounded (in manifests and resources): a miss only costs a
	// read of the manifest.
	revs map[string]written
	// refsHeld counts the resources remembered in revs.
	refsHeld int
}

type written struct {
	rev   uint64
	fence fence
	refs  map[resRef]stored
}

// revsMax and refsMax bound Patients.revs: about 100 bytes a manifest and
// 60 a resource.
const (
	revsMax = 1 << 16
	refsMax = 1 << 18
)

// ErrSuperseded means a newer read model of the patient is stored (written
// by a newer mapper, typically the successor of a paused cluster leader);
// this write was dropped.
var ErrSuperseded = readmodel.ErrSuperseded

var _ readmodel.FencedWriter = (*Patients)(nil)

// Patients returns the read model. Its writes are fenced (see Patients).
func (s *Store) Patients() *Patients {
	s.patientsOnce.Do(func() { s.patients = &Patients{kv: s.kv, noMarkerTTL: s.noMarkerTTL, revs: map[string]written{}} })
	return s.patients
}

// Overwrite returns a read model whose writes replace whatever is stored:
// radbridge replay rebuilds every read model from the ingest log (with
// changed mapping options a patient's LastSequence may even go down), run
// while no daemon maps. Its writes also remove the patient's orphaned
// resource keys and rewrite resources a manifest references that are
// missing.
func (p *Patients) Overwrite() *Patients {
	return &Patients{kv: p.kv, noMarkerTTL: p.noMarkerTTL, overwrite: true, revs: map[string]written{}}
}

func patientKey(id string) string { return "patient." + eventlog.PatientToken(id) }

// Resource kinds, as named in keys, with the patient's map of each.
const (
	kindStudy = iota
	kindOrder
	kindReport
	kinds
)

var kindNames = [kinds]string{"study", "order", "report"}

func resourcesOf(pt *readmodel.Patient, kind int) *map[string]json.RawMessage {
	switch kind {
	case kindStudy:
		return &pt.Studies
	case kindOrder:
		return &pt.Orders
	default:
		return &pt.Reports
	}
}

// resRef names a resource of a patient: its kind and the hash of its id.
type resRef struct {
	kind uint8
	id   [12]byte
}

func refOf(kind int, id string) resRef {
	h := sha256.Sum256([]byte(id))
	r := resRef{kind: uint8(kind)}
	copy(r.id[:], h[:])
	return r
}

// stored is a resource's stored value: its content hash and the revision
// of its key.
type stored struct {
	digest [16]byte
	rev    uint64
}

func resourceKey(manifestKey string, r resRef, digest [16]byte) string {
	return fmt.Sprintf("%s.%s.%x.%x", manifestKey, kindNames[r.kind], r.id, digest)
}

func digestOf(b []byte) [16]byte {
	h := sha256.Sum256(b)
	return [16]byte(h[:16])
}

// fence is a read model's position. It is encoded first in the stored
// value so a conflicting write decodes it without decoding the rest.
type fence struct {
	LastSequence uint64 `json:"last_sequence"`
	// Applied is the ingest sequence the state was applied to; 0 when
	// unknown (values written before fencing, PutPatient).
	Applied uint64 `json:"applied,omitempty"`
}

// newer reports whether a read model at f is newer than one at o.
func (f fence) newer(o fence) bool {
	return f.LastSequence > o.LastSequence || (o.Applied != 0 && f.Applied > o.Applied)
}

// manifestLayout marks a manifest (values without it hold the whole
// patient: the layout before resources had keys of their own). Layout 3
// manifests may hold resources inline; layout 2 ones (written before) only
// point at keys, and read as they are.
const (
	manifestLayout   = 3
	manifestLayoutV2 = 2
)

// inlineMax is the size (bytes of resource ids and values, as encoded)
// up to which a patient's resources are kept in its manifest: one key per
// patient instead of one per resource plus the manifest. 64 KB is about
// four CT studies of 100 instances (an ImagingStudy is about 150 bytes
// per instance) with their orders and reports, more than most patients
// have; a write of the whole value then costs about what the split
// layout's three messages (resource, manifest, purge marker) cost
// (BENCHMARKS.md section 15), and it stays far below any max_payload
// (1 MB by default). Past it the whole value rewritten per event grows
// with the patient's history while the server memory saved, a few hundred
// bytes per key, stays small against the bytes written.
const inlineMax = 64 << 10

// manifest is the value at patient.<token>.
type manifest struct {
	Fence        fence             `json:"fence"`
	Layout       int               `json:"layout"`
	ID           string            `json:"id"`
	LastSequence uint64            `json:"last_sequence"`
	BodyRegions  map[string]uint32 `json:"body_regions,omitempty"`
	Views        map[string]uint32 `json:"views,omitempty"`
	// Refs by kind (study, order, report): resource id → the resource or
	// where it is.
	Refs [kinds]map[string]manifestRef `json:"refs"`
}

// manifestRef is a resource in a manifest: inline (Value; no Hash), or
// its content hash (hex) and the revision of its key.
type manifestRef struct {
	Hash  string          `json:"h,omitempty"`
	Rev   uint64          `json:"r,omitempty"`
	Value json.RawMessage `json:"v,omitempty"`
}

// inline reports whether the manifest holds the resource itself.
func (r manifestRef) inline() bool { return r.Hash == "" }

// storedFence decodes the position of a stored value.
func storedFence(b []byte) (fence, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return fence{}, fmt.Errorf("decode stored read model: not an object")
	}
	if t, err := d.Token(); err == nil && t == "fence" {
		var f fence
		if err := d.Decode(&f); err != nil {
			return fence{}, fmt.Errorf("decode stored read model: %w", err)
		}
		return f, nil
	}
	// Written before fencing: the whole patient.
	var pt readmodel.Patient
	if err := json.Unmarshal(b, &pt); err != nil {
		return fence{}, fmt.Errorf("decode stored read model: %w", err)
	}
	return fence{LastSequence: pt.LastSequence}, nil
}

// decodeManifest decodes a stored value: a manifest, or (ok false) a value
// of the single-value layout, left undecoded.
func decodeManifest(b []byte) (m manifest, ok bool, err error) {
	if !isManifest(b) {
		return m, false, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, false, fmt.Errorf("decode stored read model: %w", err)
	}
	if m.Layout != manifestLayout && m.Layout != manifestLayoutV2 {
		return m, false, fmt.Errorf("decode stored read model: layout %d (written by a newer radbridge?)", m.Layout)
	}
	return m, true, nil
}

// isManifest reports whether a stored value is a manifest (the fence, then
// the layout) without decoding the rest: a value of the single-value layout
// holds every resource.
func isManifest(b []byte) bool {
	d := json.NewDecoder(bytes.NewReader(b))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	if t, err := d.Token(); err != nil || t != "fence" {
		return false
	}
	var f fence
	if err := d.Decode(&f); err != nil {
		return false
	}
	t, err := d.Token()
	return err == nil && t == "layout"
}

// refsOf returns the resources of a manifest stored at keys of their own,
// as remembered (none when the manifest holds them inline).
func refsOf(m *manifest) (map[resRef]stored, error) {
	refs := map[resRef]stored{}
	for kind, rs := range m.Refs {
		for id, r := range rs {
			if r.inline() {
				continue
			}
			d, err := hex.DecodeString(r.Hash)
			if err != nil || len(d) != 16 {
				return nil, fmt.Errorf("decode stored read model: resource hash %q", r.Hash)
			}
			refs[refOf(kind, id)] = stored{digest: [16]byte(d), rev: r.Rev}
		}
	}
	return refs, nil
}

// resource is one resource of the patient being written.
type resource struct {
	kind  int
	id    string
	ref   resRef
	value []byte
	d     [16]byte
}

// PutPatient implements readmodel.Writer: a write fenced by LastSequence
// only (the ingest position is unknown).
func (p *Patients) PutPatient(ctx context.Context, pt *readmodel.Patient) error {
	return p.PutPatientAt(ctx, pt, 0)
}

// PutPatientAt implements readmodel.FencedWriter: pt as of ingest sequence
// applied replaces the stored read model unless that one is newer
// (ErrSuperseded).
func (p *Patients) PutPatientAt(ctx context.Context, pt *readmodel.Patient, applied uint64) error {
	ours := fence{LastSequence: pt.LastSequence, Applied: applied}
	key := patientKey(pt.ID)
	var res []resource
	size := 0
	for kind := range kinds {
		for id, v := range *resourcesOf(pt, kind) {
			res = append(res, resource{kind: kind, id: id, value: v})
			size += len(id) + len(v)
		}
	}
	inline := size <= inlineMax
	if !inline {
		for i := range res {
			res[i].ref, res[i].d = refOf(res[i].kind, res[i].id), digestOf(res[i].value)
		}
	}
	if p.overwrite {
		return p.overwriteAll(ctx, key, pt, ours, res, inline)
	}
	p.mu.Lock()
	w, known := p.revs[key]
	p.mu.Unlock()
	if known && w.fence.newer(ours) {
		known = false // decide by what is stored now
	}
	// Each round either writes or learns of a write made meanwhile by
	// another process; a handful of rounds means a storm of writers.
	for range 8 {
		if !known {
			e, err := p.kv.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				w = written{} // Update at revision 0 creates the key
			case err != nil:
				return fmt.Errorf("get patient: %w", err)
			default:
				stored, err := storedFence(e.Value())
				if err != nil {
					return err
				}
				if stored.newer(ours) {
					p.forget(key)
					return ErrSuperseded
				}
				w = written{rev: e.Revision(), fence: stored}
				m, ok, err := decodeManifest(e.Value())
				if err != nil {
					return err
				}
				if ok {
					if w.refs, err = refsOf(&m); err != nil {
						return err
					}
				}
			}
		}
		refs := map[resRef]stored{} // inline: no resource keys
		if !inline {
			var err error
			if refs, err = p.putResources(ctx, key, res, w.refs); err != nil {
				return err
			}
		}
		b, err := encodeManifest(pt, ours, res, refs, inline)
		if err != nil {
			return err
		}
		nrev, err := p.update(ctx, key, b, w.rev)
		if err == nil {
			p.remember(key, written{rev: nrev, fence: ours, refs: refs})
			p.dropUnreferenced(ctx, key, w.refs, refs)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("put patient: %w", err)
		}
		known = false
	}
	p.forget(key)
	return fmt.Errorf("put patient: the read model kept changing under this write")
}

// putResources writes the resources that base (the manifest being
// replaced) does not hold with the same content, and returns where every
// resource of res is.
func (p *Patients) putResources(ctx context.Context, key string, res []resource, base map[resRef]stored) (map[resRef]stored, error) {
	refs := make(map[resRef]stored, len(res))
	var todo []int
	for i, r := range res {
		if s, ok := base[r.ref]; ok && s.digest == r.d {
			refs[r.ref] = s
		} else {
			todo = append(todo, i)
		}
	}
	revs := make([]uint64, len(todo))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for j, i := range todo {
		r := &res[i]
		g.Go(func() error {
			rev, err := p.kv.Put(gctx, resourceKey(key, r.ref, r.d), r.value)
			if err != nil {
				return fmt.Errorf("put patient resource: %w", err)
			}
			revs[j] = rev
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for j, i := range todo {
		refs[res[i].ref] = stored{digest: res[i].d, rev: revs[j]}
	}
	return refs, nil
}

// parallel bounds the resource reads and writes of one patient in flight.
const parallel = 16

// encodeManifest encodes the manifest of pt: with its resources inline,
// or pointing at their keys (refs).
func encodeManifest(pt *readmodel.Patient, f fence, res []resource, refs map[resRef]stored, inline bool) ([]byte, error) {
	m := manifest{Fence: f, Layout: manifestLayout, ID: pt.ID, LastSequence: pt.LastSequence,
		BodyRegions: pt.BodyRegions, Views: pt.Views}
	for _, r := range res {
		if m.Refs[r.kind] == nil {
			m.Refs[r.kind] = map[string]manifestRef{}
		}
		if inline {
			m.Refs[r.kind][r.id] = manifestRef{Value: r.value}
			continue
		}
		s := refs[r.ref]
		m.Refs[r.kind][r.id] = manifestRef{Hash: hex.EncodeToString(s.digest[:]), Rev: s.rev}
	}
	// Resources are kept as the mapper encoded them (no HTML escaping
	// added), as in the split layout.
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(m); err != nil {
		return nil, fmt.Errorf("encode patient: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// dropUnreferenced purges the resource values old (the manifest key's
// replaced manifest) referenced and cur does not, each only if its key is
// still at the revision old referenced: a value written again meanwhile
// (by a writer that will reference it) is left. Failures leave orphans,
// never a missing resource, and are not the write's failure.
func (p *Patients) dropUnreferenced(ctx context.Context, key string, old, cur map[resRef]stored) {
	var g errgroup.Group
	g.SetLimit(parallel)
	for r, s := range old {
		if c, ok := cur[r]; ok && c.rev == s.rev {
			continue
		}
		g.Go(func() error {
			_ = p.purge(ctx, resourceKey(key, r, s.digest), s.rev)
			return nil
		})
	}
	_ = g.Wait()
}

// purgeMarkerTTL is how long the marker of a purged resource key stays.
const purgeMarkerTTL = time.Minute

// purge removes key if it is at revision rev.
func (p *Patients) purge(ctx context.Context, key string, rev uint64) error {
	opts := []jetstream.KVDeleteOpt{jetstream.LastRevision(rev)}
	if !p.noMarkerTTL {
		opts = append(opts, jetstream.PurgeTTL(purgeMarkerTTL))
	}
	return p.kv.Purge(ctx, key, opts...)
}

// overwriteAll writes pt whatever is stored (radbridge replay): it reuses
// the stored resources the patient's keys still hold, and removes every
// key of the patient the new manifest does not reference (orphans of
// refused or interrupted writes included; all of them when the patient
// is now inline).
func (p *Patients) overwriteAll(ctx context.Context, key string, pt *readmodel.Patient, f fence, res []resource, inline bool) error {
	present, err := p.resourceKeys(ctx, key)
	if err != nil {
		return err
	}
	base := map[resRef]stored{}
	if e, err := p.kv.Get(ctx, key); err == nil {
		if m, ok, err := decodeManifest(e.Value()); err == nil && ok {
			if refs, err := refsOf(&m); err == nil {
				for r, s := range refs {
					if present[resourceKey(key, r, s.digest)] {
						base[r] = s
					}
				}
			}
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("get patient: %w", err)
	}
	refs := map[resRef]stored{}
	if !inline {
		if refs, err = p.putResources(ctx, key, res, base); err != nil {
			return err
		}
	}
	b, err := encodeManifest(pt, f, res, refs, inline)
	if err != nil {
		return err
	}
	if _, err := p.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("put patient: %w", err)
	}
	keep := map[string]bool{}
	for r, s := range refs {
		keep[resourceKey(key, r, s.digest)] = true
	}
	for k := range present {
		if keep[k] {
			continue
		}
		e, err := p.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		if err := p.purge(ctx, k, e.Revision()); err != nil {
			return fmt.Errorf("remove unreferenced patient resource: %w", err)
		}
	}
	return nil
}

// resourceKeys lists the resource keys stored under a manifest key.
func (p *Patients) resourceKeys(ctx context.Context, key string) (map[string]bool, error) {
	l, err := p.kv.ListKeysFiltered(ctx, key+".>")
	if err != nil {
		return nil, fmt.Errorf("list patient resources: %w", err)
	}
	defer l.Stop()
	keys := map[string]bool{}
	for k := range l.Keys() {
		keys[k] = true
	}
	return keys, nil
}

// update writes b at key if its revision is still rev (0: the key does not
// exist, or was deleted).
func (p *Patients) update(ctx context.Context, key string, b []byte, rev uint64) (uint64, error) {
	if rev == 0 {
		return p.kv.Create(ctx, key, b)
	}
	return p.kv.Update(ctx, key, b, rev)
}

func (p *Patients) remember(key string, w written) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.revs[key]; ok {
		p.refsHeld -= len(old.refs)
		delete(p.revs, key)
	}
	for k, o := range p.revs { // make room: drop arbitrary entries
		if len(p.revs) < revsMax && p.refsHeld+len(w.refs) <= refsMax {
			break
		}
		p.refsHeld -= len(o.refs)
		delete(p.revs, k)
	}
	if len(w.refs) > refsMax {
		return // too big to remember: its next write reads the manifest
	}
	p.revs[key] = w
	p.refsHeld += len(w.refs)
}

func (p *Patients) forget(key string) {
	p.mu.Lock()
	if old, ok := p.revs[key]; ok {
		p.refsHeld -= len(old.refs)
		delete(p.revs, key)
	}
	p.mu.Unlock()
}

// errResourceGone is a resource the manifest read references that is not
// stored (any more).
var errResourceGone = errors.New("a resource of the read model is missing")

// Patient returns the patient, or nil when unknown.
func (p *Patients) Patient(ctx context.Context, id string) (*readmodel.Patient, error) {
	key := patientKey(id)
	var lastRev uint64
	// A resource vanishes when a write replaced the manifest read and
	// removed it: read the new manifest. Twice at the same manifest
	// revision means the resource is missing for good.
	for range 8 {
		e, err := p.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get patient: %w", err)
		}
		m, ok, err := decodeManifest(e.Value())
		if err != nil {
			return nil, err
		}
		if !ok { // the single-value layout
			pt := new(readmodel.Patient)
			if err := json.Unmarshal(e.Value(), pt); err != nil {
				return nil, fmt.Errorf("decode patient: %w", err)
			}
			return pt, nil
		}
		pt, err := p.load(ctx, key, &m)
		if !errors.Is(err, errResourceGone) {
			return pt, err
		}
		if e.Revision() == lastRev {
			return nil, fmt.Errorf("get patient: %w (radbridge replay rewrites it)", err)
		}
		lastRev = e.Revision()
	}
	return nil, fmt.Errorf("get patient: the read model kept changing under this read")
}

// load reads the resources of a manifest: those it holds inline, and
// those at keys of their own.
func (p *Patients) load(ctx context.Context, key string, m *manifest) (*readmodel.Patient, error) {
	pt := &readmodel.Patient{ID: m.ID, LastSequence: m.LastSequence, BodyRegions: m.BodyRegions, Views: m.Views}
	type job struct {
		kind int
		id   string
		key  string
	}
	var jobs []job
	for kind, rs := range m.Refs {
		for id, r := range rs {
			if r.inline() {
				if len(r.Value) == 0 {
					return nil, fmt.Errorf("decode stored read model: resource %q has neither a value nor a hash", id)
				}
				rs := resourcesOf(pt, kind)
				if *rs == nil {
					*rs = map[string]json.RawMessage{}
				}
				(*rs)[id] = r.Value
				continue
			}
			if len(r.Hash) != 32 || strings.Trim(r.Hash, "0123456789abcdef") != "" {
				return nil, fmt.Errorf("decode stored read model: resource hash %q", r.Hash)
			}
			ref := refOf(kind, id)
			jobs = append(jobs, job{kind, id, fmt.Sprintf("%s.%s.%x.%s", key, kindNames[kind], ref.id, r.Hash)})
		}
	}
	vals := make([][]byte, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, j := range jobs {
		g.Go(func() error {
			e, err := p.kv.Get(gctx, j.key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return errResourceGone
			}
			if err != nil {
				return fmt.Errorf("get patient resource: %w", err)
			}
			vals[i] = e.Value()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, j := range jobs {
		rs := resourcesOf(pt, j.kind)
		if *rs == nil {
			*rs = map[string]json.RawMessage{}
		}
		(*rs)[j.id] = vals[i]
	}
	return pt, nil
}
