package dimse

import (
	"errors"
	"fmt"
	"io"

	"radbridge/dicom/ul"
)

// Status is a DIMSE status code (PS3.7 annex C).
type Status uint16

// Status codes used by this implementation (PS3.7 annex C, PS3.4 annexes B,
// F and CC).
const (
	StatusSuccess                Status = 0x0000
	StatusUnrecognizedOperation  Status = 0x0211
	StatusSOPClassNotSupported   Status = 0x0122
	StatusProcessingFailure      Status = 0x0110
	StatusInvalidAttributeValue  Status = 0x0106
	StatusMissingAttribute       Status = 0x0120
	StatusNoSuchSOPInstance      Status = 0x0112
	StatusDuplicateSOPInstance   Status = 0x0111
	StatusResourceLimitation     Status = 0x0213
	StatusOutOfResources         Status = 0xA700
	StatusDataSetDoesNotMatchSOP Status = 0xA900
	StatusCannotUnderstand       Status = 0xC000
)

// IsFailure reports whether s is a failure (not success, warning or pending).
func (s Status) IsFailure() bool {
	switch {
	case s == StatusSuccess, s == 0x0001, s == 0x0107, s == 0x0116, s&0xF000 == 0xB000, s == 0xFF00, s == 0xFF01:
		return false
	}
	return true
}

func (s Status) String() string { return fmt.Sprintf("0x%04X", uint16(s)) }

// Errors returned by ReadMessage and DataReader.
var (
	ErrUnexpectedPDV   = errors.New("unexpected PDV")
	ErrCommandTooLarge = errors.New("command set too large")
)

// PDVReader is the part of *ul.Association that reads messages.
type PDVReader interface {
	ReadPDV() (ul.PDV, error)
}

// MessageWriter is the part of *ul.Association that sends messages.
type MessageWriter interface {
	WriteMessage(contextID byte, command, data []byte) error
}

// Message is a received DIMSE message. When the command announces a data
// set, Data streams it fragment by fragment and must be read to io.EOF (or
// the association aborted) before the next ReadMessage.
type Message struct {
	ContextID byte
	Command   *Command
	Data      *DataReader
}

// ReadMessage reads the command set of the next message (PS3.7 section 9.3
// / 10.3, PS3.8 annex E: command fragments until the last one). A command
// set longer than maxCommand bytes is refused with ErrCommandTooLarge.
func ReadMessage(r PDVReader, maxCommand int) (*Message, error) {
	if maxCommand <= 0 || maxCommand > maxCommandValue {
		maxCommand = maxCommandValue
	}
	var cmd []byte
	var id byte
	first := true
	for {
		v, err := r.ReadPDV()
		if err != nil {
			return nil, fmt.Errorf("read command: %w", err)
		}
		if !v.Command {
			return nil, fmt.Errorf("read command: data PDV before command: %w", ErrUnexpectedPDV)
		}
		if first {
			id, first = v.ContextID, false
		} else if v.ContextID != id {
			return nil, fmt.Errorf("read command: context changed from %d to %d: %w", id, v.ContextID, ErrUnexpectedPDV)
		}
		if len(cmd)+len(v.Data) > maxCommand {
			return nil, fmt.Errorf("read command: %w", ErrCommandTooLarge)
		}
		cmd = append(cmd, v.Data...)
		if v.Last {
			break
		}
	}
	c, err := DecodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	m := &Message{ContextID: id, Command: c}
	if c.HasDataSet() {
		m.Data = &DataReader{r: r, id: id}
	}
	return m, nil
}

// DataReader streams a data set's PDV fragments (PS3.8 annex E.2) without
// buffering more than the current PDV. It returns io.EOF after the last
// fragment.
type DataReader struct {
	r    PDVReader
	id   byte
	cur  []byte
	last bool
	err  error
	n    int64
}

// Read implements io.Reader.
func (d *DataReader) Read(p []byte) (int, error) {
	for len(d.cur) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		if d.last {
			return 0, io.EOF
		}
		v, err := d.r.ReadPDV()
		if err != nil {
			d.err = fmt.Errorf("read data set: %w", err)
			return 0, d.err
		}
		if v.Command || v.ContextID != d.id {
			d.err = fmt.Errorf("read data set: command or context %d PDV inside data set of context %d: %w", v.ContextID, d.id, ErrUnexpectedPDV)
			return 0, d.err
		}
		d.cur, d.last = v.Data, v.Last
	}
	n := copy(p, d.cur)
	d.cur = d.cur[n:]
	d.n += int64(n)
	return n, nil
}

// N is the number of data set bytes read so far.
func (d *DataReader) N() int64 { return d.n }

// Done reports whether the whole data set has been read.
func (d *DataReader) Done() bool { return d.last && len(d.cur) == 0 }

// Drain discards the rest of the data set.
func (d *DataReader) Drain() error {
	_, err := io.Copy(io.Discard, d)
	return err
}

// Respond sends a response command (no data set) for the request req with
// the given response command field and status.
func Respond(w MessageWriter, contextID byte, req *Command, field uint16, status Status, comment string) error {
	rsp := &Command{
		CommandField:              field,
		MessageIDBeingRespondedTo: req.MessageID,
		CommandDataSetType:        NoDataSet,
		Status:                    status,
		AffectedSOPClassUID:       req.AffectedSOPClassUID,
		AffectedSOPInstanceUID:    req.AffectedSOPInstanceUID,
	}
	if status.IsFailure() {
		rsp.ErrorComment = comment
	}
	switch req.CommandField {
	case NSetRQ, NGetRQ, NActionRQ, NDeleteRQ:
		// N-SET-RSP and friends carry the requested instance as affected
		// (PS3.7 section 10.3.3).
		rsp.AffectedSOPClassUID = req.RequestedSOPClassUID
		rsp.AffectedSOPInstanceUID = req.RequestedSOPInstanceUID
	}
	if err := w.WriteMessage(contextID, rsp.Encode(), nil); err != nil {
		return fmt.Errorf("write response 0x%04x: %w", field, err)
	}
	return nil
}
