package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"radbridge/dicom/mpps"
	"radbridge/dicom/scp"
	"radbridge/hl7"
	"radbridge/ingest"
)

// hl7Handler records each HL7 message in the ingest log before the receiver
// acknowledges it. A resend (same MSH-3, MSH-4, MSH-10 and the same content,
// see ingest.HL7Digest) is recorded once and acknowledged again; a reused
// control id with other content is recorded as a new message.
type hl7Handler struct {
	log ingest.Log
	// zone is --timezone, recorded with each observation.
	zone string
	// bodies, when set (--log-patient-data), logs every message in full.
	bodies *slog.Logger
}

func (h hl7Handler) HandleHL7(ctx context.Context, m *hl7.Message, raw []byte) error {
	o, err := ingest.NewHL7(raw, m.SendingApplication(), m.SendingFacility(), m.ControlID(), time.Now())
	if err != nil {
		return err
	}
	o.Zone = h.zone
	if _, _, err = h.log.Append(ctx, o); err != nil {
		return fmt.Errorf("record message: %w", err)
	}
	if h.bodies != nil {
		h.bodies.Info("hl7 message", "component", "hl7", "control_id", m.ControlID(), "body", string(raw))
	}
	return nil
}

// dicomHandler records DICOM observations before the SCP answers success.
type dicomHandler struct {
	log ingest.Log
	// zone is --timezone, recorded with each observation.
	zone string
	// bodies, when set (--log-patient-data), logs every observation in full.
	bodies *slog.Logger
	// steps holds the MPPS step states (mpps.Admit); nil: not checked.
	steps mpps.Steps
}

// record appends an observation built by package ingest, which decides
// what a resend is (the same content resent is recorded once, a correction
// is a new observation).
func (h dicomHandler) record(ctx context.Context, o ingest.Observation, err error) error {
	if err != nil {
		return err
	}
	// The observation's time is when it is recorded: a study's quiet period
	// runs from the last instance actually recorded, even when one request
	// (a JSON notification of 100,000 instances) takes a minute to record.
	o.Time, o.Zone = time.Now().UTC(), h.zone
	if _, _, err := h.log.Append(ctx, o); err != nil {
		return fmt.Errorf("record %s: %w", o.Kind, err)
	}
	if h.bodies != nil {
		h.bodies.Info("dicom observation", "component", "dicom", "kind", o.Kind, "body", string(o.Body))
	}
	return nil
}

func (h dicomHandler) StoreInstance(ctx context.Context, inst *ingest.Instance) error {
	o, err := ingest.NewInstance(inst)
	return h.record(ctx, o, err)
}

// StowRequestDone records the end of a STOW-RS request for one study
// (dicomweb.RequestEnder).
func (h dicomHandler) StowRequestDone(ctx context.Context, r *ingest.STOWRequest) error {
	o, err := ingest.NewSTOWRequest(r, time.Now())
	return h.record(ctx, o, err)
}

// InstanceAvailability records an IAN, in parts when it is too large for
// one record; success only once every part is recorded (a resend records
// the missing parts, the others are resends).
func (h dicomHandler) InstanceAvailability(ctx context.Context, ian *ingest.IAN) error {
	obs, err := ingest.NewIANs(ian)
	if err != nil {
		return err
	}
	for _, o := range obs {
		if err := h.record(ctx, o, nil); err != nil {
			return err
		}
	}
	return nil
}

func (h dicomHandler) MPPS(ctx context.Context, u *ingest.MPPSUpdate) error {
	if h.steps != nil {
		if err := mpps.Admit(ctx, h.steps, u); err != nil {
			return err
		}
	}
	o, err := ingest.NewMPPS(u)
	return h.record(ctx, o, err)
}

// allowedCallers parses AE[@host],… .
func allowedCallers(s string) []scp.AllowedCaller {
	var out []scp.AllowedCaller
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		ae, host, _ := strings.Cut(f, "@")
		out = append(out, scp.AllowedCaller{AETitle: ae, Host: host})
	}
	return out
}
