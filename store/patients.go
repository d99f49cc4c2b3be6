package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/eventlog"
	"radbridge/mapper"
)

// Patients is the patients' read model in the state bucket, one key per
// patient: patient.<token>.
type Patients struct{ kv jetstream.KeyValue }

// Patients returns the read model.
func (s *Store) Patients() *Patients { return &Patients{kv: s.kv} }

func patientKey(id string) string { return "patient." + eventlog.PatientToken(id) }

// PutPatient implements mapper.ReadModel.
func (p *Patients) PutPatient(ctx context.Context, pt *mapper.Patient) error {
	b, err := json.Marshal(pt)
	if err != nil {
		return fmt.Errorf("encode patient: %w", err)
	}
	if _, err := p.kv.Put(ctx, patientKey(pt.ID), b); err != nil {
		return fmt.Errorf("put patient: %w", err)
	}
	return nil
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
