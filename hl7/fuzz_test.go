package hl7

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.hl7"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("MSH|^~\\&|A|B|C|D|2025||ORU^R01|1|P|2.5.1\rOBX|1|TX|||\\X41\\\\.br\\\\Zx\\|\r"))
	f.Add([]byte("MSH#:*!@%#\nPID#1\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Parse(in)
		if err != nil {
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("error %v is not an *Error", err)
			}
		}
		if m == nil {
			_ = NewACK(nil, AckReject, time.Unix(0, 0), "X", he(err))
			return
		}
		// Every accessor must be safe on every parsed message.
		_, _, _ = m.MessageType()
		_ = m.ControlID() + m.Version() + m.AcceptAckType() + m.AppAckType() + m.Get("PID-3[2]-4-1")
		for _, s := range m.AllSegments() {
			for fld := 0; fld <= s.NumFields()+1; fld++ {
				_ = s.Field(fld)
				_ = s.Repetitions(fld)
				_ = s.Sub(fld, 1, 2, 2)
			}
		}
		ack := NewACK(m, AckAccept, time.Unix(0, 0), "X", he(err))
		am, aerr := Parse(ack)
		if aerr != nil && !errors.Is(aerr, ErrUnsupportedCharset) {
			t.Fatalf("our own ACK does not parse: %v\n%q", aerr, ack)
		}
		if am != nil && am.Get("MSA-2") != m.MSH().Field(10) {
			t.Fatalf("ACK MSA-2 %q, want %q", am.Get("MSA-2"), m.MSH().Field(10))
		}
		if err != nil || m.Converted() {
			return
		}
		// Re-encoding and re-parsing is stable.
		m2, err := Parse(m.Bytes())
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		s1, s2 := m.AllSegments(), m2.AllSegments()
		if len(s1) != len(s2) {
			t.Fatalf("re-parse: %d segments, want %d", len(s2), len(s1))
		}
		for i := range s1 {
			if s1[i].ID() != s2[i].ID() || s1[i].NumFields() != s2[i].NumFields() {
				t.Fatalf("segment %d differs", i)
			}
			for fld := 1; fld <= s1[i].NumFields(); fld++ {
				if string(s1[i].Raw(fld)) != string(s2[i].Raw(fld)) || s1[i].Field(fld) != s2[i].Field(fld) {
					t.Fatalf("segment %d field %d differs", i, fld)
				}
			}
		}
	})
}

// he returns err as an *Error, or nil.
func he(err error) *Error {
	var e *Error
	errors.As(err, &e)
	return e
}
