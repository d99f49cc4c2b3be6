package ingesttest

import (
	"context"
	"sync"

	"radbridge/ingest"
)

// Recorder is a receiver's handler (the DICOM SCP's, STOW-RS's, the
// instance notification's) that keeps in memory every instance, IAN and
// MPPS update it is given, in order. Its zero value is ready to use.
type Recorder struct {
	// FailSOP, set before use, is the error StoreInstance returns for an
	// instance by its SOP Instance UID, without recording it.
	FailSOP map[string]error

	mu        sync.Mutex
	err       error
	instances []*ingest.Instance
	ians      []*ingest.IAN
	mpps      []*ingest.MPPSUpdate
}

// Fail makes every later call return err without recording (nil: record
// again).
func (r *Recorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// StoreInstance records inst.
func (r *Recorder) StoreInstance(_ context.Context, inst *ingest.Instance) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	if err := r.FailSOP[inst.SOPInstanceUID]; err != nil {
		return err
	}
	r.instances = append(r.instances, inst)
	return nil
}

// InstanceAvailability records n.
func (r *Recorder) InstanceAvailability(_ context.Context, n *ingest.IAN) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.ians = append(r.ians, n)
	return nil
}

// MPPS records u.
func (r *Recorder) MPPS(_ context.Context, u *ingest.MPPSUpdate) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.mpps = append(r.mpps, u)
	return nil
}

// Instances returns the instances recorded so far.
func (r *Recorder) Instances() []*ingest.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*ingest.Instance(nil), r.instances...)
}

// ByUID returns the instances recorded so far by SOP Instance UID.
func (r *Recorder) ByUID() map[string]*ingest.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]*ingest.Instance{}
	for _, i := range r.instances {
		m[i.SOPInstanceUID] = i
	}
	return m
}

// IANs returns the instance availability notifications recorded so far.
func (r *Recorder) IANs() []*ingest.IAN {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*ingest.IAN(nil), r.ians...)
}

// MPPSUpdates returns the MPPS updates recorded so far.
func (r *Recorder) MPPSUpdates() []*ingest.MPPSUpdate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*ingest.MPPSUpdate(nil), r.mpps...)
}
