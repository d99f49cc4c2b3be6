package hl7

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	lenaten "github.com/lenaten/hl7"
)

// TestDifferentialLenaten compares our parser with github.com/lenaten/hl7
// on plain-ASCII inputs without escape sequences, where that library is
// right: for every non-MSH segment, every field repetition's components.
func TestDifferentialLenaten(t *testing.T) {
	inputs := map[string][]byte{
		"orm_o01_plain.hl7": readTestdata(t, "orm_o01_plain.hl7"),
		"inline":            []byte("MSH|^~\\&|A|B|C|D|2025||ADT^A01|9|P|2.5\rEVN|A01|2025\rPID|1||X1^^^F^MR~X2^^^G^PI||DOE^JO^^^^^L|||M\rPV1|1|I|W^1^2\r"),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			if bytes.IndexByte(in, '\\') != bytes.Index(in, []byte(`\&`)) || bytes.Count(in, []byte(`\`)) != 1 {
				t.Fatal("input holds escape sequences")
			}
			ours := mustParse(t, in)
			// lenaten/hl7 fails on a final segment terminator and needs
			// spare capacity after the input (it reads one byte past it).
			trimmed := bytes.TrimRight(in, "\r")
			buf := make([]byte, len(trimmed), len(trimmed)+8)
			copy(buf, trimmed)
			theirs := lenaten.NewMessage(buf)
			if err := theirs.Parse(); err != nil {
				t.Fatalf("lenaten Parse: %v", err)
			}
			got := dumpOurs(ours)
			if len(got) != len(ours.AllSegments())-1 || len(got[0]) < 2 {
				t.Fatalf("dump of our parse is too small: %v", got)
			}
			want := dumpLenaten(theirs)
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("ours vs lenaten (-ours +lenaten):\n%s", diff)
			}
		})
	}
}

// dump is segment ID -> fields -> repetitions -> components.
type dump [][][][]string

func dumpOurs(m *Message) dump {
	var out dump
	for _, s := range m.AllSegments()[1:] {
		var fields [][][]string
		for f := 1; f <= s.NumFields(); f++ {
			var reps [][]string
			for r := 1; r <= max(1, s.NumRepetitions(f)); r++ {
				var comps []string
				n := bytes.Count(nth(s.Raw(f), m.d.Repetition, r), []byte{'^'}) + 1
				for c := 1; c <= n; c++ {
					comps = append(comps, s.Component(f, r, c))
				}
				reps = append(reps, comps)
			}
			fields = append(fields, reps)
		}
		out = append(out, append([][][]string{{{s.ID()}}}, fields...))
	}
	return out
}

func dumpLenaten(m *lenaten.Message) dump {
	var out dump
	for _, s := range m.Segments[1:] {
		var fields [][][]string
		maxSeq := 0
		for _, f := range s.Fields {
			maxSeq = max(maxSeq, f.SeqNum)
		}
		id := string(bytes.TrimRight(s.Fields[0].Value, "\r"))
		for seq := 1; seq <= maxSeq; seq++ {
			all, _ := s.AllFields(seq)
			var reps [][]string
			for _, f := range all {
				var comps []string
				for _, c := range f.Components {
					comps = append(comps, string(bytes.TrimRight(c.Value, "\r")))
				}
				if len(comps) == 0 {
					comps = []string{""}
				}
				reps = append(reps, comps)
			}
			fields = append(fields, reps)
		}
		out = append(out, append([][][]string{{{id}}}, fields...))
	}
	return out
}
