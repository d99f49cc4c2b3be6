package hl7

import (
	"bytes"
	"strings"
)

// decode resolves escape sequences in b and returns the text as a string.
// Known sequences: \F\ \S\ \T\ \R\ \E\ (delimiters), \Xhh..\ (bytes in
// the message's character set), \.br\ (line break, returned as "\n"),
// \H\ and \N\ (highlighting, dropped). Unknown or unterminated sequences
// are kept verbatim.
func (m *Message) decode(b []byte) string {
	e := m.d.Escape
	if bytes.IndexByte(b, e) < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		i := bytes.IndexByte(b, e)
		if i < 0 {
			out = append(out, b...)
			break
		}
		out = append(out, b[:i]...)
		b = b[i+1:]
		j := bytes.IndexByte(b, e)
		if j < 0 { // unterminated: keep verbatim
			out = append(out, e)
			out = append(out, b...)
			break
		}
		seq := b[:j]
		b = b[j+1:]
		if r, ok := m.escapeValue(out, seq); ok {
			out = r
			continue
		}
		out = append(out, e)
		out = append(out, seq...)
		out = append(out, e)
	}
	return string(out)
}

// escapeValue appends the value of escape sequence seq (without its
// escape characters) to out; ok is false for an unknown sequence.
func (m *Message) escapeValue(out, seq []byte) ([]byte, bool) {
	switch string(seq) {
	case "F":
		return append(out, m.d.Field), true
	case "S":
		return append(out, m.d.Component), true
	case "T":
		return append(out, m.d.Subcomponent), true
	case "R":
		return append(out, m.d.Repetition), true
	case "E":
		return append(out, m.d.Escape), true
	case "P":
		if m.d.Truncation != 0 {
			return append(out, m.d.Truncation), true
		}
		return out, false
	case ".br":
		return append(out, '\n'), true
	case "H", "N":
		return out, true
	}
	if len(seq) >= 3 && seq[0] == 'X' && len(seq)%2 == 1 {
		hex := seq[1:]
		raw := make([]byte, 0, len(hex)/2)
		for k := 0; k < len(hex); k += 2 {
			hi, ok1 := unhex(hex[k])
			lo, ok2 := unhex(hex[k+1])
			if !ok1 || !ok2 {
				return out, false
			}
			raw = append(raw, hi<<4|lo)
		}
		if m.conv != nil {
			if nb, conv := m.conv.toUTF8(raw); conv {
				raw = nb
			}
		}
		return append(out, raw...), true
	}
	return out, false
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// EscapeText returns s with every delimiter replaced by its escape sequence,
// a line feed by \.br\ and a carriage return by \X0D\, so that s can be
// placed in a field, component or sub-component of a message using d.
func (d Delimiters) EscapeText(s string) string {
	needs := false
	for i := 0; i < len(s); i++ {
		if d.special(s[i]) {
			needs = true
			break
		}
	}
	if !needs {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	e := string(d.Escape)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == d.Field:
			b.WriteString(e + "F" + e)
		case c == d.Component:
			b.WriteString(e + "S" + e)
		case c == d.Subcomponent:
			b.WriteString(e + "T" + e)
		case c == d.Repetition:
			b.WriteString(e + "R" + e)
		case c == d.Escape:
			b.WriteString(e + "E" + e)
		case d.Truncation != 0 && c == d.Truncation:
			b.WriteString(e + "P" + e)
		case c == '\n':
			b.WriteString(e + ".br" + e)
		case c == '\r':
			b.WriteString(e + "X0D" + e)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (d Delimiters) special(c byte) bool {
	return c == d.Field || c == d.Component || c == d.Subcomponent || c == d.Repetition || c == d.Escape ||
		(d.Truncation != 0 && c == d.Truncation) || c == '\n' || c == '\r'
}

// Join escapes each part and joins them with sep, for building composite
// values: d.Join(d.Component, "DOE", "JANE") is "DOE^JANE".
func (d Delimiters) Join(sep byte, parts ...string) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(sep)
		}
		b.WriteString(d.EscapeText(p))
	}
	return b.String()
}
