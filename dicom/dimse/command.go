// Package dimse implements the DICOM message service element, DICOM PS3.7:
// command sets (section 6.3 and annex E, always encoded implicit VR little
// endian with the group length (0000,0000)), the status codes of annex C and
// the messages C-ECHO, C-STORE, N-CREATE and N-SET (sections 9.3 and 10.3)
// carried over an upper-layer association (package ul, PS3.8).
//
// The package does not log; it returns errors.
package dimse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// CommandField values (PS3.7 annex E, table E.1-1).
const (
	CStoreRQ        uint16 = 0x0001
	CStoreRSP       uint16 = 0x8001
	CGetRQ          uint16 = 0x0010
	CFindRQ         uint16 = 0x0020
	CMoveRQ         uint16 = 0x0021
	CEchoRQ         uint16 = 0x0030
	CEchoRSP        uint16 = 0x8030
	NEventReportRQ  uint16 = 0x0100
	NGetRQ          uint16 = 0x0110
	NSetRQ          uint16 = 0x0120
	NSetRSP         uint16 = 0x8120
	NActionRQ       uint16 = 0x0130
	NCreateRQ       uint16 = 0x0140
	NCreateRSP      uint16 = 0x8140
	NDeleteRQ       uint16 = 0x0150
	CCancelRQ       uint16 = 0x0FFF
	responseBit     uint16 = 0x8000
	NoDataSet       uint16 = 0x0101
	DataSetPresent  uint16 = 0x0000 // any value other than 0x0101
	PriorityMedium  uint16 = 0x0000
	maxCommandValue        = 64 * 1024
)

// Command element tags, group 0000 (PS3.7 annex E).
const (
	tagGroupLength               uint32 = 0x00000000
	tagAffectedSOPClassUID       uint32 = 0x00000002
	tagRequestedSOPClassUID      uint32 = 0x00000003
	tagCommandField              uint32 = 0x00000100
	tagMessageID                 uint32 = 0x00000110
	tagMessageIDBeingRespondedTo uint32 = 0x00000120
	tagMoveDestination           uint32 = 0x00000600
	tagPriority                  uint32 = 0x00000700
	tagCommandDataSetType        uint32 = 0x00000800
	tagStatus                    uint32 = 0x00000900
	tagOffendingElement          uint32 = 0x00000901
	tagErrorComment              uint32 = 0x00000902
	tagErrorID                   uint32 = 0x00000903
	tagAffectedSOPInstanceUID    uint32 = 0x00001000
	tagRequestedSOPInstanceUID   uint32 = 0x00001001
	tagEventTypeID               uint32 = 0x00001002
	tagMoveOriginatorAE          uint32 = 0x00001030
	tagMoveOriginatorMessageID   uint32 = 0x00001031
)

// ErrMalformedCommand reports a command set that cannot be decoded.
var ErrMalformedCommand = errors.New("malformed DIMSE command set")

// Command is a DIMSE command set (PS3.7 section 6.3). Only the elements used
// by the services implemented here are represented; others are skipped on
// decode.
type Command struct {
	CommandField              uint16
	MessageID                 uint16
	MessageIDBeingRespondedTo uint16
	AffectedSOPClassUID       string
	AffectedSOPInstanceUID    string
	RequestedSOPClassUID      string
	RequestedSOPInstanceUID   string
	Priority                  uint16
	CommandDataSetType        uint16
	Status                    Status
	ErrorComment              string
	MoveOriginatorAE          string
	MoveOriginatorMessageID   uint16
	HasMoveOriginator         bool
}

// IsResponse reports whether the command field is a response.
func (c *Command) IsResponse() bool { return c.CommandField&responseBit != 0 }

// HasDataSet reports whether a data set follows the command (PS3.7 E.1).
func (c *Command) HasDataSet() bool { return c.CommandDataSetType != NoDataSet }

func appendUS(dst []byte, tag uint32, v uint16) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(tag>>16))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(tag))
	dst = binary.LittleEndian.AppendUint32(dst, 2)
	return binary.LittleEndian.AppendUint16(dst, v)
}

// appendStr appends a string element padded to even length: UIDs with NUL,
// other VRs with a space (PS3.5 section 6.2).
func appendStr(dst []byte, tag uint32, v string, pad byte) []byte {
	n := len(v)
	if n%2 == 1 {
		n++
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(tag>>16))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(tag))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, v...)
	if len(v)%2 == 1 {
		dst = append(dst, pad)
	}
	return dst
}

