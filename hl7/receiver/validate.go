package receiver

import (
	"fmt"
	"strings"

	"radbridge/hl7"
)

// validate checks what the receiver requires before handing a message
// over: a supported type, trigger and version, and the required fields
// of orders (ORM, OMI) and results (ORU).
func (s *Server) validate(m *hl7.Message) *hl7.Error {
	msh := hl7.Location{Segment: "MSH", Sequence: 1}
	at := func(l hl7.Location, field, comp int) hl7.Location {
		l.Field = field
		if comp > 0 {
			l.Repetition, l.Component = 1, comp
		}
		return l
	}
	code, trigger, _ := m.MessageType()
	switch {
	case code == "" && trigger == "":
		return hl7.Errorf(hl7.CodeRequiredFieldMissing, at(msh, 9, 0), "MSH-9 message type is empty")
	case code == "":
		return hl7.Errorf(hl7.CodeRequiredFieldMissing, at(msh, 9, 1), "MSH-9.1 message code is empty")
	case trigger == "":
		return hl7.Errorf(hl7.CodeRequiredFieldMissing, at(msh, 9, 2), "MSH-9.2 trigger event is empty")
	}
	if m.ControlID() == "" {
		return hl7.Errorf(hl7.CodeRequiredFieldMissing, at(msh, 10, 0), "MSH-10 message control ID is empty")
	}
	if v := m.Version(); v != "" && !strings.HasPrefix(v, "2.") {
		return hl7.Errorf(hl7.CodeUnsupportedVersion, at(msh, 12, 0), "unsupported version %.10q", v)
	}
	if !s.supCodes[code] {
		return hl7.Errorf(hl7.CodeUnsupportedMessageType, at(msh, 9, 1), "unsupported message type %.10q", code)
	}
	if !s.supTypes[MessageType{code, trigger}] {
		return hl7.Errorf(hl7.CodeUnsupportedEventCode, at(msh, 9, 2), "unsupported trigger event %.10q for %.10q", trigger, code)
	}
	if he := s.checkGroups(m); he != nil {
		return he
	}
	var need []field
	switch code {
	case "ORM", "OMI":
		need = []field{{"PID", 3}, {"ORC", 1}, {"OBR", 4}}
	case "ORU":
		need = []field{{"PID", 3}, {"OBR", 4}, {"OBR", 25}}
	}
	for _, f := range need {
		segs := m.Segments(f.seg)
		if len(segs) == 0 {
			return hl7.Errorf(hl7.CodeSegmentSequence, hl7.Location{Segment: f.seg, Sequence: 1}, "required segment %s missing", f.seg)
		}
		for _, seg := range segs {
			if v := seg.Field(f.n); v == "" || v == `""` {
				return hl7.Errorf(hl7.CodeRequiredFieldMissing, hl7.Location{Segment: f.seg, Sequence: seg.Sequence(), Field: f.n},
					"%s-%d is empty", f.seg, f.n)
			}
		}
	}
	return nil
}

type field struct {
	seg string
	n   int
}

// checkGroups refuses a message with more order groups than
// MaxOrderGroups: each group may become an event, and one message must not
// stall the pipeline for every other patient.
func (s *Server) checkGroups(m *hl7.Message) *hl7.Error {
	max := s.cfg.MaxOrderGroups
	var over *hl7.Segment
	n := 0
	for _, id := range []string{"ORC", "OBR"} {
		segs := m.Segments(id)
		if len(segs) > n {
			n = len(segs)
			if n > max {
				over = segs[max]
			}
		}
	}
	if over == nil {
		return nil
	}
	return &hl7.Error{Code: hl7.CodeInternalError, Severity: hl7.SeverityError, Reject: true,
		Location: hl7.Location{Segment: over.ID(), Sequence: over.Sequence()},
		Text:     fmt.Sprintf("message has %d order groups, more than the limit of %d", n, max)}
}
