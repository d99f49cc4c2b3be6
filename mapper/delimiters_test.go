package mapper_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"radbridge/hl7"
	"radbridge/mapper/rules"
)

// HL7 v2.5.1 §2.5.4: a message declares its own delimiters in MSH-1 and
// MSH-2. The tests below re-encode messages with other legal delimiter
// sets and require the mapper to emit the very same events.

// delimiterMessages are messages with sub-components (CX-4 as an HD with
// namespace&OID&type, NDL names), escapes in every kind of element and
// repetitions, beside the FHIR scenarios.
var delimiterMessages = []struct{ name, msg string }{
	{"ORM: HD authorities, escapes, repetitions", `MSH|^~\&|RADRIS^1.2.3.4.5^ISO|NORTHWING|RADBRIDGE|IMAGING|20260310083000+0100||ORM^O01|ORM-2001|P|2.3
PID|1||998877665^^^SSA&2.16.840.1.113883.4.1&ISO^SS~MRN9001^^^NORTHWING&1.2.3.4&ISO^MR||O\T\BRIEN^SEAN \S\ JR||19700101|M
ORC|NW|PLC2001|FIL2001||SC||^^^20260310090000+0100^^S||20260310082900+0100|CLERK^RIS||1234^REFERRER\T\CO^SAM^^^DR
OBR|1|PLC2001|FIL2001|71250^CT CHEST \F\ ABDOMEN^C4|S||20260310082900+0100||||||Pain \R\ fever|||1234^REFERRER^SAM^^^DR||ACC2001|RP1|SPS1||||CT|||1^^^20260310090000+0100^^S||||^Rule out PE \E\ dissection`},
	{"ORU: NDL with escapes, OBX repetitions, NTE", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310113000+0100||ORU^R01^ORU_R01|ORU-2002|P|2.5.1
PID|1||MRN9001^^^NORTHWING&1.2.3.4&ISO^MR~998877665^^^SSA&2.16.840.1.113883.4.1&ISO^SS||O\T\BRIEN^SEAN||19700101|M
ORC|RE|PLC2001|FIL2001||CM
OBR|1|PLC2001|FIL2001|71250^CT CHEST \F\ ABDOMEN^C4|||20260310090500+0100|||||||||1234^REFERRER^SAM^^^DR||ACC2001|RP1|SPS1||20260310113000+0100||CT|F|||||||3333&RADIO\T\LOGIST&PAT \S\ Q
OBX|1|TX|RPT^Report^L|1|FINDINGS: a~b \R\ c~d \T\ e \S\ f \F\ g \E\ h.||||||F
OBX|2|ST|IMP^Impression^L|2|No acute abnormality.||N~HH|||F
NTE|1||Comment \T\ note: see prior~second repetition`},
	{"OMI: IPC, authority without sub-components", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260311100000+0100||OMI^O23^OMI_O23|OMI-2003|P|2.5.1
PID|1||X1^^^OTHER^PI~MRN9002^^^NORTHWING^MR||DOE^JANE
ORC|NW|PLC2003|FIL2003||SC|||||||1234^REFERRER^SAM^^^DR
TQ1|1||||||20260312080000+0100|||R
OBR|1|PLC2003|FIL2003|73721^MRI KNEE W/O CONTRAST^C4|||||||||||||||||||MR
IPC|ACC2003|RP2003|1.2.826.0.1.3680043.8.498.77|SPS2003|MR`},
	{"ORM: only another authority", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260311110000+0100||ORM^O01|ORM-2004|P|2.3
PID|1||X9^^^OTHER&1.9.9&ISO^PI||DOE^JOHN
ORC|NW|PLC2004|FIL2004||SC
OBR|1|PLC2004|FIL2004|71045^XR CHEST 1 VIEW^C4||||||||||||||ACC2004||||||CR`},
}

// delimiterCandidates are the characters a delimiter may be: printable
// ASCII punctuation, but not '.', which the \.br\ escape sequence uses.
var delimiterCandidates = func() []byte {
	var out []byte
	for c := byte(0x21); c <= 0x7e; c++ {
		if c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '.' {
			continue
		}
		out = append(out, c)
	}
	return out
}()

// randomDelimiters draws a legal delimiter set, with a truncation
// character one time in two.
func randomDelimiters(rng *rand.Rand) hl7.Delimiters {
	p := rng.Perm(len(delimiterCandidates))
	c := func(i int) byte { return delimiterCandidates[p[i]] }
	d := hl7.Delimiters{Field: c(0), Component: c(1), Repetition: c(2), Escape: c(3), Subcomponent: c(4)}
	if rng.Intn(2) == 0 {
		d.Truncation = c(5)
	}
	return d
}

// reencode writes the message raw (delimiters from its MSH) with the
// delimiters to: the structure is kept, escape sequences are rewritten with
// the new escape character, and every data character that is one of the
// new delimiters is escaped (\F\ \S\ \T\ \R\ \E\ \P\).
func reencode(t *testing.T, raw []byte, to hl7.Delimiters) []byte {
	t.Helper()
	m, err := hl7.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	from := m.Delimiters()
	text := func(b []byte) []byte {
		var out []byte
		for len(b) > 0 {
			c := b[0]
			if c == from.Escape {
				if j := bytes.IndexByte(b[1:], from.Escape); j >= 0 {
					seq := string(b[1 : 1+j])
					b = b[2+j:]
					// A delimiter escape stands for the old delimiter
					// character, which is data under the new set.
					switch {
					case seq == "F":
						c = from.Field
					case seq == "S":
						c = from.Component
					case seq == "T":
						c = from.Subcomponent
					case seq == "R":
						c = from.Repetition
					case seq == "E":
						c = from.Escape
					case seq == "P" && from.Truncation != 0:
						c = from.Truncation
					default: // \.br\, \Xhh\, \H\, \N\: the same sequence
						out = append(out, to.Escape)
						out = append(out, seq...)
						out = append(out, to.Escape)
						continue
					}
					out = appendData(out, c, to)
					continue
				}
			}
			out = appendData(out, c, to)
			b = b[1:]
		}
		return out
	}
	// Each level splits at the old separator and joins with the new one.
	split := func(b []byte, sep, with byte, inner func([]byte) []byte) []byte {
		parts := bytes.Split(b, []byte{sep})
		for i := range parts {
			parts[i] = inner(parts[i])
		}
		return bytes.Join(parts, []byte{with})
	}
	field := func(b []byte) []byte {
		return split(b, from.Repetition, to.Repetition, func(b []byte) []byte {
			return split(b, from.Component, to.Component, func(b []byte) []byte {
				return split(b, from.Subcomponent, to.Subcomponent, text)
			})
		})
	}
	enc := []byte{to.Component, to.Repetition, to.Escape, to.Subcomponent}
	if to.Truncation != 0 {
		enc = append(enc, to.Truncation)
	}
	var out []byte
	for _, s := range m.AllSegments() {
		out = append(out, s.ID()...)
		first := 1
		if s.ID() == "MSH" {
			out = append(out, to.Field)
			out = append(out, enc...)
			first = 3
		}
		for n := first; n <= s.NumFields(); n++ {
			out = append(out, to.Field)
			out = append(out, field(s.Raw(n))...)
		}
		out = append(out, '\r')
	}
	return out
}

// appendData appends data character c in the delimiter set to, escaped
// when it is one of the delimiters.
func appendData(out []byte, c byte, to hl7.Delimiters) []byte {
	code := ""
	switch c {
	case to.Field:
		code = "F"
	case to.Component:
		code = "S"
	case to.Subcomponent:
		code = "T"
	case to.Repetition:
		code = "R"
	case to.Escape:
		code = "E"
	}
	if to.Truncation != 0 && c == to.Truncation {
		code = "P"
	}
	if code == "" {
		return append(out, c)
	}
	out = append(out, to.Escape)
	out = append(out, code...)
	return append(out, to.Escape)
}

func TestReencodeKeepsValues(t *testing.T) {
	raw := []byte(strings.ReplaceAll(delimiterMessages[1].msg, "\n", "\r"))
	to := hl7.Delimiters{Field: '#', Component: '$', Repetition: '*', Escape: '!', Subcomponent: '%', Truncation: '@'}
	m2, err := hl7.Parse(reencode(t, raw, to))
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := hl7.Parse(raw)
	for _, path := range []string{"PID-3[1]-4-1", "PID-3[2]-4-2", "PID-5-1", "OBR-32-1-2", "OBR-32-1-3", "OBX-5[2]", "OBX-5[3]", "NTE-3", "MSH-7", "OBR-4-2"} {
		if got, want := m2.Get(path), m1.Get(path); got != want || want == "" {
			t.Errorf("%s: got %q, want %q (non-empty)", path, got, want)
		}
	}
	if m2.Delimiters() != to {
		t.Errorf("delimiters: got %+v, want %+v", m2.Delimiters(), to)
	}
}

// TestDelimitersDoNotChangeTheMapping maps every HL7 test message as sent
// and re-encoded with random legal delimiter sets, with and without a
// configured patient authority, and requires identical events.
func TestDelimitersDoNotChangeTheMapping(t *testing.T) {
	var msgs []struct{ name, msg string }
	msgs = append(msgs, fhirRIS...)
	msgs = append(msgs, delimiterMessages...)
	raw := make([][]byte, len(msgs))
	for i, m := range msgs {
		raw[i] = []byte(strings.ReplaceAll(strings.TrimSpace(m.msg), "\n", "\r") + "\r")
	}
	run := func(o rules.Options, d *hl7.Delimiters) *fhirRun {
		r := newFHIRRun(t, o)
		for i, m := range msgs {
			b := raw[i]
			if d != nil {
				b = reencode(t, b, *d)
			}
			r.hl7(m.name, string(b))
		}
		return r
	}
	rng := rand.New(rand.NewSource(20260310))
	sets := []hl7.Delimiters{hl7.DefaultDelimiters, {Field: '#', Component: '$', Repetition: '*', Escape: '!', Subcomponent: '%'}}
	for len(sets) < 24 {
		sets = append(sets, randomDelimiters(rng))
	}
	for _, o := range []rules.Options{
		{HL7PatientAuthority: "NORTHWING"},
		{},
		{HL7PatientAuthority: "NORTHWING", PatientIdentifierSystem: "urn:oid:1.2.3.4"},
	} {
		want := run(o, nil)
		if len(want.events) < len(msgs) {
			t.Fatalf("%+v: only %d events from %d messages", o, len(want.events), len(msgs))
		}
		for _, d := range sets {
			t.Run(fmt.Sprintf("%q %q", o.HL7PatientAuthority, []byte{d.Field, d.Component, d.Repetition, d.Escape, d.Subcomponent, d.Truncation}), func(t *testing.T) {
				got := run(o, &d)
				if len(got.events) != len(want.events) {
					t.Fatalf("%d events, want %d", len(got.events), len(want.events))
				}
				for i := range got.events {
					if diff := cmp.Diff(got.events[i].ev, want.events[i].ev, protocmp.Transform()); diff != "" {
						t.Errorf("%s: event %d (-got +want):\n%s", got.events[i].name, i, diff)
					}
				}
			})
		}
	}
}
