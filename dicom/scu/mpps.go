package scu

import (
	"context"
	"fmt"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
)

// MPPSSOPClass is the Modality Performed Procedure Step SOP class (PS3.4
// annex F.7).
const MPPSSOPClass = "1.2.840.10008.3.1.2.3.3"

// MPPS is a Modality Performed Procedure Step as an N-CREATE or N-SET
// carries it (PS3.4 F.7.2, the attributes radbridge reads).
type MPPS struct {
	// SOPInstanceUID identifies the step; the SCU chooses it (NewUID).
	SOPInstanceUID string
	// Status is Performed Procedure Step Status (0040,0252): IN PROGRESS,
	// COMPLETED or DISCONTINUED; empty leaves it out (an N-SET of other
	// attributes).
	Status string
	// PatientID (0010,0020), and StudyInstanceUID and AccessionNumber in
	// the Scheduled Step Attributes Sequence (0040,0270); each left out
	// when empty.
	PatientID        string
	StudyInstanceUID string
	AccessionNumber  string
	// Series is the Performed Series Sequence (0040,0340); left out when
	// empty.
	Series []MPPSSeries
}

// MPPSSeries is one item of the Performed Series Sequence.
type MPPSSeries struct {
	SeriesInstanceUID string
	// SOPClassUID of every Referenced Image Sequence (0008,1140) item.
	SOPClassUID     string
	SOPInstanceUIDs []string
}

// NCreateMPPS creates the step with N-CREATE (PS3.7 section 10.3.5) on an
// accepted MPPS context (propose Context{MPPSSOPClass,
// [dataset.ImplicitVRLittleEndian]}). It returns the peer's status; a
// failure status is also returned as a *StatusError.
func (c *Client) NCreateMPPS(ctx context.Context, m MPPS) (dimse.Status, error) {
	return c.normalized(ctx, dimse.NCreateRQ, MPPSSOPClass, m.SOPInstanceUID, EncodeMPPS(m))
}

// NSetMPPS updates the step with N-SET (PS3.7 section 10.3.3), as
// NCreateMPPS.
func (c *Client) NSetMPPS(ctx context.Context, m MPPS) (dimse.Status, error) {
	return c.normalized(ctx, dimse.NSetRQ, MPPSSOPClass, m.SOPInstanceUID, EncodeMPPS(m))
}

// normalized sends an N-CREATE-RQ or N-SET-RQ with an implicit VR little
// endian data set and reads its response.
func (c *Client) normalized(ctx context.Context, field uint16, sopClass, sopInstance string, data []byte) (dimse.Status, error) {
	name, rspField := "N-CREATE", dimse.NCreateRSP
	if field == dimse.NSetRQ {
		name, rspField = "N-SET", dimse.NSetRSP
	}
	id, err := c.context(sopClass, dataset.ImplicitVRLittleEndian)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", name, sopInstance, err)
	}
	defer c.watch(ctx)()
	c.msgID++
	cmd := &dimse.Command{CommandField: field, MessageID: c.msgID, CommandDataSetType: dimse.DataSetPresent}
	if field == dimse.NSetRQ {
		cmd.RequestedSOPClassUID, cmd.RequestedSOPInstanceUID = sopClass, sopInstance
	} else {
		cmd.AffectedSOPClassUID, cmd.AffectedSOPInstanceUID = sopClass, sopInstance
	}
	if err := c.a.WriteMessage(id, cmd.Encode(), data); err != nil {
		return 0, fmt.Errorf("%s %s: %w", name, sopInstance, c.ctxErr(ctx, err))
	}
	rsp, err := c.response(rspField)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", name, sopInstance, c.ctxErr(ctx, err))
	}
	if rsp.Status.IsFailure() {
		return rsp.Status, fmt.Errorf("%s %s: %w", name, sopInstance, &StatusError{Status: rsp.Status, Comment: rsp.ErrorComment})
	}
	return rsp.Status, nil
}

// EncodeMPPS encodes the step's data set in implicit VR little endian,
// elements in tag order, sequences and items of defined length.
func EncodeMPPS(m MPPS) []byte {
	var b []byte
	if m.PatientID != "" {
		b = appendText(b, 0x0010, 0x0020, m.PatientID, ' ')
	}
	if m.Status != "" {
		b = appendText(b, 0x0040, 0x0252, m.Status, ' ')
	}
	if m.StudyInstanceUID != "" || m.AccessionNumber != "" {
		var it []byte
		if m.AccessionNumber != "" {
			it = appendText(it, 0x0008, 0x0050, m.AccessionNumber, ' ')
		}
		if m.StudyInstanceUID != "" {
			it = appendText(it, 0x0020, 0x000D, m.StudyInstanceUID, 0)
		}
		b = appendSeq(b, 0x0040, 0x0270, [][]byte{it})
	}
	if len(m.Series) > 0 {
		var series [][]byte
		for _, s := range m.Series {
			var refs [][]byte
			for _, sop := range s.SOPInstanceUIDs {
				var r []byte
				r = appendText(r, 0x0008, 0x1150, s.SOPClassUID, 0)
				r = appendText(r, 0x0008, 0x1155, sop, 0)
				refs = append(refs, r)
			}
			var it []byte
			it = appendSeq(it, 0x0008, 0x1140, refs)
			it = appendText(it, 0x0020, 0x000E, s.SeriesInstanceUID, 0)
			series = append(series, it)
		}
		b = appendSeq(b, 0x0040, 0x0340, series)
	}
	return b
}
