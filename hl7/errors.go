package hl7

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Error codes of HL7 table 0357 (message error condition codes).
const (
	CodeSegmentSequence        = 100 // segment sequence error
	CodeRequiredFieldMissing   = 101 // required field missing
	CodeDataType               = 102 // data type error
	CodeTableValueNotFound     = 103 // table value not found
	CodeUnsupportedMessageType = 200 // unsupported message type
	CodeUnsupportedEventCode   = 201 // unsupported event code
	CodeUnsupportedProcessing  = 202 // unsupported processing ID
	CodeUnsupportedVersion     = 203 // unsupported version ID
	CodeUnknownKey             = 204 // unknown key identifier
	CodeDuplicateKey           = 205 // duplicate key identifier
	CodeRecordLocked           = 206 // application record locked
	CodeInternalError          = 207 // application internal error
)

// CodeText returns the table 0357 text for code, or "" when unknown.
func CodeText(code int) string {
	switch code {
	case 0:
		return "Message accepted"
	case CodeSegmentSequence:
		return "Segment sequence error"
	case CodeRequiredFieldMissing:
		return "Required field missing"
	case CodeDataType:
		return "Data type error"
	case CodeTableValueNotFound:
		return "Table value not found"
	case CodeUnsupportedMessageType:
		return "Unsupported message type"
	case CodeUnsupportedEventCode:
		return "Unsupported event code"
	case CodeUnsupportedProcessing:
		return "Unsupported processing id"
	case CodeUnsupportedVersion:
		return "Unsupported version id"
	case CodeUnknownKey:
		return "Unknown key identifier"
	case CodeDuplicateKey:
		return "Duplicate key identifier"
	case CodeRecordLocked:
		return "Application record locked"
	case CodeInternalError:
		return "Application internal error"
	}
	return ""
}

// Severity is an ERR-4 severity (HL7 table 0516).
type Severity byte

// Severities of table 0516.
const (
	SeverityError       Severity = 'E'
	SeverityWarning     Severity = 'W'
	SeverityInformation Severity = 'I'
)

// String returns the one-letter table 0516 code.
func (s Severity) String() string {
	if s == 0 {
		return string(SeverityError)
	}
	return string(rune(s))
}

// Location is an HL7 error location (data type ERL, used in ERR-2). Zero
// numbers are left out when encoded.
type Location struct {
	Segment      string // segment ID, e.g. "PID"
	Sequence     int    // 1-based occurrence of the segment in the message
	Field        int    // field position
	Repetition   int    // field repetition, 1-based
	Component    int    // component number
	Subcomponent int    // sub-component number
}

// String returns the location in the usual text form, e.g. "PID[1]-3".
func (l Location) String() string {
	if l.Segment == "" {
		return ""
	}
	var b strings.Builder
	b.WriteString(l.Segment)
	if l.Sequence > 0 {
		b.WriteString("[" + strconv.Itoa(l.Sequence) + "]")
	}
	if l.Field > 0 {
		b.WriteString("-" + strconv.Itoa(l.Field))
		if l.Repetition > 1 {
			b.WriteString("[" + strconv.Itoa(l.Repetition) + "]")
		}
		if l.Component > 0 {
			b.WriteString("-" + strconv.Itoa(l.Component))
			if l.Subcomponent > 0 {
				b.WriteString("-" + strconv.Itoa(l.Subcomponent))
			}
		}
	}
	return b.String()
}

// erl encodes the location as an ERL value with component separator c.
func (l Location) erl(d Delimiters) []byte {
	parts := []string{d.EscapeText(l.Segment), itoa0(l.Sequence), itoa0(l.Field), itoa0(l.Repetition), itoa0(l.Component), itoa0(l.Subcomponent)}
	n := len(parts)
	for n > 0 && parts[n-1] == "" {
		n--
	}
	return []byte(strings.Join(parts[:n], string(d.Component)))
}

// eld encodes the location and code as a v2.3/v2.4 ELD value (ERR-1):
// segment^sequence^field^code&text&HL70357.
func (l Location) eld(d Delimiters, code int) []byte {
	cwe := strconv.Itoa(code) + string(d.Subcomponent) + d.EscapeText(CodeText(code)) + string(d.Subcomponent) + "HL70357"
	c := string(d.Component)
	return []byte(d.EscapeText(l.Segment) + c + itoa0(l.Sequence) + c + itoa0(l.Field) + c + cwe)
}

func itoa0(i int) string {
	if i <= 0 {
		return ""
	}
	return strconv.Itoa(i)
}

// Error is an HL7 application error: a table 0357 code, where in the
// message it was found, and whether the message is rejected (answered AR,
// or CR in enhanced mode) or merely in error (AE, CE). Text is a short
// human message sent in ERR-8; it must not contain patient data.
type Error struct {
	Code     int
	Location Location
	Severity Severity
	Reject   bool
	Text     string
	Err      error // optional cause, for errors.Is/As; not sent
}

// Error implements error. It names the code, location and text only.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("hl7 ")
	b.WriteString(strconv.Itoa(e.Code))
	if t := CodeText(e.Code); t != "" {
		b.WriteString(" " + strings.ToLower(t))
	}
	if loc := e.Location.String(); loc != "" {
		b.WriteString(" at " + loc)
	}
	if e.Text != "" {
		b.WriteString(": " + e.Text)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// AckCode returns the MSA-1 code answering this error: AE or AR in
// original mode, CE or CR in enhanced mode.
func (e *Error) AckCode(enhanced bool) string {
	switch {
	case enhanced && e.Reject:
		return AckCommitReject
	case enhanced:
		return AckCommitError
	case e.Reject:
		return AckReject
	}
	return AckError
}

// Errorf returns an *Error with the given code and location whose text is
// formatted from format and args. The answer is AE unless the code is one
// of the 2xx "unsupported" codes 200-203, which are answered AR.
func Errorf(code int, loc Location, format string, args ...any) *Error {
	return &Error{
		Code:     code,
		Location: loc,
		Severity: SeverityError,
		Reject:   code >= 200 && code <= 203,
		Text:     fmt.Sprintf(format, args...),
	}
}

// ErrUnsupportedCharset is the cause of the *Error returned by Parse for a
// character set (MSH-18) this package cannot convert to UTF-8.
var ErrUnsupportedCharset = errors.New("unsupported character set")
