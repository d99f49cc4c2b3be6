package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"radbridge/dicom/scp"
	"radbridge/hl7"
	"radbridge/ingest"
)

// hl7Handler records each HL7 message in the ingest log before the receiver
// acknowledges it. A resend (same MSH-3, MSH-4, MSH-10) is recorded once
// and acknowledged again.
type hl7Handler struct {
	log ingest.Log
	// zone is --timezone, recorded with each observation.
	zone string
	// bodies, when set (--log-patient-data), logs every message in full.
	bodies *slog.Logger
}

func (h hl7Handler) HandleHL7(ctx context.Context, m *hl7.Message, raw []byte) error {
	body, err := json.Marshal(ingest.HL7Body{Raw: raw})
	if err != nil {
		return err
	}
	_, _, err = h.log.Append(ctx, ingest.Observation{
		Kind: ingest.KindHL7,
		Key:  "hl7:" + m.SendingApplication() + "|" + m.SendingFacility() + "|" + m.ControlID(),
		Time: time.Now().UTC(),
		Zone: h.zone,
		Source: ingest.Source{
			Protocol:           "hl7",
			SendingApplication: m.SendingApplication(),
			SendingFacility:    m.SendingFacility(),
			MessageControlID:   m.ControlID(),
		},
		Body: body,
	})
	if err != nil {
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
	// steps holds the MPPS step states (admitMPPS); nil: not checked.
	steps stepStore
}

// record appends v. content is v without what changes between resends of
// the same thing (receive time, the peer's port): the same content resent is
// recorded once, a correction (same UID, other attributes) is a new
// observation.
func (h dicomHandler) record(ctx context.Context, kind, key string, p scp.Peer, at time.Time, v, content any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	cb, _ := json.Marshal(content)
	sum := sha256.Sum256(cb)
	if at.IsZero() {
		at = time.Now()
	}
	_, _, err = h.log.Append(ctx, ingest.Observation{
		Kind:   kind,
		Key:    key + ":" + hex.EncodeToString(sum[:8]),
		Time:   at.UTC(),
		Zone:   h.zone,
		Source: ingest.Source{Protocol: "dicom", Remote: p.RemoteAddr, CallingAETitle: p.CallingAE, CalledAETitle: p.CalledAE},
		Body:   body,
	})
	if err != nil {
		return fmt.Errorf("record %s: %w", kind, err)
	}
	if h.bodies != nil {
		h.bodies.Info("dicom observation", "component", "dicom", "kind", kind, "body", string(body))
	}
	return nil
}

func (h dicomHandler) StoreInstance(ctx context.Context, inst *scp.Instance) error {
	c := *inst
	c.Peer, c.ReceivedAt = scp.Peer{}, time.Time{}
	return h.record(ctx, ingest.KindDICOMInstance, "dicom:"+inst.SOPInstanceUID, inst.Peer, inst.ReceivedAt, inst, c)
}

func (h dicomHandler) InstanceAvailability(ctx context.Context, ian *scp.IAN) error {
	c := *ian
	c.Peer, c.ReceivedAt = scp.Peer{}, time.Time{}
	return h.record(ctx, ingest.KindDICOMIAN, "ian:"+ian.SOPInstanceUID, ian.Peer, ian.ReceivedAt, ian, c)
}

func (h dicomHandler) MPPS(ctx context.Context, u *scp.MPPSUpdate) error {
	if h.steps != nil {
		if err := admitMPPS(ctx, h.steps, u); err != nil {
			return err
		}
	}
	c := *u
	c.Peer, c.ReceivedAt = scp.Peer{}, time.Time{}
	return h.record(ctx, ingest.KindDICOMMPPS, "mpps:"+u.SOPInstanceUID, u.Peer, u.ReceivedAt, u, c)
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
