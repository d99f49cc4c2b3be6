package hl7

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, b []byte) *Message {
	t.Helper()
	m, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

func TestAccessorsOnTestdata(t *testing.T) {
	tests := []struct {
		file string
		path string
		want string
	}{
		{"orm_o01.hl7", "MSH-1", "|"},
		{"orm_o01.hl7", "MSH-2", `^~\&`},
		{"orm_o01.hl7", "MSH-4", "NORTHWING^1.2.840.99999.1.1^ISO"},
		{"orm_o01.hl7", "MSH-4-2", "1.2.840.99999.1.1"},
		{"orm_o01.hl7", "MSH-9-1", "ORM"},
		{"orm_o01.hl7", "MSH-9-2", "O01"},
		{"orm_o01.hl7", "MSH-10", "ORM000123"},
		{"orm_o01.hl7", "PID-3", "PAT4711^^^NORTHWING^MR"},
		{"orm_o01.hl7", "PID-3[2]", "998877665^^^SSA^SS"},
		{"orm_o01.hl7", "PID-3[2]-4", "SSA"},
		{"orm_o01.hl7", "PID-3[3]", ""},
		{"orm_o01.hl7", "PID-5-2", "ALEX"},
		{"orm_o01.hl7", "ORC-1", "NW"},
		{"orm_o01.hl7", "OBR-4-2", "CHEST 2 VIEWS PA&LAT"},
		{"orm_o01.hl7", "OBR-13", "Pt reports cough | fever ^ 3 days"},
		{"orm_o01.hl7", "ZDS-1-1", "1.2.840.99999.3.20250314.1"},
		{"orm_o01.hl7", "PV1-8-2", "REFERRER"},
		{"orm_o01.hl7", "PV1-99", ""},
		{"orm_o01.hl7", "XYZ-1", ""},
		{"omi_o23.hl7", "PID-5-1", "MÜLLER-ŁUKASZ"},
		{"omi_o23.hl7", "PID-5-2", "ZOË"},
		{"omi_o23.hl7", "PID-7", "19851224"},
		{"omi_o23.hl7", "IPC-3", "1.2.840.99999.3.20250315.77002"},
		{"omi_o23.hl7", "MSH-9-3", "OMI_O23"},
		{"oru_r01_latin1.hl7", "PID-5-1", "GRÄFE"},
		{"oru_r01_latin1.hl7", "PID-5-2", "RENÉ"},
		{"oru_r01_latin1.hl7", "OBX-5", "Befund: Herz normal groß."},
		{"oru_r01.hl7", "OBX[3]-5", "TECHNIQUE: Axial images from the thoracic inlet to the adrenals.\nCoronal and sagittal reformats."},
		{"oru_r01.hl7", "OBX[15]-5", `Dictated by: RADIOLOGIST, PAT \ signed electronically.`},
		{"oru_r01.hl7", "OBX[16]-5", ""},
		{"oru_r01.hl7", "OBR-25", "F"},
		{"oru_r01.hl7", "OBR-32-1-2", "RADIOLOGIST"},
		{"oru_r01.hl7", "OBR-32-1", "3333&RADIOLOGIST&PAT"},
		{"oru_r01.hl7", "PID-3[3]-1", "123456789"},
	}
	cache := map[string]*Message{}
	for _, tt := range tests {
		m := cache[tt.file]
		if m == nil {
			m = mustParse(t, readTestdata(t, tt.file))
			cache[tt.file] = m
		}
		if got := m.Get(tt.path); got != tt.want {
			t.Errorf("%s %s: got %q, want %q", tt.file, tt.path, got, tt.want)
		}
	}
}

func TestHeaderAccessors(t *testing.T) {
	m := mustParse(t, readTestdata(t, "omi_o23.hl7"))
	code, trig, st := m.MessageType()
	got := []string{code, trig, st, m.ControlID(), m.SendingApplication(), m.SendingFacility(),
		m.ReceivingApplication(), m.ReceivingFacility(), m.ProcessingID(), m.Version(), m.AcceptAckType(), m.AppAckType(), m.Charset()}
	want := []string{"OMI", "O23", "OMI_O23", "OMI000042", "RADRIS", "NORTHWING", "RADBRIDGE", "IMAGING", "P", "2.5.1", "AL", "NE", "UNICODE UTF-8"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("header (-got +want):\n%s", diff)
	}
	var ids []string
	for _, s := range m.AllSegments() {
		ids = append(ids, s.ID())
	}
	if diff := cmp.Diff(ids, []string{"MSH", "PID", "PV1", "ORC", "TQ1", "OBR", "IPC", "ZDS"}); diff != "" {
		t.Errorf("segments (-got +want):\n%s", diff)
	}
	pid := m.Segment("PID")
	if diff := cmp.Diff(pid.Repetitions(3), []string{"PAT5120^^^NORTHWING^MR", "PAT5120B^^^SOUTHWING^MR"}); diff != "" {
		t.Errorf("PID-3 repetitions (-got +want):\n%s", diff)
	}
	if got, want := pid.Sub(3, 2, 4, 1), "SOUTHWING"; got != want {
		t.Errorf("Sub: got %q, want %q", got, want)
	}
	if got := m.Segment("OBX"); got != nil {
		t.Errorf("Segment(OBX): got %v, want nil", got)
	}
}

func TestSegmentsAndSequence(t *testing.T) {
	m := mustParse(t, readTestdata(t, "oru_r01.hl7"))
	obx := m.Segments("OBX")
	if got, want := len(obx), 15; got != want {
		t.Fatalf("OBX count: got %d, want %d", got, want)
	}
	for i, s := range obx {
		if s.Sequence() != i+1 {
			t.Errorf("OBX %d: sequence %d", i+1, s.Sequence())
		}
	}
	if got, want := m.MSH().NumFields(), 12; got != want {
		t.Errorf("MSH NumFields: got %d, want %d", got, want)
	}
	orm := mustParse(t, readTestdata(t, "orm_o01.hl7"))
	if got, want := orm.MSH().NumFields(), 17; got != want { // trailing empty fields count
		t.Errorf("ORM MSH NumFields: got %d, want %d", got, want)
	}
}

func TestLineEndings(t *testing.T) {
	base := "MSH|^~\\&|A|B|C|D|20250101||ORU^R01|X1|P|2.5.1@PID|1||ID1@@OBR|1||F1||||||||||||||||||||||F@"
	for _, end := range []string{"\r", "\n", "\r\n", "\n\r"} {
		m := mustParse(t, []byte(strings.ReplaceAll(base, "@", end)))
		var ids []string
		for _, s := range m.AllSegments() {
			ids = append(ids, s.ID())
		}
		if diff := cmp.Diff(ids, []string{"MSH", "PID", "OBR"}); diff != "" {
			t.Errorf("%q: segments (-got +want):\n%s", end, diff)
		}
		if got := m.Get("OBR-25"); got != "F" {
			t.Errorf("%q: OBR-25 got %q", end, got)
		}
		if got := m.Get("MSH-12"); got != "2.5.1" {
			t.Errorf("%q: MSH-12 got %q", end, got)
		}
	}
}

func TestDecodeEscapes(t *testing.T) {
	tests := []struct{ in, want string }{
		{`plain`, "plain"},
		{`a\F\b\S\c\T\d\R\e\E\f`, `a|b^c&d~e\f`},
		{`line1\.br\line2`, "line1\nline2"},
		{`\H\bold\N\`, "bold"},
		{`\X41\\X4243\`, "ABC"},
		{`\XC3A9\`, "é"},
		{`\Zunknown\`, `\Zunknown\`},
		{`\X4\`, `\X4\`},
		{`\XZZ\`, `\XZZ\`},
		{`tail\`, `tail\`},
		{`tail\F`, `tail\F`},
		{`\\`, `\\`},
		{`\.sp\`, `\.sp\`},
	}
	m := mustParse(t, []byte("MSH|^~\\&|\r"))
	for _, tt := range tests {
		if got := m.decode([]byte(tt.in)); got != tt.want {
			t.Errorf("decode(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEscapeRoundTrip(t *testing.T) {
	d := DefaultDelimiters
	m := mustParse(t, []byte("MSH|^~\\&|\r"))
	for _, s := range []string{"", "plain", `a|b^c&d~e\f`, "two\nlines", "cr\rhere", `\F\`, "ÄÖÜ"} {
		esc := d.EscapeText(s)
		if strings.ContainsAny(esc, "|^&~\r\n") {
			t.Errorf("EscapeText(%q) = %q still holds a delimiter", s, esc)
		}
		if got := m.decode([]byte(esc)); got != s {
			t.Errorf("decode(EscapeText(%q)): got %q", s, got)
		}
	}
	if got, want := d.Join(d.Component, "DOE", "JA^NE"), `DOE^JA\S\NE`; got != want {
		t.Errorf("Join: got %q, want %q", got, want)
	}
}

func TestCustomDelimitersAndTruncation(t *testing.T) {
	m := mustParse(t, []byte("MSH#:*!@%#A#B#C#D#20250101##ORU:R01#C1#P#2.7\rPID#1##X1:::F*X2:::G#N!T!#\r"))
	d := m.Delimiters()
	if diff := cmp.Diff(d, Delimiters{Field: '#', Component: ':', Repetition: '*', Escape: '!', Subcomponent: '@', Truncation: '%'}); diff != "" {
		t.Errorf("delimiters (-got +want):\n%s", diff)
	}
	if got, want := m.Get("PID-3[2]-4"), "G"; got != want {
		t.Errorf("PID-3[2]-4: got %q, want %q", got, want)
	}
	if got, want := m.Get("PID-4"), "N@"; got != want {
		t.Errorf("PID-4: got %q, want %q", got, want)
	}
	if got, want := m.Get("MSH-2"), ":*!@%"; got != want {
		t.Errorf("MSH-2: got %q, want %q", got, want)
	}
}

func TestCharsets(t *testing.T) {
	name := "GRÄFE"
	tests := []struct {
		charset string
		body    []byte
		want    string
	}{
		{"8859/1", []byte{'G', 'R', 0xC4, 'F', 'E'}, name},
		{"8859/15", []byte{'E', 'U', 'R', 0xA4}, "EUR€"},
		{"UNICODE UTF-8", []byte(name), name},
		{"", []byte(name), name},                          // undeclared but valid UTF-8
		{"ASCII", []byte{'G', 'R', 0xC4, 'F', 'E'}, name}, // undeclared 8859-1 fallback
		{"8859/1", []byte(`GR\XC4\FE`), name},             // \X..\ in the declared set
		{"UNICODE UTF-8", []byte(`GR\XC384\FE`), name},    // \X..\ in UTF-8
	}
	for _, tt := range tests {
		msg := append([]byte("MSH|^~\\&|||||||ADT^A01|1|P|2.5.1||||||"+tt.charset+"\rPID|1||1||"), tt.body...)
		m := mustParse(t, msg)
		if got := m.Get("PID-5"); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.charset, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		code     int
		loc      Location
		reject   bool
		wantMsg  bool
		wantIsCS bool
	}{
		{"empty", "", 100, Location{Segment: "MSH", Sequence: 1}, true, false, false},
		{"no MSH", "PID|1||X\r", 100, Location{Segment: "MSH", Sequence: 1}, true, false, false},
		{"short", "MSH|^~", 102, Location{Segment: "MSH", Sequence: 1, Field: 2}, true, false, false},
		{"three encoding chars", "MSH|^~\\|A\r", 102, Location{Segment: "MSH", Sequence: 1, Field: 2}, true, false, false},
		{"duplicate delimiters", "MSH|^^\\&|A\r", 102, Location{Segment: "MSH", Sequence: 1, Field: 2}, true, false, false},
		{"alnum delimiter", "MSH|^~\\A|A\r", 102, Location{Segment: "MSH", Sequence: 1, Field: 2}, true, false, false},
		{"bad segment id", "MSH|^~\\&|A|||||||X1|P|2.5\rPID|1\rxx|2\r", 100, Location{Sequence: 3}, true, true, false},
		{"unknown charset", "MSH|^~\\&|A||||||ORU^R01|X1|P|2.5||||||KLINGON\rPID|1\r", 102, Location{Segment: "MSH", Sequence: 1, Field: 18}, false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.in))
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("got error %v, want *Error", err)
			}
			got := []any{he.Code, he.Location, he.Reject, m != nil, errors.Is(err, ErrUnsupportedCharset)}
			want := []any{tt.code, tt.loc, tt.reject, tt.wantMsg, tt.wantIsCS}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
			if m != nil && m.ControlID() != "X1" {
				t.Errorf("partial message: control ID %q", m.ControlID())
			}
		})
	}
}

func TestLogValueHidesPatientData(t *testing.T) {
	m := mustParse(t, readTestdata(t, "orm_o01.hl7"))
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("got", "msg", m, "seg", m.Segment("PID"))
	fmt.Fprintf(&buf, "%v %s %+v %#v %v %#v\n", m, m, m, m, m.Segment("PID"), m.Segment("PID"))
	out := buf.String()
	for _, secret := range []string{"TESTPATIENT", "PAT4711", "ALEX", "19700101"} {
		if strings.Contains(out, secret) {
			t.Errorf("log output %q contains %q", out, secret)
		}
	}
	for _, want := range []string{"ORM^O01", "ORM000123", "PID"} {
		if !strings.Contains(out, want) {
			t.Errorf("log output %q lacks %q", out, want)
		}
	}
}

func TestBytesNormalizes(t *testing.T) {
	m := mustParse(t, readTestdata(t, "omi_o23.hl7"))
	got := string(m.Bytes())
	want := strings.ReplaceAll(string(readTestdata(t, "omi_o23.hl7")), "\r\n", "\r")
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Bytes (-got +want):\n%s", diff)
	}
}

// TestSubcomponentsUseDeclaredSeparator splits at the sub-component
// separator MSH-2 declares, whatever it is, and an escaped separator (\T\)
// stays data.
func TestSubcomponentsUseDeclaredSeparator(t *testing.T) {
	for _, tc := range []struct{ name, msg string }{
		{"default", "MSH|^~\\&|A|B\rOBR|1" + strings.Repeat("|", 31) + "5555&RES\\T\\IDENT&RIA^X\r"},
		{"other delimiters", "MSH#$*!%#A#B\rOBR#1" + strings.Repeat("#", 31) + "5555%RES!T!IDENT%RIA$X\r"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustParse(t, []byte(tc.msg))
			obr := m.Segment("OBR")
			want := []string{"5555", "RES" + string(m.Delimiters().Subcomponent) + "IDENT", "RIA"}
			if diff := cmp.Diff(obr.Subcomponents(32, 1, 1), want); diff != "" {
				t.Errorf("Subcomponents (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(obr.Subcomponents(32, 1, 2), []string{"X"}); diff != "" {
				t.Errorf("Subcomponents of a plain component (-got +want):\n%s", diff)
			}
			if got := obr.Subcomponents(32, 1, 3); got != nil {
				t.Errorf("Subcomponents of a missing component: %q, want nil", got)
			}
		})
	}
}

// TestHDTextIsTheSameInEveryEncoding: MSH-3..6 read as HD text with the
// default separators whatever the message declares.
func TestHDTextIsTheSameInEveryEncoding(t *testing.T) {
	a := mustParse(t, []byte("MSH|^~\\&|RADRIS^1.2.3^ISO|NORTH&X|RB|IMG&Y^Z\r"))
	b := mustParse(t, []byte("MSH#$*!%#RADRIS$1.2.3$ISO#NORTH%X#RB#IMG%Y$Z\r"))
	for _, m := range []*Message{a, b} {
		got := []string{m.SendingApplication(), m.SendingFacility(), m.ReceivingApplication(), m.ReceivingFacility()}
		if diff := cmp.Diff(got, []string{"RADRIS^1.2.3^ISO", "NORTH&X", "RB", "IMG&Y^Z"}); diff != "" {
			t.Errorf("%v (-got +want):\n%s", m.Delimiters(), diff)
		}
	}
}
