package dimse

import (
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"radbridge/dicom/ul"
)

func TestCommandRoundTrip(t *testing.T) {
	cmds := []*Command{
		{CommandField: CStoreRQ, MessageID: 7, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", AffectedSOPInstanceUID: "1.2.3", CommandDataSetType: DataSetPresent},
		{CommandField: CStoreRSP, MessageIDBeingRespondedTo: 7, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", AffectedSOPInstanceUID: "1.2.3", CommandDataSetType: NoDataSet, Status: StatusCannotUnderstand, ErrorComment: "bad"},
		{CommandField: CEchoRQ, MessageID: 1, AffectedSOPClassUID: "1.2.840.10008.1.1", CommandDataSetType: NoDataSet},
		{CommandField: NSetRQ, MessageID: 2, RequestedSOPClassUID: "1.2.840.10008.3.1.2.3.3", RequestedSOPInstanceUID: "1.2.4", CommandDataSetType: DataSetPresent},
	}
	for _, c := range cmds {
		got, err := DecodeCommand(c.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(got, c); d != "" {
			t.Errorf("round trip (-got +want):\n%s", d)
		}
	}
}

func TestDecodeCommandBounds(t *testing.T) {
	for name, b := range map[string][]byte{
		"length beyond":   {0, 0, 0, 1, 0xFF, 0xFF, 0, 0, 1, 0},
		"wrong group":     {8, 0, 0x18, 0, 2, 0, 0, 0, '1', 0},
		"truncated":       {0, 0, 0, 1, 2},
		"US of 3 bytes":   {0, 0, 0, 1, 3, 0, 0, 0, 1, 0, 0},
		"no command type": {0, 0, 0, 1, 2, 0, 0, 0, 1, 0},
	} {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrMalformedCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type pdvs []ul.PDV

func (p *pdvs) ReadPDV() (ul.PDV, error) {
	if len(*p) == 0 {
		return ul.PDV{}, io.EOF
	}
	v := (*p)[0]
	*p = (*p)[1:]
	return v, nil
}

func TestReadMessageFragments(t *testing.T) {
	cmd := (&Command{CommandField: CStoreRQ, MessageID: 3, AffectedSOPClassUID: "1.2", AffectedSOPInstanceUID: "1.3", CommandDataSetType: DataSetPresent}).Encode()
	in := pdvs{
		{ContextID: 1, Command: true, Data: cmd[:5]},
		{ContextID: 1, Command: true, Last: true, Data: cmd[5:]},
		{ContextID: 1, Data: []byte("abc")},
		{ContextID: 1, Last: true, Data: []byte("de")},
	}
	m, err := ReadMessage(&in, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(m.Data)
	if err != nil || string(b) != "abcde" {
		t.Errorf("data %q %v", b, err)
	}
	// A command PDV inside a data set is a protocol error.
	in = pdvs{{ContextID: 1, Command: true, Last: true, Data: cmd}, {ContextID: 1, Data: []byte("a")}, {ContextID: 1, Command: true, Data: cmd}}
	m, err = ReadMessage(&in, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(m.Data); !errors.Is(err, ErrUnexpectedPDV) {
		t.Errorf("interleaved command: %v", err)
	}
}

func FuzzCommand(f *testing.F) {
	f.Add((&Command{CommandField: CEchoRQ, MessageID: 1, AffectedSOPClassUID: "1.2.840.10008.1.1", CommandDataSetType: NoDataSet}).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		if _, err := DecodeCommand(c.Encode()); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
