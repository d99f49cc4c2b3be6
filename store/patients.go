package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/eventlog"
	"radbridge/mapper"
)

// Patients is the patients' read model in the state bucket, one key per
// patient: patient.<token>.
//
// Writes are fenced. In a cluster only the mapper lease holder maps, but a
// holder that was paused (GC, a VM stall) can wake up after a successor
// took over and still hold a read model it computed before: written blindly
// it would replace the successor's newer one. So every write carries its
// position (the patient's LastSequence and the ingest sequence the state
// was applied to) and is a compare-and-set (KV Update) against the revision
// it checked: a read model whose stored position is newer is left alone
// and the write reports ErrSuperseded. Equal positions are written (the
// mapper is deterministic: the same ingest prefix gives the same state, and
// an equal LastSequence alone does not mean equal content: instances
// arriving between progress events, a study moved to another patient).
// Replay rewrites read models unconditionally (Overwrite).
type Patients struct {
	kv jetstream.KeyValue
	// overwrite skips the fence (radbridge replay).
	overwrite bool

	mu sync.Mutex
	// revs holds the revision and position this process last wrote per
	// key. While no other process writes the key, the next write is an
	// Update against it at the cost of a plain Put (no read); a conflict
	// reads the stored position and decides. Bounded: a miss only costs a
	// read.
	revs map[string]written
}

type written struct {
	rev   uint64
	fence fence
}

// revsMax bounds Patients.revs (about 100 bytes an entry).
const revsMax = 1 << 16

// ErrSuperseded means a newer read model of the patient is stored (written
// by a newer mapper, typically the successor of a paused cluster leader);
// this write was dropped.
var ErrSuperseded = mapper.ErrSuperseded

var _ mapper.FencedReadModel = (*Patients)(nil)

// Patients returns the read model. Its writes are fenced (see Patients).
func (s *Store) Patients() *Patients {
	s.patientsOnce.Do(func() { s.patients = &Patients{kv: s.kv, revs: map[string]written{}} })
	return s.patients
}

// Overwrite returns a read model whose writes replace whatever is stored:
// radbridge replay rebuilds every read model from the ingest log (with
// changed mapping options a patient's LastSequence may even go down), run
// while no daemon maps.
func (p *Patients) Overwrite() *Patients {
	return &Patients{kv: p.kv, overwrite: true, revs: map[string]written{}}
}

func patientKey(id string) string { return "patient." + eventlog.PatientToken(id) }

// fence is a read model's position. It is encoded first in the stored
// value so a conflicting write decodes it without decoding the patient.
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

// storedPatient is the stored value: the fence, then the patient's fields
// (readers decode it as a mapper.Patient and ignore the fence).
type storedPatient struct {
	Fence fence `json:"fence"`
	*mapper.Patient
}

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
	var pt mapper.Patient
	if err := json.Unmarshal(b, &pt); err != nil {
		return fence{}, fmt.Errorf("decode stored read model: %w", err)
	}
	return fence{LastSequence: pt.LastSequence}, nil
}

// PutPatient implements mapper.ReadModel: a write fenced by LastSequence
// only (the ingest position is unknown).
func (p *Patients) PutPatient(ctx context.Context, pt *mapper.Patient) error {
	return p.PutPatientAt(ctx, pt, 0)
}

// PutPatientAt implements mapper.FencedReadModel: pt as of ingest sequence
// applied replaces the stored read model unless that one is newer
// (ErrSuperseded).
func (p *Patients) PutPatientAt(ctx context.Context, pt *mapper.Patient, applied uint64) error {
	ours := fence{LastSequence: pt.LastSequence, Applied: applied}
	b, err := json.Marshal(storedPatient{Fence: ours, Patient: pt})
	if err != nil {
		return fmt.Errorf("encode patient: %w", err)
	}
	key := patientKey(pt.ID)
	if p.overwrite {
		if _, err := p.kv.Put(ctx, key, b); err != nil {
			return fmt.Errorf("put patient: %w", err)
		}
		return nil
	}
	p.mu.Lock()
	w, known := p.revs[key]
	p.mu.Unlock()
	if known && w.fence.newer(ours) {
		known = false // decide by what is stored now
	}
	rev := w.rev
	// Each round either writes or learns of a write made meanwhile by
	// another process; a handful of rounds means a storm of writers.
	for range 8 {
		if !known {
			e, err := p.kv.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				rev = 0 // Update at revision 0 creates the key
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
				rev = e.Revision()
			}
		}
		nrev, err := p.update(ctx, key, b, rev)
		if err == nil {
			p.remember(key, written{rev: nrev, fence: ours})
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
	if _, ok := p.revs[key]; !ok && len(p.revs) >= revsMax {
		for k := range p.revs { // drop one arbitrary entry
			delete(p.revs, k)
			break
		}
	}
	p.revs[key] = w
}

func (p *Patients) forget(key string) {
	p.mu.Lock()
	delete(p.revs, key)
	p.mu.Unlock()
}

// Patient returns the patient, or nil when unknown.
func (p *Patients) Patient(ctx context.Context, id string) (*mapper.Patient, error) {
	e, err := p.kv.Get(ctx, patientKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get patient: %w", err)
	}
	pt := new(mapper.Patient)
	if err := json.Unmarshal(e.Value(), pt); err != nil {
		return nil, fmt.Errorf("decode patient: %w", err)
	}
	return pt, nil
}
