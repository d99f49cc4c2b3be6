package hl7

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

// charsetInfo converts one character set to UTF-8.
type charsetInfo struct {
	cm *charmap.Charmap // nil: UTF-8 or ASCII
	// fallback: text declared ASCII (or not declared) that is not valid
	// UTF-8 is read as ISO 8859-1, the most common undeclared encoding.
	fallback bool
}

// lookupCharset maps an MSH-18 value (HL7 table 0211) to a converter.
func lookupCharset(name string) (*charsetInfo, error) {
	switch strings.ToUpper(strings.TrimSpace(name)) {
	case "", "ASCII", "ISO IR6", "ISO_IR 6":
		return &charsetInfo{fallback: true}, nil
	case "UNICODE UTF-8", "ISO IR192", "ISO_IR 192", "UTF-8", "UNICODE":
		// "UNICODE" without a form is ambiguous; senders using it in
		// practice send UTF-8 over MLLP.
		return &charsetInfo{}, nil
	case "8859/1", "ISO IR100", "ISO_IR 100":
		return &charsetInfo{cm: charmap.ISO8859_1}, nil
	case "8859/2", "ISO IR101", "ISO_IR 101":
		return &charsetInfo{cm: charmap.ISO8859_2}, nil
	case "8859/3", "ISO IR109":
		return &charsetInfo{cm: charmap.ISO8859_3}, nil
	case "8859/4", "ISO IR110":
		return &charsetInfo{cm: charmap.ISO8859_4}, nil
	case "8859/5", "ISO IR144":
		return &charsetInfo{cm: charmap.ISO8859_5}, nil
	case "8859/6", "ISO IR127":
		return &charsetInfo{cm: charmap.ISO8859_6}, nil
	case "8859/7", "ISO IR126":
		return &charsetInfo{cm: charmap.ISO8859_7}, nil
	case "8859/8", "ISO IR138":
		return &charsetInfo{cm: charmap.ISO8859_8}, nil
	case "8859/9", "ISO IR148":
		return &charsetInfo{cm: charmap.ISO8859_9}, nil
	case "8859/15":
		return &charsetInfo{cm: charmap.ISO8859_15}, nil
	}
	return nil, &Error{
		Code:     CodeDataType,
		Location: Location{Segment: "MSH", Sequence: 1, Field: 18},
		Severity: SeverityError,
		Text:     "unsupported character set",
		Err:      ErrUnsupportedCharset,
	}
}

// toUTF8 returns b converted to UTF-8 and true, or b and false when b
// needs no conversion.
func (c *charsetInfo) toUTF8(b []byte) ([]byte, bool) {
	ascii := true
	for _, x := range b {
		if x >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return b, false
	}
	cm := c.cm
	if cm == nil {
		if !c.fallback || utf8.Valid(b) {
			return b, false
		}
		cm = charmap.ISO8859_1
	}
	out := make([]byte, 0, len(b)+len(b)/4)
	for _, x := range b {
		if x < 0x80 {
			out = append(out, x)
			continue
		}
		out = utf8.AppendRune(out, cm.DecodeByte(x))
	}
	return out, true
}
