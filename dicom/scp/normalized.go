package scp

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
	"radbridge/dicom/part10"
	"radbridge/ingest"
)

// Attribute tags of IAN (PS3.3 C.4.23) and MPPS (PS3.3 C.4.13-15).
var (
	tAccessionNumber       = dataset.Tag(0x0008, 0x0050)
	tModality              = dataset.Tag(0x0008, 0x0060)
	tPatientName           = dataset.Tag(0x0010, 0x0010)
	tPatientID             = dataset.Tag(0x0010, 0x0020)
	tStudyInstanceUID      = dataset.Tag(0x0020, 0x000D)
	tSeriesInstanceUID     = dataset.Tag(0x0020, 0x000E)
	tRefPPSSequence        = dataset.Tag(0x0008, 0x1111)
	tRefSeriesSequence     = dataset.Tag(0x0008, 0x1115)
	tRefSOPSequence        = dataset.Tag(0x0008, 0x1199)
	tRefSOPClassUID        = dataset.Tag(0x0008, 0x1150)
	tRefSOPInstanceUID     = dataset.Tag(0x0008, 0x1155)
	tRetrieveAETitle       = dataset.Tag(0x0008, 0x0054)
	tInstanceAvailability  = dataset.Tag(0x0008, 0x0056)
	tRefImageSequence      = dataset.Tag(0x0008, 0x1140)
	tScheduledStepSequence = dataset.Tag(0x0040, 0x0270)
	tPPSID                 = dataset.Tag(0x0040, 0x0253)
	tPPSStartDate          = dataset.Tag(0x0040, 0x0244)
	tPPSStartTime          = dataset.Tag(0x0040, 0x0245)
	tPPSEndDate            = dataset.Tag(0x0040, 0x0250)
	tPPSEndTime            = dataset.Tag(0x0040, 0x0251)
	tPPSStatus             = dataset.Tag(0x0040, 0x0252)
	tPerformedSeriesSeq    = dataset.Tag(0x0040, 0x0340)
	tRefNonImageSequence   = dataset.Tag(0x0040, 0x0220)
)

// readWhole reads a whole data set of at most limit bytes.
func readWhole(r io.Reader, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return b, dataset.ErrHeaderTooLarge
	}
	return b, nil
}

// normalized serves N-CREATE and N-SET for IAN and MPPS (PS3.4 annexes R
// and F.7, PS3.7 sections 10.1.4 and 10.1.5).
func (c *assoc) normalized(ctx context.Context, msg *dimse.Message) error {
	cmd := msg.Command
	rspField := dimse.NCreateRSP
	class, inst := cmd.AffectedSOPClassUID, cmd.AffectedSOPInstanceUID
	if cmd.CommandField == dimse.NSetRQ {
		rspField = dimse.NSetRSP
		class, inst = cmd.RequestedSOPClassUID, cmd.RequestedSOPInstanceUID
	}
	// fail answers a failure whose cause (detail) the peer is not told:
	// it is logged with the failure.
	fail := func(st dimse.Status, comment string, detail error) error {
		if st.IsFailure() {
			c.log.Warn("N-service failed", withDetail(detail, "command_field", fmt.Sprintf("0x%04x", cmd.CommandField),
				"status", st.String(), "comment", comment, "sop_instance_uid", inst)...)
		}
		return dimse.Respond(c.a, msg.ContextID, cmd, rspField, st, comment)
	}
	respond := func(st dimse.Status, comment string) error { return fail(st, comment, nil) }
	var body []byte
	if msg.Data != nil {
		var err error
		body, err = readWhole(msg.Data, c.s.cfg.MaxNotificationBytes)
		if errors.Is(err, dataset.ErrHeaderTooLarge) {
			if err := msg.Data.Drain(); err != nil {
				return err
			}
			return respond(dimse.StatusResourceLimitation, fmt.Sprintf("data set larger than %d bytes", c.s.cfg.MaxNotificationBytes))
		}
		if err != nil {
			return fmt.Errorf("N-service data set: %w", err)
		}
	}
	pc, _ := c.a.Context(msg.ContextID)
	if class != pc.AbstractSyntax {
		return respond(dimse.StatusSOPClassNotSupported, "SOP class differs from presentation context")
	}
	if !(class == IANSOPClass && cmd.CommandField == dimse.NCreateRQ) && class != MPPSSOPClass {
		return respond(dimse.StatusUnrecognizedOperation, "operation not supported for this SOP class")
	}
	if inst == "" {
		// We do not create instance UIDs: both IHE profiles have the SCU
		// supply them.
		return respond(dimse.StatusMissingAttribute, "Affected SOP Instance UID required")
	}
	syntax := dataset.SyntaxOf(pc.TransferSyntax)
	if syntax.Deflated && body != nil {
		inflated, err := readWhole(flate.NewReader(bytes.NewReader(body)), c.s.cfg.MaxNotificationBytes)
		if err != nil {
			return respond(dimse.StatusCannotUnderstand, "cannot inflate data set")
		}
		body, syntax = inflated, dataset.Syntax{}
	}
	ds, err := dataset.Parse(body, syntax)
	if err != nil {
		return fail(dimse.StatusCannotUnderstand, commentUnparseable, err)
	}
	now := time.Now()
	if class == IANSOPClass {
		ian := parseIAN(ds)
		ian.Peer, ian.SOPInstanceUID, ian.ReceivedAt = c.peer, inst, now
		if err := c.s.h.InstanceAvailability(ctx, ian); err != nil {
			st, comment, detail := handlerStatus(err)
			return fail(st, clip(comment), detail)
		}
		c.s.c.notifications.Add(1)
		c.s.c.ians.Add(1)
		c.log.Info("instance availability notification", "ian", ian)
		return respond(dimse.StatusSuccess, "")
	}
	u := parseMPPS(ds)
	u.Peer, u.SOPInstanceUID, u.ReceivedAt = c.peer, inst, now
	u.Create = cmd.CommandField == dimse.NCreateRQ
	if u.Create && u.Status != ingest.MPPSInProgress {
		return respond(dimse.StatusInvalidAttributeValue, "N-CREATE status must be IN PROGRESS")
	}
	switch u.Status {
	case "", ingest.MPPSInProgress, ingest.MPPSCompleted, ingest.MPPSDiscontinued:
	default:
		return respond(dimse.StatusInvalidAttributeValue, "unknown Performed Procedure Step Status")
	}
	if err := c.s.h.MPPS(ctx, u); err != nil {
		st, comment, detail := handlerStatus(err)
		return fail(st, clip(comment), detail)
	}
	c.s.c.notifications.Add(1)
	c.s.c.mpps.Add(1)
	c.log.Info("MPPS", "mpps", u)
	return respond(dimse.StatusSuccess, "")
}

