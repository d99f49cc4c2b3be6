package hl7

import (
	"bytes"
	"strconv"
	"time"
)

// Acknowledgment codes (MSA-1, HL7 table 0008).
const (
	AckAccept       = "AA" // original mode: application accept
	AckError        = "AE" // original mode: application error
	AckReject       = "AR" // original mode: application reject
	AckCommitAccept = "CA" // enhanced mode: commit accept
	AckCommitError  = "CE" // enhanced mode: commit error
	AckCommitReject = "CR" // enhanced mode: commit reject
)

// Outcome is what a receiver made of a message.
type Outcome int

// Outcomes.
const (
	Accepted Outcome = iota // stored
	Errored                 // not stored; the sender may resend (AE, CE)
	Rejected                // not stored; resending will not help (AR, CR)
)

// AckPlan tells a receiver which acknowledgment to send, if any.
type AckPlan struct {
	Send     bool   // false: send nothing (enhanced mode, MSH-15/16 say so)
	Code     string // MSA-1 to send
	Enhanced bool   // the message asked for enhanced mode
}

// PlanAck decides the acknowledgment for m given the outcome, following
// HL7 v2.5.1 chapter 2.9.
//
// When MSH-15 and MSH-16 are both empty (or m is nil) the original mode
// applies: always answer AA, AE or AR.
//
// Otherwise the enhanced mode applies. A receiver like ours commits the
// message durably before answering, so the accept (commit) acknowledgment
// is sent as MSH-15 asks (AL or empty: always, NE: never, ER: only on
// error or reject, SU: only on success) with CA, CE or CR. We do not
// initiate separate application acknowledgments; if MSH-15 asks for no
// commit acknowledgment but MSH-16 asks for an application one under the
// same conditions, the application acknowledgment (AA, AE, AR) is sent on
// the same connection instead, since committing is all our application
// does before answering.
func PlanAck(m *Message, o Outcome) AckPlan {
	codes := func(a, e, r string) string {
		switch o {
		case Accepted:
			return a
		case Rejected:
			return r
		}
		return e
	}
	if m == nil || len(m.segs) == 0 || (m.AcceptAckType() == "" && m.AppAckType() == "") {
		return AckPlan{Send: true, Code: codes(AckAccept, AckError, AckReject)}
	}
	if wants(m.AcceptAckType(), o, true) {
		return AckPlan{Send: true, Enhanced: true, Code: codes(AckCommitAccept, AckCommitError, AckCommitReject)}
	}
	if wants(m.AppAckType(), o, false) {
		return AckPlan{Send: true, Enhanced: true, Code: codes(AckAccept, AckError, AckReject)}
	}
	return AckPlan{Enhanced: true}
}

// wants interprets an acknowledgment condition (table 0155).
func wants(cond string, o Outcome, emptyMeansAlways bool) bool {
	switch cond {
	case "AL":
		return true
	case "NE":
		return false
	case "ER":
		return o != Accepted
	case "SU":
		return o == Accepted
	case "":
		return emptyMeansAlways
	}
	return true // unknown condition: answer rather than leave the sender waiting
}

// NewACK builds the acknowledgment (message type ACK) for orig following
// HL7 v2.5.1 chapter 2: the original's delimiters; MSH-3/4 and MSH-5/6
// swapped from the original's receiving and sending application and
// facility; MSH-7 now; MSH-9 ACK^<original trigger>^ACK; MSH-10
// controlID; MSH-11 and MSH-12 echoed; MSA-1 code; MSA-2 the original's
// MSH-10; and one ERR segment per error (ERR-2 location, ERR-3 the table
// 0357 code as CWE, ERR-4 severity, ERR-8 the error's text). MSA-3
// carries the first error's text, and for an original of a version
// before 2.5 ERR-1 carries the error as ELD, for receivers that predate
// ERR-2..8.
//
// orig may be nil when the message had no usable MSH: the ACK then uses
// the default delimiters, version 2.5.1, processing ID P and an empty
// MSA-2. The result has segments ended by \r and no MLLP framing.
func NewACK(orig *Message, code string, now time.Time, controlID string, errs ...*Error) []byte {
	d := DefaultDelimiters
	var sendApp, sendFac, recvApp, recvFac, trigger, procID, version, origCtrl []byte
	procID, version = []byte("P"), []byte("2.5.1")
	if orig != nil && len(orig.segs) > 0 {
		d = orig.d
		h := orig.MSH()
		sendApp, sendFac = h.Raw(5), h.Raw(6)
		recvApp, recvFac = h.Raw(3), h.Raw(4)
		trigger = nth(nth(h.Raw(9), d.Repetition, 1), d.Component, 2)
		if p := h.Raw(11); len(p) > 0 {
			procID = p
		}
		if v := h.Raw(12); len(v) > 0 {
			version = v
		}
		origCtrl = h.Raw(10)
	}
	// Receivers of versions before 2.5 only know ERR-1 (ELD).
	legacy := len(version) >= 3 && string(version[:2]) == "2." && version[2] < '5' && (len(version) == 3 || version[3] == '.')
	f := d.Field
	b := make([]byte, 0, 256)
	b = append(b, "MSH"...)
	b = append(b, f)
	b = append(b, d.encodingChars()...)
	for _, v := range [][]byte{sendApp, sendFac, recvApp, recvFac} {
		b = append(b, f)
		b = append(b, v...)
	}
	b = append(b, f)
	b = append(b, now.Format("20060102150405-0700")...)
	b = append(b, f, f)
	b = append(b, "ACK"...)
	b = append(b, d.Component)
	b = append(b, trigger...)
	b = append(b, d.Component)
	b = append(b, "ACK"...)
	b = append(b, f)
	b = append(b, d.EscapeText(controlID)...)
	b = append(b, f)
	b = append(b, procID...)
	b = append(b, f)
	b = append(b, version...)
	mshEnd := len(b)
	b = append(b, '\r')

	b = append(b, "MSA"...)
	b = append(b, f)
	b = append(b, code...)
	b = append(b, f)
	b = append(b, origCtrl...)
	if len(errs) > 0 && errs[0] != nil && errs[0].Text != "" {
		b = append(b, f)
		b = append(b, d.EscapeText(errs[0].Text)...)
	}
	b = append(b, '\r')

	for _, e := range errs {
		if e == nil {
			continue
		}
		b = append(b, "ERR"...)
		b = append(b, f)
		if legacy {
			b = append(b, e.Location.eld(d, e.Code)...)
		}
		b = append(b, f)
		b = append(b, e.Location.erl(d)...)
		b = append(b, f)
		b = append(b, strconv.Itoa(e.Code)...)
		b = append(b, d.Component)
		b = append(b, d.EscapeText(CodeText(e.Code))...)
		b = append(b, d.Component)
		b = append(b, "HL70357"...)
		b = append(b, f)
		b = append(b, e.Severity.String()...)
		if e.Text != "" {
			b = append(b, f, f, f, f)
			b = append(b, d.EscapeText(e.Text)...)
		}
		b = append(b, '\r')
	}
	// Text echoed from the original was converted to UTF-8; say so.
	for _, c := range b {
		if c >= 0x80 {
			tail := append([]byte(nil), b[mshEnd:]...)
			b = append(b[:mshEnd], bytes.Repeat([]byte{f}, 6)...)
			b = append(b, "UNICODE UTF-8"...)
			b = append(b, tail...)
			break
		}
	}
	return b
}
