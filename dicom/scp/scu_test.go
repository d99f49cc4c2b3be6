package scp

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"radbridge/dicom/dimse"
	"radbridge/dicom/ul"
)

// testSCU is a minimal in-process storage/notification SCU for tests and
// benchmarks: it sends exactly the bytes it is given.
type testSCU struct {
	a     *ul.Association
	msgID uint16
}

const (
	ctSOPClass = "1.2.840.10008.5.1.4.1.1.2"
	pcCT       = 1
	pcCTImpl   = 3
	pcIAN      = 5
	pcMPPS     = 7
	pcEcho     = 9
)

func dialSCU(t testing.TB, s *testSCP, calling string) *testSCU {
	t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(s.host, s.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ul.Request(context.Background(), conn, ul.RequestConfig{
		CallingAE: calling,
		CalledAE:  "RADBRIDGE",
		PresentationContexts: []ul.PresentationContextRQ{
			{ID: pcCT, AbstractSyntax: ctSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2.1"}},
			{ID: pcCTImpl, AbstractSyntax: ctSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
			{ID: pcIAN, AbstractSyntax: IANSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
			{ID: pcMPPS, AbstractSyntax: MPPSSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
			{ID: pcEcho, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
		},
		Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatalf("associate: %v", err)
	}
	return &testSCU{a: a}
}

func (c *testSCU) response() (*dimse.Command, error) {
	m, err := dimse.ReadMessage(c.a, 0)
	if err != nil {
		return nil, err
	}
	if m.Data != nil {
		if err := m.Data.Drain(); err != nil {
			return nil, err
		}
	}
	return m.Command, nil
}

// store sends a C-STORE-RQ whose data set is streamed from data.
func (c *testSCU) store(pc byte, sopClass, sopInstance string, data io.Reader) (*dimse.Command, error) {
	c.msgID++
	cmd := &dimse.Command{
		CommandField:           dimse.CStoreRQ,
		MessageID:              c.msgID,
		AffectedSOPClassUID:    sopClass,
		AffectedSOPInstanceUID: sopInstance,
		CommandDataSetType:     dimse.DataSetPresent,
	}
	if err := c.a.WriteMessage(pc, cmd.Encode(), nil); err != nil {
		return nil, err
	}
	w := c.a.NewWriter(pc, false)
	if _, err := io.Copy(w, data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return c.response()
}

// normalized sends an N-CREATE-RQ or N-SET-RQ.
func (c *testSCU) normalized(pc byte, field uint16, class, inst string, data []byte) (*dimse.Command, error) {
	c.msgID++
	cmd := &dimse.Command{CommandField: field, MessageID: c.msgID, CommandDataSetType: dimse.DataSetPresent}
	if field == dimse.NSetRQ {
		cmd.RequestedSOPClassUID, cmd.RequestedSOPInstanceUID = class, inst
	} else {
		cmd.AffectedSOPClassUID, cmd.AffectedSOPInstanceUID = class, inst
	}
	if err := c.a.WriteMessage(pc, cmd.Encode(), data); err != nil {
		return nil, err
	}
	return c.response()
}

func (c *testSCU) release(t testing.TB) {
	t.Helper()
	if err := c.a.Release(); err != nil {
		t.Errorf("release: %v", err)
	}
}

// ds builds implicit VR little endian data sets (PS3.5 section 7.1.3).
type ds []byte

func (d ds) str(group, element uint16, v string) ds {
	if len(v)%2 == 1 {
		v += " "
	}
	d = binary.LittleEndian.AppendUint16(d, group)
	d = binary.LittleEndian.AppendUint16(d, element)
	d = binary.LittleEndian.AppendUint32(d, uint32(len(v)))
	return append(d, v...)
}

func (d ds) uid(group, element uint16, v string) ds {
	if len(v)%2 == 1 {
		v += "\x00"
	}
	return d.str(group, element, v)
}

// seq appends a defined-length sequence of items.
func (d ds) seq(group, element uint16, items ...ds) ds {
	var body []byte
	for _, it := range items {
		body = binary.LittleEndian.AppendUint32(body, 0xE000FFFE)
		body = binary.LittleEndian.AppendUint32(body, uint32(len(it)))
		body = append(body, it...)
	}
	d = binary.LittleEndian.AppendUint16(d, group)
	d = binary.LittleEndian.AppendUint16(d, element)
	d = binary.LittleEndian.AppendUint32(d, uint32(len(body)))
	return append(d, body...)
}

// ctHeader is a small CT header (implicit VR LE) in tag order up to, not
// including, Pixel Data.
func ctHeader(sop string) ds {
	return ds{}.
		str(0x0008, 0x0005, "ISO_IR 100").
		uid(0x0008, 0x0016, ctSOPClass).
		uid(0x0008, 0x0018, sop).
		str(0x0008, 0x0050, "ACC-42").
		str(0x0008, 0x0060, "CT").
		str(0x0010, 0x0010, "M\xfcller^J\xfcrgen").
		str(0x0010, 0x0020, "PAT-7").
		uid(0x0020, 0x000D, "1.2.826.0.1.3680043.10.1447.100").
		uid(0x0020, 0x000E, "1.2.826.0.1.3680043.10.1447.100.1").
		str(0x0020, 0x0013, "1")
}

// pixelHeader appends an OW Pixel Data element header of n bytes.
func pixelHeader(d ds, n uint32) ds {
	d = append(d, 0xE0, 0x7F, 0x10, 0x00)
	return binary.LittleEndian.AppendUint32(d, n)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

var _ = fmt.Sprint