func parseIAN(ds *dataset.Dataset) *ingest.IAN {
	ian := &ingest.IAN{StudyInstanceUID: ds.String(tStudyInstanceUID)}
	for _, it := range ds.Items(tRefPPSSequence) {
		if u := it.String(tRefSOPInstanceUID); u != "" {
			ian.PerformedProcedureSteps = append(ian.PerformedProcedureSteps, u)
		}
	}
	for _, s := range ds.Items(tRefSeriesSequence) {
		series := ingest.IANSeries{SeriesInstanceUID: s.String(tSeriesInstanceUID)}
		for _, i := range s.Items(tRefSOPSequence) {
			series.Instances = append(series.Instances, ingest.IANInstance{
				SOPClassUID:          i.String(tRefSOPClassUID),
				SOPInstanceUID:       i.String(tRefSOPInstanceUID),
				InstanceAvailability: i.String(tInstanceAvailability),
				RetrieveAETitle:      i.Joined(tRetrieveAETitle),
			})
		}
		ian.Series = append(ian.Series, series)
	}
	return ian
}

func parseMPPS(ds *dataset.Dataset) *ingest.MPPSUpdate {
	u := &ingest.MPPSUpdate{
		Status:          ds.String(tPPSStatus),
		PatientID:       ds.String(tPatientID),
		PatientName:     part10.PersonName(ds.Joined(tPatientName)),
		Modality:        ds.String(tModality),
		ProcedureStepID: ds.String(tPPSID),
		StartDate:       ds.String(tPPSStartDate),
		StartTime:       ds.String(tPPSStartTime),
		EndDate:         ds.String(tPPSEndDate),
		EndTime:         ds.String(tPPSEndTime),
	}
	seen := map[string]bool{}
	for _, it := range ds.Items(tScheduledStepSequence) {
		if s := it.String(tStudyInstanceUID); s != "" && !seen["s"+s] {
			seen["s"+s] = true
			u.StudyInstanceUIDs = append(u.StudyInstanceUIDs, s)
		}
		if a := it.String(tAccessionNumber); a != "" && !seen["a"+a] {
			seen["a"+a] = true
			u.AccessionNumbers = append(u.AccessionNumbers, a)
		}
	}
	for _, s := range ds.Items(tPerformedSeriesSeq) {
		series := ingest.MPPSSeries{SeriesInstanceUID: s.String(tSeriesInstanceUID)}
		for _, seq := range []*dataset.Dataset{s} {
			for _, ref := range append(seq.Items(tRefImageSequence), seq.Items(tRefNonImageSequence)...) {
				if uid := ref.String(tRefSOPInstanceUID); uid != "" {
					series.SOPInstanceUIDs = append(series.SOPInstanceUIDs, uid)
				}
			}
		}
		u.Series = append(u.Series, series)
	}
	return u
}
