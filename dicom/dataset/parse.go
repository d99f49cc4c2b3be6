package dataset

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	dcm "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
)

// Transfer syntax UIDs (PS3.5 section 10, PS3.6 annex A).
const (
	ImplicitVRLittleEndian         = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian         = "1.2.840.10008.1.2.1"
	DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
	ExplicitVRBigEndian            = "1.2.840.10008.1.2.2"
)

// SyntaxOf returns how the data set (not the pixel data) of the transfer
// syntax uid is encoded: implicit VR little endian, explicit VR big endian,
// deflated explicit VR little endian, or explicit VR little endian for every
// other (encapsulated) syntax (PS3.5 section 10 and annex A.4).
func SyntaxOf(uid string) Syntax {
	switch uid {
	case ImplicitVRLittleEndian:
		return Syntax{Implicit: true}
	case ExplicitVRBigEndian:
		return Syntax{BigEndian: true}
	case DeflatedExplicitVRLittleEndian:
		return Syntax{Deflated: true}
	}
	return Syntax{}
}

// iso2022Escape matches ISO 2022 escape sequences (ESC, intermediate bytes,
// final byte; PS3.5 section 6.1.2.5) that the library's decoders leave in
// code-extension values (e.g. ISO 2022 IR 149).
var iso2022Escape = regexp.MustCompile("\x1b[\x20-\x2f]+[\x30-\x7e]")

// Dataset is a parsed data set header. Values are decoded to UTF-8 per
// Specific Character Set (0008,0005).
type Dataset struct {
	elems []*dcm.Element
}

// Tag builds a tag from group and element numbers.
func Tag(group, element uint16) tag.Tag { return tag.Tag{Group: group, Element: element} }

// metaFor builds a synthetic Part-10 preamble and File Meta Information
// (PS3.10 section 7.1) declaring the native syntax the header is encoded in,
// so that the library never guesses the transfer syntax.
func metaFor(s Syntax) []byte {
	ts := ExplicitVRLittleEndian
	switch {
	case s.Implicit:
		ts = ImplicitVRLittleEndian
	case s.BigEndian:
		ts = ExplicitVRBigEndian
	}
	el := appendMetaUI(nil, 0x0010, ts)
	b := make([]byte, 128, 128+4+12+len(el))
	b = append(b, "DICM"...)
	b = append(b, 0x02, 0x00, 0x00, 0x00, 'U', 'L', 4, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(el)))
	return append(b, el...)
}

func appendMetaUI(dst []byte, element uint16, v string) []byte {
	if len(v)%2 == 1 {
		v += "\x00"
	}
	dst = append(dst, 0x02, 0x00)
	dst = binary.LittleEndian.AppendUint16(dst, element)
	dst = append(dst, 'U', 'I')
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(v)))
	return append(dst, v...)
}

// Parse checks the header (see Check) and parses it. b must not hold
// File Meta Information and, for a deflated syntax, must already be
// inflated (pass Syntax{} then).
func Parse(b []byte, s Syntax) (ds *Dataset, err error) {
	if err := Check(b, s); err != nil {
		return nil, err
	}
	meta := metaFor(s)
	in := make([]byte, 0, len(meta)+len(b))
	in = append(append(in, meta...), b...)
	defer func() {
		// Defence in depth: the walker above should make this unreachable.
		if r := recover(); r != nil {
			ds, err = nil, fmt.Errorf("parse data set: library panic: %w", ErrMalformed)
		}
	}()
	parsed, perr := dcm.Parse(bytes.NewReader(in), int64(len(in)), nil,
		dcm.SkipPixelData(), dcm.AllowUnknownSpecificCharacterSet())
	if perr != nil {
		// The library's message may quote element values: keep it out.
		return nil, fmt.Errorf("parse data set: rejected by parser: %w", ErrMalformed)
	}
	return &Dataset{elems: parsed.Elements}, nil
}

func (d *Dataset) find(t tag.Tag) *dcm.Element {
	if d == nil {
		return nil
	}
	for _, e := range d.elems {
		if e.Tag == t {
			return e
		}
	}
	return nil
}

// Strings returns the values of a string-like (or integer) element, or nil.
func (d *Dataset) Strings(t tag.Tag) []string {
	e := d.find(t)
	if e == nil || e.Value == nil {
		return nil
	}
	switch v := e.Value.GetValue().(type) {
	case []string:
		out := make([]string, 0, len(v))
		for _, s := range v {
			s = iso2022Escape.ReplaceAllString(s, "")
			out = append(out, strings.ToValidUTF8(strings.Trim(s, " \x00"), "\uFFFD"))
		}
		return out
	case []int:
		out := make([]string, 0, len(v))
		for _, n := range v {
			out = append(out, strconv.Itoa(n))
		}
		return out
	}
	return nil
}

// String returns the first value of an element, or "".
func (d *Dataset) String(t tag.Tag) string {
	v := d.Strings(t)
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// Joined returns all values joined with a backslash (the DICOM value
// separator), or "".
func (d *Dataset) Joined(t tag.Tag) string {
	return strings.Join(d.Strings(t), `\`)
}

// Int returns the first value of an IS/US/UL-like element and whether it
// was present and numeric.
func (d *Dataset) Int(t tag.Tag) (int, bool) {
	s := d.String(t)
	if s == "" {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	return n, err == nil
}

// Items returns the items of a sequence element.
func (d *Dataset) Items(t tag.Tag) []*Dataset {
	e := d.find(t)
	if e == nil || e.Value == nil {
		return nil
	}
	items, ok := e.Value.GetValue().([]*dcm.SequenceItemValue)
	if !ok {
		return nil
	}
	out := make([]*Dataset, 0, len(items))
	for _, it := range items {
		elems, _ := it.GetValue().([]*dcm.Element)
		out = append(out, &Dataset{elems: elems})
	}
	return out
}

// SplitPart10 splits a DICOM file (PS3.10 section 7.1: 128-byte preamble,
// "DICM", group 0002 explicit VR little endian) into its transfer syntax UID
// and the data set bytes that follow the File Meta Information.
func SplitPart10(b []byte) (transferSyntax string, body []byte, err error) {
	if len(b) < 132 || string(b[128:132]) != "DICM" {
		return "", nil, fmt.Errorf("split Part-10: no DICM prefix: %w", ErrMalformed)
	}
	p := 132
	for p+8 <= len(b) && binary.LittleEndian.Uint16(b[p:]) == 0x0002 {
		el := binary.LittleEndian.Uint16(b[p+2:])
		vr := string(b[p+4 : p+6])
		var n, h int
		switch vr {
		case "OB", "OD", "OF", "OL", "OW", "SQ", "UN", "UC", "UR", "UT":
			if p+12 > len(b) {
				return "", nil, fmt.Errorf("split Part-10: truncated meta: %w", ErrMalformed)
			}
			n, h = int(binary.LittleEndian.Uint32(b[p+8:])), 12
		default:
			n, h = int(binary.LittleEndian.Uint16(b[p+6:])), 8
		}
		if n < 0 || p+h+n > len(b) {
			return "", nil, fmt.Errorf("split Part-10: meta element length %d: %w", n, ErrMalformed)
		}
		if el == 0x0010 {
			transferSyntax = strings.TrimRight(string(b[p+h:p+h+n]), "\x00 ")
		}
		p += h + n
	}
	if transferSyntax == "" {
		return "", nil, fmt.Errorf("split Part-10: no transfer syntax: %w", ErrMalformed)
	}
	return transferSyntax, b[p:], nil
}
