package hl7

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var ackTime = time.Date(2025, 3, 17, 10, 15, 0, 0, time.FixedZone("", 3600))

func TestNewACK(t *testing.T) {
	orm := mustParse(t, readTestdata(t, "orm_o01.hl7"))
	custom := mustParse(t, []byte("MSH#:*!@#SND#SFAC#RCV#RFAC#2025##ORU:R01#CTL9#T#2.4\rPID#1##X\r"))
	tests := []struct {
		name string
		orig *Message
		code string
		errs []*Error
		want []string
	}{
		{
			name: "accept",
			orig: orm,
			code: AckAccept,
			want: []string{
				`MSH|^~\&|RADBRIDGE|IMAGING|RADRIS|NORTHWING^1.2.840.99999.1.1^ISO|20250317101500+0100||ACK^O01^ACK|ACK1|P|2.3`,
				`MSA|AA|ORM000123`,
			},
		},
		{
			name: "error with location",
			orig: orm,
			code: AckError,
			errs: []*Error{Errorf(CodeRequiredFieldMissing, Location{Segment: "PID", Sequence: 1, Field: 3}, "PID-3 is empty")},
			want: []string{
				`MSH|^~\&|RADBRIDGE|IMAGING|RADRIS|NORTHWING^1.2.840.99999.1.1^ISO|20250317101500+0100||ACK^O01^ACK|ACK1|P|2.3`,
				`MSA|AE|ORM000123|PID-3 is empty`,
				`ERR|PID^1^3^101&Required field missing&HL70357|PID^1^3|101^Required field missing^HL70357|E||||PID-3 is empty`,
			},
		},
		{
			name: "two errors, text escaped",
			orig: orm,
			code: AckReject,
			errs: []*Error{
				Errorf(CodeUnsupportedMessageType, Location{Segment: "MSH", Sequence: 1, Field: 9, Component: 1}, "type|x"),
				{Code: CodeInternalError, Severity: SeverityError, Text: "a^b"},
			},
			want: []string{
				`MSH|^~\&|RADBRIDGE|IMAGING|RADRIS|NORTHWING^1.2.840.99999.1.1^ISO|20250317101500+0100||ACK^O01^ACK|ACK1|P|2.3`,
				`MSA|AR|ORM000123|type\F\x`,
				`ERR|MSH^1^9^200&Unsupported message type&HL70357|MSH^1^9^^1|200^Unsupported message type^HL70357|E||||type\F\x`,
				`ERR|^^^207&Application internal error&HL70357||207^Application internal error^HL70357|E||||a\S\b`,
			},
		},
		{
			name: "custom delimiters",
			orig: custom,
			code: AckCommitAccept,
			want: []string{
				`MSH#:*!@#RCV#RFAC#SND#SFAC#20250317101500+0100##ACK:R01:ACK#ACK1#T#2.4`,
				`MSA#CA#CTL9`,
			},
		},
		{
			name: "no MSH",
			orig: nil,
			code: AckReject,
			errs: []*Error{{Code: CodeSegmentSequence, Location: Location{Segment: "MSH", Sequence: 1}, Reject: true, Severity: SeverityError}},
			want: []string{
				`MSH|^~\&|||||20250317101500+0100||ACK^^ACK|ACK1|P|2.5.1`,
				`MSA|AR|`,
				`ERR||MSH^1|100^Segment sequence error^HL70357|E`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Split(strings.TrimSuffix(string(NewACK(tt.orig, tt.code, ackTime, "ACK1", tt.errs...)), "\r"), "\r")
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("ACK (-got +want):\n%s", diff)
			}
		})
	}
}

func TestNewACKParsesBack(t *testing.T) {
	orig := mustParse(t, readTestdata(t, "omi_o23.hl7"))
	e := Errorf(CodeRequiredFieldMissing, Location{Segment: "OBR", Sequence: 2, Field: 4, Component: 1}, "OBR-4 is empty")
	ack := mustParse(t, NewACK(orig, AckCommitError, ackTime, "A-77", e))
	code, trig, st := ack.MessageType()
	got := []string{code, trig, st, ack.ControlID(), ack.Get("MSA-1"), ack.Get("MSA-2"), ack.Get("ERR-2-1"), ack.Get("ERR-2-3"), ack.Get("ERR-3-1"), ack.Get("ERR-3-3"), ack.Get("ERR-4"), ack.Get("ERR-8"), ack.Version()}
	want := []string{"ACK", "O23", "ACK", "A-77", "CE", "OMI000042", "OBR", "4", "101", "HL70357", "E", "OBR-4 is empty", "2.5.1"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
}

func TestNewACKNonASCIIDeclaresUTF8(t *testing.T) {
	orig := mustParse(t, []byte("MSH|^~\\&|\xC4PP|FAC|R|RF|2025||ORU^R01|C1|P|2.5||||||8859/1\r"))
	ack := mustParse(t, NewACK(orig, AckAccept, ackTime, "A1"))
	if got, want := ack.Charset(), "UNICODE UTF-8"; got != want {
		t.Errorf("charset: got %q, want %q", got, want)
	}
	if got, want := ack.ReceivingApplication(), "ÄPP"; got != want {
		t.Errorf("MSH-5: got %q, want %q", got, want)
	}
}

func TestPlanAck(t *testing.T) {
	msg := func(acc, app string) *Message {
		return mustParse(t, []byte("MSH|^~\\&|A|B|C|D|2025||ORU^R01|1|P|2.5.1|||"+acc+"|"+app+"\r"))
	}
	tests := []struct {
		m    *Message
		o    Outcome
		want AckPlan
	}{
		{nil, Rejected, AckPlan{Send: true, Code: "AR"}},
		{msg("", ""), Accepted, AckPlan{Send: true, Code: "AA"}},
		{msg("", ""), Errored, AckPlan{Send: true, Code: "AE"}},
		{msg("AL", "NE"), Accepted, AckPlan{Send: true, Enhanced: true, Code: "CA"}},
		{msg("AL", "AL"), Errored, AckPlan{Send: true, Enhanced: true, Code: "CE"}},
		{msg("AL", ""), Rejected, AckPlan{Send: true, Enhanced: true, Code: "CR"}},
		{msg("ER", "NE"), Accepted, AckPlan{Enhanced: true}},
		{msg("ER", "NE"), Errored, AckPlan{Send: true, Enhanced: true, Code: "CE"}},
		{msg("SU", "NE"), Rejected, AckPlan{Enhanced: true}},
		{msg("NE", "AL"), Accepted, AckPlan{Send: true, Enhanced: true, Code: "AA"}},
		{msg("NE", "ER"), Accepted, AckPlan{Enhanced: true}},
		{msg("NE", "NE"), Errored, AckPlan{Enhanced: true}},
	}
	for i, tt := range tests {
		if diff := cmp.Diff(PlanAck(tt.m, tt.o), tt.want); diff != "" {
			t.Errorf("case %d (-got +want):\n%s", i, diff)
		}
	}
}

func TestErrorAckCode(t *testing.T) {
	e := Errorf(CodeRequiredFieldMissing, Location{}, "x")
	r := Errorf(CodeUnsupportedMessageType, Location{}, "x")
	got := []string{e.AckCode(false), e.AckCode(true), r.AckCode(false), r.AckCode(true)}
	if diff := cmp.Diff(got, []string{"AE", "CE", "AR", "CR"}); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
	if got, want := e.Error(), "hl7 101 required field missing: x"; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
}
