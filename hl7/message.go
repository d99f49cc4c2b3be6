package hl7

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"strconv"
)

// Delimiters are the separators a message declares in MSH-1 and MSH-2.
type Delimiters struct {
	Field        byte
	Component    byte
	Repetition   byte
	Escape       byte
	Subcomponent byte
	Truncation   byte // HL7 v2.7 truncation character; 0 when not declared
}

// DefaultDelimiters are the delimiters HL7 recommends: |^~\&.
var DefaultDelimiters = Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}

// encodingChars returns MSH-2 for d.
func (d Delimiters) encodingChars() []byte {
	b := []byte{d.Component, d.Repetition, d.Escape, d.Subcomponent}
	if d.Truncation != 0 {
		b = append(b, d.Truncation)
	}
	return b
}

type span struct{ s, e int32 }

// Message is a parsed HL7 v2 message. It refers to the bytes given to
// Parse (or to a UTF-8 copy when the character set was converted); the
// caller must not modify them while the Message is in use.
type Message struct {
	raw       []byte
	d         Delimiters
	segs      []Segment
	spans     []span
	charset   string
	conv      *charsetInfo
	converted bool
}

// Segment is one segment of a Message.
type Segment struct {
	m   *Message
	id  string
	seq int // 1-based occurrence among segments with the same ID
	f   []span
}

// MaxMessageSize is the largest input Parse accepts.
const MaxMessageSize = math.MaxInt32

// Parse parses an HL7 v2 message. Segments may end in \r, \n or \r\n and
// empty lines are ignored. Text in a character set declared in MSH-18 is
// converted to UTF-8.
//
// Every error Parse returns is an *Error carrying a table 0357 code and
// location. When the MSH segment itself was readable but the message
// cannot be used (an unsupported character set, a malformed later
// segment), Parse returns the message together with the error so that the
// caller can address its acknowledgment; its MSH accessors work.
func Parse(b []byte) (*Message, error) {
	if len(b) > MaxMessageSize {
		return nil, &Error{Code: CodeInternalError, Reject: true, Severity: SeverityError, Text: "message too large"}
	}
	// Skip leading empty lines.
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	if len(b) < 3 || string(b[:3]) != "MSH" {
		return nil, &Error{Code: CodeSegmentSequence, Location: Location{Segment: "MSH", Sequence: 1}, Severity: SeverityError, Reject: true, Text: "message does not start with an MSH segment"}
	}
	d, err := parseDelimiters(b)
	if err != nil {
		return nil, err
	}
	m := &Message{raw: b, d: d}
	// Character set from MSH-18 (first repetition), read before splitting.
	cs := mshRawField(b, d, 18)
	if i := bytes.IndexByte(cs, d.Repetition); i >= 0 {
		cs = cs[:i]
	}
	// A delimiter in the name (e.g. '-' of "UNICODE UTF-8" when '-' is a
	// separator) is escaped like any data.
	m.charset = m.decode(cs)
	ci, csErr := lookupCharset(m.charset)
	if csErr == nil {
		m.conv = ci
		if nb, conv := ci.toUTF8(b); conv {
			m.raw, m.converted = nb, true
		}
	}
	if err := m.split(); err != nil {
		if len(m.segs) == 0 || m.segs[0].id != "MSH" {
			return nil, err
		}
		return m, err
	}
	if csErr != nil {
		return m, csErr
	}
	return m, nil
}

