package demo

import (
	"bytes"
	"context"
	"fmt"

	"radbridge/dicom/dataset"
	"radbridge/dicom/scu"
)

// DICOMPACS is the simulated PACS: a DICOM storage SCU that keeps one
// association open and redials once when it broke.
type DICOMPACS struct {
	Addr      string
	CallingAE string // "DEMOPACS" when empty
	CalledAE  string // scu.DefaultCalledAE when empty

	c *scu.Client
}

func (p *DICOMPACS) dial(ctx context.Context) (*scu.Client, error) {
	if p.c != nil {
		return p.c, nil
	}
	calling := p.CallingAE
	if calling == "" {
		calling = "DEMOPACS"
	}
	cfg := scu.Config{CallingAE: calling, CalledAE: p.CalledAE,
		Contexts: []scu.Context{{AbstractSyntax: scu.IANSOPClass, TransferSyntaxes: []string{dataset.ImplicitVRLittleEndian}}}}
	cfg.Contexts = append(cfg.Contexts, scu.Context{AbstractSyntax: scu.MPPSSOPClass, TransferSyntaxes: []string{dataset.ImplicitVRLittleEndian}})
	for _, m := range []string{"CT", "MR", "CR", "US"} {
		cfg.Contexts = append(cfg.Contexts, scu.Context{AbstractSyntax: SOPClass(m), TransferSyntaxes: []string{ExplicitVRLittleEndian}})
	}
	c, err := scu.Dial(ctx, p.Addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("associate with %s: %w", p.Addr, err)
	}
	p.c = c
	return c, nil
}

// retry runs f on the association, once more on a fresh one if it failed.
func (p *DICOMPACS) retry(ctx context.Context, f func(*scu.Client) error) error {
	var err error
	for range 2 {
		var c *scu.Client
		if c, err = p.dial(ctx); err != nil {
			continue
		}
		if err = f(c); err == nil || ctx.Err() != nil {
			return err
		}
		c.Abort()
		p.c = nil
	}
	return err
}

// Store sends the instance with C-STORE.
func (p *DICOMPACS) Store(ctx context.Context, in Instance) error {
	return p.retry(ctx, func(c *scu.Client) error {
		_, err := c.Store(ctx, in.SOPClassUID, in.SOPInstanceUID, ExplicitVRLittleEndian, bytes.NewReader(in.Encode()))
		return err
	})
}

// NotifyAvailable sends the study's Instance Availability Notification.
func (p *DICOMPACS) NotifyAvailable(ctx context.Context, st Study) error {
	ian := scu.IAN{StudyInstanceUID: st.UID}
	idx := map[string]int{}
	for _, in := range st.Instances {
		i, ok := idx[in.SeriesUID]
		if !ok {
			i = len(ian.Series)
			idx[in.SeriesUID] = i
			ian.Series = append(ian.Series, scu.IANSeries{SeriesInstanceUID: in.SeriesUID})
		}
		ian.Series[i].Instances = append(ian.Series[i].Instances, scu.IANInstance{SOPClassUID: in.SOPClassUID, SOPInstanceUID: in.SOPInstanceUID})
	}
	return p.retry(ctx, func(c *scu.Client) error {
		st, err := c.NCreateIAN(ctx, ian)
		if err == nil && st.IsFailure() {
			err = fmt.Errorf("N-CREATE status %s", st)
		}
		return err
	})
}

// PerformedStep sends the study's Modality Performed Procedure Step: an
// N-CREATE IN PROGRESS (create), else an N-SET COMPLETED listing every
// instance of the study by series.
func (p *DICOMPACS) PerformedStep(ctx context.Context, uid string, st Study, create bool) error {
	m := scu.MPPS{SOPInstanceUID: uid, PatientID: st.PatientID, StudyInstanceUID: st.UID, AccessionNumber: st.Accession}
	if create {
		m.Status = "IN PROGRESS"
	} else {
		m = scu.MPPS{SOPInstanceUID: uid, Status: "COMPLETED"}
		idx := map[string]int{}
		for _, in := range st.Instances {
			i, ok := idx[in.SeriesUID]
			if !ok {
				i = len(m.Series)
				idx[in.SeriesUID] = i
				m.Series = append(m.Series, scu.MPPSSeries{SeriesInstanceUID: in.SeriesUID, SOPClassUID: in.SOPClassUID})
			}
			m.Series[i].SOPInstanceUIDs = append(m.Series[i].SOPInstanceUIDs, in.SOPInstanceUID)
		}
	}
	return p.retry(ctx, func(c *scu.Client) error {
		send := c.NSetMPPS
		if create {
			send = c.NCreateMPPS
		}
		st, err := send(ctx, m)
		if err == nil && st.IsFailure() {
			err = fmt.Errorf("MPPS status %s", st)
		}
		return err
	})
}

// Close releases the association, if any.
func (p *DICOMPACS) Close() error {
	if p.c == nil {
		return nil
	}
	err := p.c.Close()
	p.c = nil
	return err
}