// Encode returns the command set in implicit VR little endian with its
// group length element first (PS3.7 section 6.3.1).
func (c *Command) Encode() []byte {
	b := make([]byte, 12, 256)
	if c.AffectedSOPClassUID != "" {
		b = appendStr(b, tagAffectedSOPClassUID, c.AffectedSOPClassUID, 0)
	}
	if c.RequestedSOPClassUID != "" {
		b = appendStr(b, tagRequestedSOPClassUID, c.RequestedSOPClassUID, 0)
	}
	b = appendUS(b, tagCommandField, c.CommandField)
	if c.IsResponse() {
		b = appendUS(b, tagMessageIDBeingRespondedTo, c.MessageIDBeingRespondedTo)
	} else {
		b = appendUS(b, tagMessageID, c.MessageID)
		if c.CommandField == CStoreRQ {
			b = appendUS(b, tagPriority, c.Priority)
		}
	}
	b = appendUS(b, tagCommandDataSetType, c.CommandDataSetType)
	if c.IsResponse() {
		b = appendUS(b, tagStatus, uint16(c.Status))
		if c.ErrorComment != "" {
			ec := c.ErrorComment
			if len(ec) > 64 {
				ec = ec[:64] // LO: 64 characters maximum
			}
			b = appendStr(b, tagErrorComment, ec, ' ')
		}
	}
	if c.AffectedSOPInstanceUID != "" {
		b = appendStr(b, tagAffectedSOPInstanceUID, c.AffectedSOPInstanceUID, 0)
	}
	if c.RequestedSOPInstanceUID != "" {
		b = appendStr(b, tagRequestedSOPInstanceUID, c.RequestedSOPInstanceUID, 0)
	}
	if c.HasMoveOriginator {
		b = appendStr(b, tagMoveOriginatorAE, c.MoveOriginatorAE, ' ')
		b = appendUS(b, tagMoveOriginatorMessageID, c.MoveOriginatorMessageID)
	}
	// (0000,0000) UL group length: bytes after this element.
	binary.LittleEndian.PutUint32(b[0:], 0)
	binary.LittleEndian.PutUint32(b[4:], 4)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(b)-12))
	return b
}

func trimValue(b []byte) string {
	return strings.Trim(string(b), " \x00")
}

// DecodeCommand decodes an implicit VR little endian command set. Every
// element length is checked against the bytes present; elements outside
// group 0000 are refused, unknown group 0000 elements are skipped.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) > maxCommandValue {
		return nil, fmt.Errorf("decode command: %d bytes: %w", len(b), ErrMalformedCommand)
	}
	c := &Command{}
	var hasField, hasType bool
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, fmt.Errorf("decode command: truncated element header: %w", ErrMalformedCommand)
		}
		group := binary.LittleEndian.Uint16(b)
		tag := uint32(group)<<16 | uint32(binary.LittleEndian.Uint16(b[2:]))
		n := binary.LittleEndian.Uint32(b[4:])
		if group != 0 {
			return nil, fmt.Errorf("decode command: element (%04x,%04x) outside group 0000: %w", group, uint16(tag), ErrMalformedCommand)
		}
		if uint64(n) > uint64(len(b)-8) {
			return nil, fmt.Errorf("decode command: element (0000,%04x) length %d exceeds %d bytes: %w", uint16(tag), n, len(b)-8, ErrMalformedCommand)
		}
		v := b[8 : 8+n]
		b = b[8+n:]
		us := func() (uint16, error) {
			if len(v) != 2 {
				return 0, fmt.Errorf("decode command: element (0000,%04x) US length %d: %w", uint16(tag), len(v), ErrMalformedCommand)
			}
			return binary.LittleEndian.Uint16(v), nil
		}
		var err error
		switch tag {
		case tagAffectedSOPClassUID:
			c.AffectedSOPClassUID = trimValue(v)
		case tagRequestedSOPClassUID:
			c.RequestedSOPClassUID = trimValue(v)
		case tagCommandField:
			c.CommandField, err = us()
			hasField = true
		case tagMessageID:
			c.MessageID, err = us()
		case tagMessageIDBeingRespondedTo:
			c.MessageIDBeingRespondedTo, err = us()
		case tagPriority:
			c.Priority, err = us()
		case tagCommandDataSetType:
			c.CommandDataSetType, err = us()
			hasType = true
		case tagStatus:
			var s uint16
			s, err = us()
			c.Status = Status(s)
		case tagErrorComment:
			c.ErrorComment = trimValue(v)
		case tagAffectedSOPInstanceUID:
			c.AffectedSOPInstanceUID = trimValue(v)
		case tagRequestedSOPInstanceUID:
			c.RequestedSOPInstanceUID = trimValue(v)
		case tagMoveOriginatorAE:
			c.MoveOriginatorAE = trimValue(v)
			c.HasMoveOriginator = true
		case tagMoveOriginatorMessageID:
			c.MoveOriginatorMessageID, err = us()
		}
		if err != nil {
			return nil, err
		}
	}
	if !hasField || !hasType {
		return nil, fmt.Errorf("decode command: missing Command Field or Command Data Set Type: %w", ErrMalformedCommand)
	}
	return c, nil
}
