package scu

import (
	"context"
	"encoding/binary"
	"fmt"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
)

// IAN is an Instance Availability Notification (PS3.3 section C.4.23).
type IAN struct {
	// SOPInstanceUID identifies the notification; NewUID() if empty.
	SOPInstanceUID   string
	StudyInstanceUID string
	Series           []IANSeries
}

// IANSeries is one item of the Referenced Series Sequence (0008,1115).
type IANSeries struct {
	SeriesInstanceUID string
	Instances         []IANInstance
}

// IANInstance is one item of the Referenced SOP Sequence (0008,1199).
type IANInstance struct {
	SOPClassUID, SOPInstanceUID string
	// InstanceAvailability is ONLINE if empty.
	InstanceAvailability string
	// RetrieveAETitle is optional.
	RetrieveAETitle string
}

// NCreateIAN sends the notification with N-CREATE (PS3.7 section 10.3.5,
// PS3.4 annex R) on an accepted Instance Availability Notification context
// (propose Context{IANSOPClass, [dataset.ImplicitVRLittleEndian]}). The
// data set is implicit VR little endian with an empty Referenced Performed
// Procedure Step Sequence.
func (c *Client) NCreateIAN(ctx context.Context, ian IAN) (dimse.Status, error) {
	id, err := c.context(IANSOPClass, dataset.ImplicitVRLittleEndian)
	if err != nil {
		return 0, fmt.Errorf("N-CREATE IAN: %w", err)
	}
	if ian.SOPInstanceUID == "" {
		ian.SOPInstanceUID = NewUID()
	}
	defer c.watch(ctx)()
	c.msgID++
	cmd := &dimse.Command{
		CommandField:           dimse.NCreateRQ,
		MessageID:              c.msgID,
		AffectedSOPClassUID:    IANSOPClass,
		AffectedSOPInstanceUID: ian.SOPInstanceUID,
		CommandDataSetType:     dimse.DataSetPresent,
	}
	if err := c.a.WriteMessage(id, cmd.Encode(), EncodeIAN(ian)); err != nil {
		return 0, fmt.Errorf("N-CREATE IAN: %w", c.ctxErr(ctx, err))
	}
	rsp, err := c.response(dimse.NCreateRSP)
	if err != nil {
		return 0, fmt.Errorf("N-CREATE IAN: %w", c.ctxErr(ctx, err))
	}
	if rsp.Status.IsFailure() {
		return rsp.Status, fmt.Errorf("N-CREATE IAN: %w", &StatusError{Status: rsp.Status, Comment: rsp.ErrorComment})
	}
	return rsp.Status, nil
}

// EncodeIAN encodes the notification's data set in implicit VR little
// endian (PS3.5 section 7.1.3), elements in tag order, sequences and items
// of defined length.
func EncodeIAN(ian IAN) []byte {
	var series [][]byte
	for _, s := range ian.Series {
		var items [][]byte
		for _, in := range s.Instances {
			av := in.InstanceAvailability
			if av == "" {
				av = "ONLINE"
			}
			var it []byte
			if in.RetrieveAETitle != "" {
				it = appendText(it, 0x0008, 0x0054, in.RetrieveAETitle, ' ')
			}
			it = appendText(it, 0x0008, 0x0056, av, ' ')
			it = appendText(it, 0x0008, 0x1150, in.SOPClassUID, 0)
			it = appendText(it, 0x0008, 0x1155, in.SOPInstanceUID, 0)
			items = append(items, it)
		}
		var it []byte
		it = appendSeq(it, 0x0008, 0x1199, items)
		it = appendText(it, 0x0020, 0x000E, s.SeriesInstanceUID, 0)
		series = append(series, it)
	}
	var b []byte
	b = appendSeq(b, 0x0008, 0x1111, nil)
	b = appendSeq(b, 0x0008, 0x1115, series)
	b = appendText(b, 0x0020, 0x000D, ian.StudyInstanceUID, 0)
	return b
}

func appendHeader(b []byte, group, element uint16, n int) []byte {
	b = binary.LittleEndian.AppendUint16(b, group)
	b = binary.LittleEndian.AppendUint16(b, element)
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

// appendText appends a string value padded to even length (UIDs with NUL,
// other VRs with a space; PS3.5 section 6.2).
func appendText(b []byte, group, element uint16, v string, pad byte) []byte {
	n := len(v) + len(v)%2
	b = appendHeader(b, group, element, n)
	b = append(b, v...)
	if len(v)%2 == 1 {
		b = append(b, pad)
	}
	return b
}

func appendSeq(b []byte, group, element uint16, items [][]byte) []byte {
	n := 0
	for _, it := range items {
		n += 8 + len(it)
	}
	b = appendHeader(b, group, element, n)
	for _, it := range items {
		b = appendHeader(b, 0xFFFE, 0xE000, len(it))
		b = append(b, it...)
	}
	return b
}