func parseDelimiters(b []byte) (Delimiters, error) {
	bad := func(text string) error {
		return &Error{Code: CodeDataType, Location: Location{Segment: "MSH", Sequence: 1, Field: 2}, Severity: SeverityError, Reject: true, Text: text}
	}
	if len(b) < 8 {
		return Delimiters{}, bad("MSH segment too short for its encoding characters")
	}
	d := Delimiters{Field: b[3]}
	enc := b[4:]
	if i := bytes.IndexByte(enc, d.Field); i >= 0 {
		enc = enc[:i]
	} else if i := bytes.IndexAny(enc, "\r\n"); i >= 0 {
		enc = enc[:i]
	}
	if len(enc) != 4 && len(enc) != 5 {
		return Delimiters{}, bad("MSH-2 must hold 4 or 5 encoding characters")
	}
	d.Component, d.Repetition, d.Escape, d.Subcomponent = enc[0], enc[1], enc[2], enc[3]
	if len(enc) == 5 {
		d.Truncation = enc[4]
	}
	all := append([]byte{d.Field}, enc...)
	for i, c := range all {
		if c < 0x21 || c > 0x7e || isAlnum(c) {
			return Delimiters{}, bad("delimiters must be printable ASCII punctuation")
		}
		if bytes.IndexByte(all[i+1:], c) >= 0 {
			return Delimiters{}, bad("delimiters must be distinct")
		}
	}
	return d, nil
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// mshRawField returns MSH-n (n >= 3) from the first line of b.
func mshRawField(b []byte, d Delimiters, n int) []byte {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	// b[3] is MSH-1; fields after it are MSH-2, MSH-3, ...
	b = b[4:]
	for k := 2; k < n; k++ {
		i := bytes.IndexByte(b, d.Field)
		if i < 0 {
			return nil
		}
		b = b[i+1:]
	}
	if i := bytes.IndexByte(b, d.Field); i >= 0 {
		b = b[:i]
	}
	return b
}

func (m *Message) split() error {
	b := m.raw
	lf := bytes.Count(b, []byte{'\n'})
	hasLF := lf > 0
	nl := bytes.Count(b, []byte{'\r'}) + lf + 1
	nf := bytes.Count(b, []byte{m.d.Field}) + nl
	m.segs = make([]Segment, 0, nl)
	m.spans = make([]span, 0, nf)
	var seen seqCounter
	pos := 0
	for pos < len(b) {
		rest := b[pos:]
		n := bytes.IndexByte(rest, '\r')
		if n < 0 {
			n = len(rest)
		}
		if hasLF {
			if j := bytes.IndexByte(rest[:n], '\n'); j >= 0 {
				n = j
			}
		}
		end := pos + n
		line := b[pos:end]
		start := pos
		pos = end + 1
		if len(line) == 0 {
			continue
		}
		idEnd := bytes.IndexByte(line, m.d.Field)
		if idEnd < 0 {
			idEnd = len(line)
		}
		idb := line[:idEnd]
		if !validSegmentID(idb) {
			return &Error{Code: CodeSegmentSequence, Location: Location{Segment: safeID(idb), Sequence: len(m.segs) + 1}, Severity: SeverityError, Reject: true,
				Text: fmt.Sprintf("segment %d has an invalid segment ID", len(m.segs)+1)}
		}
		if len(m.segs) == 0 && string(idb) != "MSH" {
			return &Error{Code: CodeSegmentSequence, Location: Location{Segment: "MSH", Sequence: 1}, Severity: SeverityError, Reject: true, Text: "first segment is not MSH"}
		}
		id := internID(idb)
		seq := seen.next(id)
		first := len(m.spans)
		s := start
		for {
			i := bytes.IndexByte(b[s:end], m.d.Field)
			if i < 0 {
				break
			}
			m.spans = append(m.spans, span{int32(s), int32(s + i)})
			s += i + 1
		}
		m.spans = append(m.spans, span{int32(s), int32(end)})
		m.segs = append(m.segs, Segment{m: m, id: id, seq: seq, f: m.spans[first:len(m.spans):len(m.spans)]})
	}
	// m.spans may have been reallocated while appending; re-slice.
	off := 0
	for i := range m.segs {
		n := len(m.segs[i].f)
		m.segs[i].f = m.spans[off : off+n : off+n]
		off += n
	}
	if len(m.segs) == 0 {
		return &Error{Code: CodeSegmentSequence, Location: Location{Segment: "MSH", Sequence: 1}, Severity: SeverityError, Reject: true, Text: "no segments"}
	}
	return nil
}

func validSegmentID(b []byte) bool {
	if len(b) != 3 {
		return false
	}
	for _, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func safeID(b []byte) string {
	if validSegmentID(b) {
		return string(b)
	}
	return ""
}

// internID returns a string for a segment ID without allocating for the
// common ones.
func internID(b []byte) string {
	switch string(b) {
	case "MSH":
		return "MSH"
	case "PID":
		return "PID"
	case "PD1":
		return "PD1"
	case "PV1":
		return "PV1"
	case "PV2":
		return "PV2"
	case "ORC":
		return "ORC"
	case "OBR":
		return "OBR"
	case "OBX":
		return "OBX"
	case "NTE":
		return "NTE"
	case "EVN":
		return "EVN"
	case "MSA":
		return "MSA"
	case "ERR":
		return "ERR"
	case "TQ1":
		return "TQ1"
	case "IPC":
		return "IPC"
	case "SFT":
		return "SFT"
	case "AL1":
		return "AL1"
	case "DG1":
		return "DG1"
	case "IN1":
		return "IN1"
	case "ZDS":
		return "ZDS"
	}
	return string(b)
}

// Delimiters returns the message's delimiters.
func (m *Message) Delimiters() Delimiters { return m.d }

// Charset returns MSH-18 as declared (first repetition), "" when empty.
func (m *Message) Charset() string { return m.charset }

// Bytes returns the message with every segment ended by \r, in UTF-8
// when its character set was converted (MSH-18 is left as declared).
func (m *Message) Bytes() []byte {
	n := 0
	for _, s := range m.segs {
		n += int(s.f[len(s.f)-1].e-s.f[0].s) + 1
	}
	out := make([]byte, 0, n)
	for _, s := range m.segs {
		out = append(out, m.raw[s.f[0].s:s.f[len(s.f)-1].e]...)
		out = append(out, '\r')
	}
	return out
}

// Converted reports whether Parse converted the text from MSH-18's
// character set to UTF-8.
func (m *Message) Converted() bool { return m.converted }

// AllSegments returns every segment in order.
func (m *Message) AllSegments() []*Segment {
	out := make([]*Segment, len(m.segs))
	for i := range m.segs {
		out[i] = &m.segs[i]
	}
	return out
}

// Segments returns the segments with the given ID, in order.
func (m *Message) Segments(id string) []*Segment {
	var out []*Segment
	for i := range m.segs {
		if m.segs[i].id == id {
			out = append(out, &m.segs[i])
		}
	}
	return out
}

// Segment returns the first segment with the given ID, or nil.
func (m *Message) Segment(id string) *Segment {
	for i := range m.segs {
		if m.segs[i].id == id {
			return &m.segs[i]
		}
	}
	return nil
}

// MSH returns the message header segment.
func (m *Message) MSH() *Segment { return &m.segs[0] }

// MessageType returns MSH-9: message code, trigger event and message
// structure (e.g. "ORU", "R01", "ORU_R01").
func (m *Message) MessageType() (code, trigger, structure string) {
	h := m.MSH()
	return h.Component(9, 1, 1), h.Component(9, 1, 2), h.Component(9, 1, 3)
}

// ControlID returns MSH-10, the message control ID.
func (m *Message) ControlID() string { return m.MSH().Field(10) }

// SendingApplication returns MSH-3 as HD text: its components decoded and
// joined by '^' (sub-components by '&'), the default delimiters, whatever
// the message declares, so that one sender reads the same in every
// encoding (for messages with the default delimiters it is Field(3)).
func (m *Message) SendingApplication() string { return m.hdText(3) }

// SendingFacility returns MSH-4 as HD text, like SendingApplication.
func (m *Message) SendingFacility() string { return m.hdText(4) }

// ReceivingApplication returns MSH-5 as HD text, like SendingApplication.
func (m *Message) ReceivingApplication() string { return m.hdText(5) }

// ReceivingFacility returns MSH-6 as HD text, like SendingApplication.
func (m *Message) ReceivingFacility() string { return m.hdText(6) }

// hdText returns MSH-n's first repetition with its components and
// sub-components decoded and joined by the default separators.
func (m *Message) hdText(n int) string {
	d := m.d
	if d.Component == DefaultDelimiters.Component && d.Subcomponent == DefaultDelimiters.Subcomponent {
		return m.MSH().Field(n)
	}
	raw := nth(m.MSH().Raw(n), d.Repetition, 1)
	comps := bytes.Split(raw, []byte{d.Component})
	var b []byte
	for i, c := range comps {
		if i > 0 {
			b = append(b, DefaultDelimiters.Component)
		}
		for j, sc := range bytes.Split(c, []byte{d.Subcomponent}) {
			if j > 0 {
				b = append(b, DefaultDelimiters.Subcomponent)
			}
			b = append(b, m.decode(sc)...)
		}
	}
	return string(b)
}

// ProcessingID returns MSH-11.1 (P, D or T).
func (m *Message) ProcessingID() string { return m.MSH().Component(11, 1, 1) }

// Version returns MSH-12.1, e.g. "2.5.1".
func (m *Message) Version() string { return m.MSH().Component(12, 1, 1) }

// AcceptAckType returns MSH-15 (AL, NE, ER, SU or "").
func (m *Message) AcceptAckType() string { return m.MSH().Field(15) }

// AppAckType returns MSH-16 (AL, NE, ER, SU or "").
func (m *Message) AppAckType() string { return m.MSH().Field(16) }

// LogValue implements slog.LogValuer: only the message type and control
// ID, never patient data.
func (m *Message) LogValue() slog.Value {
	if m == nil || len(m.segs) == 0 {
		return slog.StringValue("<nil>")
	}
	code, trig, _ := m.MessageType()
	return slog.GroupValue(slog.String("type", code+"^"+trig), slog.String("control_id", m.ControlID()))
}

// ID returns the segment ID, e.g. "PID".
func (s *Segment) ID() string { return s.id }

// Sequence returns the 1-based occurrence of this segment among the
// message's segments with the same ID.
func (s *Segment) Sequence() int { return s.seq }

// LogValue implements slog.LogValuer: only the segment ID and sequence.
func (s *Segment) LogValue() slog.Value {
	if s == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("segment", s.id), slog.Int("sequence", s.seq))
}

// NumFields returns the number of the last field present (trailing empty
// fields count when their separators are present).
func (s *Segment) NumFields() int {
	if s.id == "MSH" && len(s.f) > 1 {
		return len(s.f)
	}
	return len(s.f) - 1
}

// Raw returns field n as it appears in the message: all repetitions,
// delimiters and escape sequences untouched. It returns nil for a field
// that is not present.
func (s *Segment) Raw(n int) []byte {
	if n < 0 {
		return nil
	}
	if s.id == "MSH" {
		switch {
		case len(s.f) == 1:
			return nil // "MSH" alone: not even MSH-1
		case n == 1:
			i := s.f[0].e // the field separator after "MSH"
			return s.m.raw[i : i+1]
		case n >= 2:
			n--
		}
	}
	if n >= len(s.f) {
		return nil
	}
	sp := s.f[n]
	return s.m.raw[sp.s:sp.e]
}

func (s *Segment) isEncodingChars(n int) bool { return s.id == "MSH" && (n == 1 || n == 2) }

// Field returns field n's first repetition with escape sequences decoded;
// component and sub-component separators are kept as they are. MSH-1 and
// MSH-2 are returned verbatim.
func (s *Segment) Field(n int) string {
	raw := s.Raw(n)
	if s.isEncodingChars(n) {
		return string(raw)
	}
	return s.m.decode(nth(raw, s.m.d.Repetition, 1))
}

// Repetitions returns every repetition of field n, each decoded like
// Field. An empty field has no repetitions.
func (s *Segment) Repetitions(n int) []string {
	raw := s.Raw(n)
	if len(raw) == 0 {
		return nil
	}
	if s.isEncodingChars(n) {
		return []string{string(raw)}
	}
	out := make([]string, 0, bytes.Count(raw, []byte{s.m.d.Repetition})+1)
	for {
		i := bytes.IndexByte(raw, s.m.d.Repetition)
		if i < 0 {
			out = append(out, s.m.decode(raw))
			return out
		}
		out = append(out, s.m.decode(raw[:i]))
		raw = raw[i+1:]
	}
}

// NumRepetitions returns how many repetitions field n has (0 when empty).
func (s *Segment) NumRepetitions(n int) int {
	raw := s.Raw(n)
	if len(raw) == 0 {
		return 0
	}
	if s.isEncodingChars(n) {
		return 1
	}
	return bytes.Count(raw, []byte{s.m.d.Repetition}) + 1
}

// rawComponent returns the raw bytes of component comp (1-based) of
// repetition rep (1-based) of field n.
func (s *Segment) rawComponent(n, rep, comp int) []byte {
	raw := s.Raw(n)
	if s.isEncodingChars(n) {
		if rep == 1 && comp == 1 {
			return raw
		}
		return nil
	}
	return nth(nth(raw, s.m.d.Repetition, rep), s.m.d.Component, comp)
}

// Component returns component comp of repetition rep of field n, with
// escape sequences decoded and sub-component separators kept. Numbers
// are 1-based; a missing part is "".
func (s *Segment) Component(n, rep, comp int) string {
	return s.m.decode(s.rawComponent(n, rep, comp))
}

// Sub returns sub-component sub of component comp of repetition rep of
// field n, decoded. Numbers are 1-based; a missing part is "".
func (s *Segment) Sub(n, rep, comp, sub int) string {
	if s.isEncodingChars(n) {
		return s.Component(n, rep, comp)
	}
	return s.m.decode(nth(s.rawComponent(n, rep, comp), s.m.d.Subcomponent, sub))
}

// Subcomponents returns every sub-component of component comp of
// repetition rep of field n, each decoded, split at the message's own
// sub-component separator (MSH-2). A missing component gives nil.
func (s *Segment) Subcomponents(n, rep, comp int) []string {
	if s.isEncodingChars(n) {
		if v := s.Component(n, rep, comp); v != "" {
			return []string{v}
		}
		return nil
	}
	raw := s.rawComponent(n, rep, comp)
	if raw == nil {
		return nil
	}
	out := make([]string, 0, bytes.Count(raw, []byte{s.m.d.Subcomponent})+1)
	for {
		i := bytes.IndexByte(raw, s.m.d.Subcomponent)
		if i < 0 {
			return append(out, s.m.decode(raw))
		}
		out = append(out, s.m.decode(raw[:i]))
		raw = raw[i+1:]
	}
}

// nth returns the i-th (1-based) part of b split at sep, nil when absent.
func nth(b []byte, sep byte, i int) []byte {
	if i < 1 {
		return nil
	}
	for ; i > 1; i-- {
		j := bytes.IndexByte(b, sep)
		if j < 0 {
			return nil
		}
		b = b[j+1:]
	}
	if j := bytes.IndexByte(b, sep); j >= 0 {
		return b[:j]
	}
	return b
}

// seqCounter counts segment occurrences by ID without allocating for the
// first few distinct IDs.
type seqCounter struct {
	ids  [16]string
	cnt  [16]int
	n    int
	more map[string]int
}

func (c *seqCounter) next(id string) int {
	for i := 0; i < c.n; i++ {
		if c.ids[i] == id {
			c.cnt[i]++
			return c.cnt[i]
		}
	}
	if c.n < len(c.ids) {
		c.ids[c.n], c.cnt[c.n] = id, 1
		c.n++
		return 1
	}
	if c.more == nil {
		c.more = make(map[string]int)
	}
	c.more[id]++
	return c.more[id]
}

// String returns the same redacted summary as LogValue ("ORU^R01
// control_id=X"), so that formatting a Message with %v or %s never
// prints patient data.
func (m *Message) String() string {
	if m == nil || len(m.segs) == 0 {
		return "<nil>"
	}
	code, trig, _ := m.MessageType()
	return code + "^" + trig + " control_id=" + m.ControlID()
}

// GoString is String, for %#v.
func (m *Message) GoString() string { return "hl7.Message(" + m.String() + ")" }

// String returns the segment ID and sequence only, e.g. "PID[1]".
func (s *Segment) String() string {
	if s == nil {
		return "<nil>"
	}
	return s.id + "[" + strconv.Itoa(s.seq) + "]"
}

// GoString is String, for %#v.
func (s *Segment) GoString() string { return "hl7.Segment(" + s.String() + ")" }
