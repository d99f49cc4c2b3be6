// Package readmodeltest holds an in-memory read model for tests of the
// mapper and of replays.
package readmodeltest

import (
	"context"
	"encoding/json"
	"sync"

	"radbridge/readmodel"
)

// Memory is a read model kept in memory. Each patient is kept encoded as
// the store encodes it, so what a test reads is a copy of what was written,
// never the mapper's live value. Its zero value is ready to use.
type Memory struct {
	mu sync.Mutex
	m  map[string][]byte
}

// PutPatient keeps p's JSON, replacing what was kept for p.ID.
func (r *Memory) PutPatient(_ context.Context, p *readmodel.Patient) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string][]byte{}
	}
	r.m[p.ID] = b
	return nil
}

// JSON returns each patient's JSON, by patient id.
func (r *Memory) JSON() map[string][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]byte, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}

// Patient returns the read model of patient id (the zero value if none
// was written).
func (r *Memory) Patient(id string) readmodel.Patient {
	r.mu.Lock()
	b := r.m[id]
	r.mu.Unlock()
	var p readmodel.Patient
	if b != nil {
		// It was encoded from a readmodel.Patient: decoding cannot fail.
		_ = json.Unmarshal(b, &p)
	}
	return p
}

// Patients returns every read model, by patient id.
func (r *Memory) Patients() map[string]readmodel.Patient {
	out := map[string]readmodel.Patient{}
	for id, b := range r.JSON() {
		var p readmodel.Patient
		_ = json.Unmarshal(b, &p)
		out[id] = p
	}
	return out
}
