package hl7

import (
	"strconv"
	"strings"
)

// Get returns the decoded value at path, or "" when the path is invalid
// or the value absent. The path syntax is
//
//	SEG[occurrence]-field[repetition]-component-subcomponent
//
// where every bracketed index and every part after the field is optional
// and all numbers are 1-based: "PID-5", "PID-3[2]-4-1", "OBX[3]-5".
// Without a component it returns the repetition like Segment.Field does;
// without a sub-component, like Segment.Component.
func (m *Message) Get(path string) string {
	p, ok := parsePath(path)
	if !ok {
		return ""
	}
	var seg *Segment
	n := 0
	for i := range m.segs {
		if m.segs[i].id == p.Segment {
			n++
			if n == p.Sequence {
				seg = &m.segs[i]
				break
			}
		}
	}
	if seg == nil {
		return ""
	}
	switch {
	case p.Field == 0:
		return seg.id
	case p.Component == 0:
		if seg.isEncodingChars(p.Field) {
			if p.Repetition == 1 {
				return seg.Field(p.Field)
			}
			return ""
		}
		return m.decode(nth(seg.Raw(p.Field), m.d.Repetition, p.Repetition))
	case p.Subcomponent == 0:
		return seg.Component(p.Field, p.Repetition, p.Component)
	}
	return seg.Sub(p.Field, p.Repetition, p.Component, p.Subcomponent)
}

// parsePath parses the syntax described at Message.Get.
func parsePath(s string) (Location, bool) {
	var l Location
	parts := strings.Split(s, "-")
	if len(parts) > 4 {
		return l, false
	}
	id, idx, ok := bracket(parts[0])
	if !ok || !validSegmentID([]byte(id)) {
		return l, false
	}
	l.Segment, l.Sequence = id, idx
	l.Repetition = 1
	if len(parts) > 1 {
		f, rep, ok := bracket(parts[1])
		if !ok {
			return l, false
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return l, false
		}
		l.Field, l.Repetition = n, rep
	}
	for i, dst := range []*int{&l.Component, &l.Subcomponent} {
		if len(parts) > i+2 {
			n, err := strconv.Atoi(parts[i+2])
			if err != nil || n < 1 {
				return l, false
			}
			*dst = n
		}
	}
	return l, true
}

// bracket splits "X[3]" into "X" and 3; "X" gives "X" and 1.
func bracket(s string) (string, int, bool) {
	i := strings.IndexByte(s, '[')
	if i < 0 {
		return s, 1, true
	}
	if !strings.HasSuffix(s, "]") {
		return "", 0, false
	}
	n, err := strconv.Atoi(s[i+1 : len(s)-1])
	if err != nil || n < 1 {
		return "", 0, false
	}
	return s[:i], n, true
}
