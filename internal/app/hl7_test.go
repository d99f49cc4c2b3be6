package app_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// The RIS side of an imaging workflow, written for these tests (synthetic
// patients, no real data). {{ctl}} becomes a unique MSH-10.
var risMessages = []struct {
	name, ctl, msg string
}{
	{"new order", "ORM-1001", testkit.RISOrder},
	{"status change", "ORM-1002", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310091500+0100||ORM^O01|{{ctl}}|P|2.3|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
ORC|XO|PLC1001|FIL1001||IP||^^^20260310090000^^S||20260310091500+0100
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|S|||||||||||||ACC1001|RP1|SPS1|||||CT|||1^^^20260310090000^^S`},
	{"preliminary report", "ORU-1003", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310101500+0100||ORU^R01^ORU_R01|{{ctl}}|P|2.5.1|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
ORC|RE|PLC1001|FIL1001||IP
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|||20260310090500|||||||||1234^REFERRER^SAM^^^DR||ACC1001|RP1|SPS1||20260310101500||CT|P|||||||5555&RESIDENT&RIA
OBX|1|TX|RPT^Report^L|1|PRELIMINARY: no acute findings.||||||P`},
	{"final report", "ORU-1004", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310113000+0100||ORU^R01^ORU_R01|{{ctl}}|P|2.5.1|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
ORC|RE|PLC1001|FIL1001||CM
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|||20260310090500|||||||||1234^REFERRER^SAM^^^DR||ACC1001|RP1|SPS1||20260310113000||CT|F|||||||3333&RADIOLOGIST&PAT
OBX|1|TX|RPT^Report^L|1|FINDINGS: Lungs clear \T\ no effusion.\.br\Heart normal.||||||F
OBX|2|TX|RPT^Report^L|2|IMPRESSION: No acute abnormality.||||||F`},
	{"corrected report", "ORU-1005", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310120000+0100||ORU^R01^ORU_R01|{{ctl}}|P|2.5.1|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
ORC|RE|PLC1001|FIL1001||CM
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|||20260310090500|||||||||1234^REFERRER^SAM^^^DR||ACC1001|RP1|SPS1||20260310120000||CT|C|||||||3333&RADIOLOGIST&PAT
OBX|1|TX|RPT^Report^L|1|ADDENDUM: 4 mm nodule right upper lobe; pneumothorax on image 41.|||HH|||C`},
	{"second order", "ORM-1006", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310121000+0100||ORM^O01|{{ctl}}|P|2.3
PID|1||MRN4711^^^NORTHWING^MR||MULLER^ZOE||19700101|F
ORC|NW|PLC1002|FIL1002||SC||^^^20260311090000^^R
OBR|1|PLC1002|FIL1002|76700^US ABDOMEN COMPLETE^C4||||||||||||||ACC1002||||||US`},
	{"cancel", "ORM-1007", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310122000+0100||ORM^O01|{{ctl}}|P|2.3
PID|1||MRN4711^^^NORTHWING^MR||MULLER^ZOE||19700101|F
ORC|CA|PLC1002|FIL1002||CA
OBR|1|PLC1002|FIL1002|76700^US ABDOMEN COMPLETE^C4||||||||||||||ACC1002||||||US`},
}

// TestRISOverMLLP sends a RIS workflow with mllp_send to the running
// daemon: every message gets AA with MSA-2 = its MSH-10, a resend makes no
// second event, and the events with their FHIR resources reach a live
// subscriber and GET /v1/events.
func TestRISOverMLLP(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING")
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"MRN4711"}})
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, m := range risMessages {
		f := testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl))
		files = append(files, f)
		ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), f)
		msa := ack.Segment("MSA")
		if msa == nil || msa.Field(1) != "AA" || msa.Field(2) != m.ctl {
			t.Fatalf("%s: ACK %v; want MSA|AA|%s", m.name, ack.Bytes(), m.ctl)
		}
		if code, trig, _ := ack.MessageType(); code != "ACK" || trig != m.ctl[:3] && trig == "" {
			t.Errorf("%s: ACK MSH-9 %s^%s", m.name, code, trig)
		}
		if ack.SendingApplication() != "RADBRIDGE" || ack.ReceivingApplication() != "RADRIS" {
			t.Errorf("%s: ACK does not swap applications: sender %q receiver %q", m.name, ack.SendingApplication(), ack.ReceivingApplication())
		}
	}
	// The RIS resends the final report (it lost our ACK): AA again, no event.
	if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), files[3]); ack.Segment("MSA").Field(1) != "AA" {
		t.Errorf("resend: ACK %q", ack.Bytes())
	}

	want := []struct {
		typ      rbv1.EventType
		resource string
		prio     rbv1.Priority
		ctl      string
	}{
		{rbv1.EventType_ORDER_PLACED, "ServiceRequest", rbv1.Priority_PRIORITY_STAT, "ORM-1001"},
		{rbv1.EventType_ORDER_UPDATED, "ServiceRequest", rbv1.Priority_PRIORITY_STAT, "ORM-1002"},
		{rbv1.EventType_RESULT_RECEIVED, "DiagnosticReport", rbv1.Priority_PRIORITY_STAT, "ORU-1003"},
		{rbv1.EventType_IMAGING_REPORT_READY, "DiagnosticReport", rbv1.Priority_PRIORITY_STAT, "ORU-1004"},
		// The final report completes its order (joined by accession).
		{rbv1.EventType_ORDER_UPDATED, "ServiceRequest", rbv1.Priority_PRIORITY_STAT, "ORU-1004"},
		{rbv1.EventType_IMAGING_REPORT_READY, "DiagnosticReport", rbv1.Priority_PRIORITY_CRITICAL, "ORU-1005"},
		{rbv1.EventType_ORDER_PLACED, "ServiceRequest", rbv1.Priority_PRIORITY_ROUTINE, "ORM-1006"},
		{rbv1.EventType_ORDER_CANCELLED, "ServiceRequest", rbv1.Priority_PRIORITY_ROUTINE, "ORM-1007"},
	}
	var got []*rbv1.Event
	for len(got) < len(want) {
		ev, err := sub.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		if !ev.Heartbeat {
			got = append(got, ev)
		}
	}
	for i, w := range want {
		e := got[i]
		if e.Type != w.typ || e.ResourceType != w.resource || e.Priority != w.prio || e.PatientId != "MRN4711" {
			t.Errorf("event %d: %v %s %v patient %q; want %v %s %v MRN4711", i+1, e.Type, e.ResourceType, e.Priority, e.PatientId, w.typ, w.resource, w.prio)
		}
		if e.Source.GetMessageControlId() != w.ctl || e.Source.GetSendingApplication() != "RADRIS" {
			t.Errorf("event %d source %v", i+1, e.Source)
		}
	}
	if got[0].AccessionNumber != "ACC1001" || got[0].Message != "STAT New imaging order: CT CHEST W/O CONTRAST" {
		t.Errorf("order event: accession %q message %q", got[0].AccessionNumber, got[0].Message)
	}
	sr := got[0].Resource.AsMap()
	if sr["resourceType"] != "ServiceRequest" || sr["status"] != "active" || sr["priority"] != "stat" || sr["intent"] != "order" {
		t.Errorf("ServiceRequest %v", sr)
	}
	if subj := fmt.Sprint(sr["subject"]); !strings.Contains(subj, "MRN4711") {
		t.Errorf("ServiceRequest subject %s, want the NORTHWING MRN", subj)
	}
	if reason := fmt.Sprint(sr["reasonCode"]); !strings.Contains(reason, "Cough & fever ^ 3 days") {
		t.Errorf("escape sequences not decoded in reasonCode: %s", reason)
	}
	final := got[3].Resource.AsMap()
	if final["status"] != "final" || got[3].Message != "Radiology report ready: CT CHEST W/O CONTRAST" {
		t.Errorf("final report: status %v message %q", final["status"], got[3].Message)
	}
	if c := final["conclusion"]; c != "FINDINGS: Lungs clear & no effusion.\nHeart normal.\nIMPRESSION: No acute abnormality." {
		t.Errorf("conclusion %q", c)
	}
	pf := final["presentedForm"].([]any)[0].(map[string]any)
	if b, _ := base64.StdEncoding.DecodeString(pf["data"].(string)); !strings.HasPrefix(string(b), "FINDINGS: Lungs clear & no effusion.") {
		t.Errorf("presentedForm data %q", b)
	}
	if based := fmt.Sprint(final["basedOn"]); !strings.Contains(based, "ServiceRequest/ACC1001") {
		t.Errorf("report basedOn %s", based)
	}
	if done := got[4].Resource.AsMap(); done["status"] != "completed" || got[4].Message != "Imaging order completed: CT CHEST W/O CONTRAST" {
		t.Errorf("order after the final report: %v %q", done["status"], got[4].Message)
	}
	if corr := got[5].Resource.AsMap(); corr["status"] != "corrected" || !strings.HasPrefix(got[5].Message, "CRITICAL: Corrected radiology report") {
		t.Errorf("corrected report: %v %q", corr["status"], got[5].Message)
	}
	if cancelled := got[7].Resource.AsMap(); cancelled["status"] != "revoked" || got[7].AccessionNumber != "ACC1002" {
		t.Errorf("cancel: %v %q", cancelled["status"], got[7].AccessionNumber)
	}
	// The resend made no event; the log holds exactly these seven.
	code, list := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events")
	if evs, _ := list["events"].([]any); code != 200 || len(evs) != len(want) {
		t.Errorf("GET /v1/events: %d events, want %d", len(evs), len(want))
	}
	code, snap := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/patients/MRN4711/imaging")
	if orders, _ := snap["orders"].([]any); code != 200 || len(orders) != 2 {
		t.Errorf("GetPatientImaging orders = %d (%d), want 2", len(orders), code)
	}
	if reports, _ := snap["reports"].([]any); len(reports) != 1 {
		t.Errorf("GetPatientImaging reports = %d, want 1 (corrected replaces final)", len(reports))
	}
}

// TestRISBadInputGetsAEOrAR: hostile or incomplete messages are answered
// with AE/AR and an ERR segment, not a dropped socket, and record nothing.
func TestRISBadInputGetsAEOrAR(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	for _, tc := range []struct {
		name, msg, code, err string
	}{
		{"missing PID-3", "MSH|^~\\&|RADRIS|NW|RADBRIDGE|IMG|20260310||ORM^O01|BAD1|P|2.3\nPID|1||||X^Y\nORC|NW|P1|F1\nOBR|1|P1|F1|71250^CT CHEST", "AE", "101"},
		{"unsupported type", "MSH|^~\\&|RADRIS|NW|RADBRIDGE|IMG|20260310||ADT^A01|BAD2|P|2.3\nPID|1||MRN1", "AR", "200"},
		{"unknown charset", "MSH|^~\\&|RADRIS|NW|RADBRIDGE|IMG|20260310||ORM^O01|BAD3|P|2.3|||||D|KLINGON\nPID|1||MRN1\nORC|NW|P1|F1\nOBR|1|P1|F1|71250^CT", "AE", "102"},
	} {
		ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, tc.name, tc.msg))
		if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != tc.code {
			t.Errorf("%s: ACK %q, want %s", tc.name, ack.Bytes(), tc.code)
		}
		if e := ack.Segment("ERR"); e == nil || e.Component(3, 1, 1) != tc.err {
			t.Errorf("%s: ERR %q, want code %s", tc.name, ack.Bytes(), tc.err)
		}
	}
	code, list := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events")
	if evs, _ := list["events"].([]any); code != 200 || len(evs) != 0 {
		t.Errorf("bad input produced %d events", len(evs))
	}
}

// TestNoPatientDataInLogs: at debug level, with HL7 and DICOM traffic and
// bad input, the log names no patient; --log-patient-data turns bodies on.
func TestNoPatientDataInLogs(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	for _, on := range []bool{false, true} {
		buf := &testkit.Buffer{}
		log := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		var extra []string
		if on {
			extra = append(extra, "--log-patient-data")
		}
		d := startDaemonLog(t, filepath.Join(t.TempDir(), "data"), log, extra...)
		m := risMessages[3]
		testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "final", strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl)))
		testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "bad", "MSH|^~\\&|RADRIS|NW|RADBRIDGE|IMG|20260310||ORM^O01|BAD1|P|2.3\nPID|1||||SECRET^NAME\nORC|NW|P1|F1\nOBR|1|P1|F1|71250^CT CHEST"))
		host, port := hostPort(d.DICOMAddr())
		dir := t.TempDir()
		makeStudy(t, dir, studyUID, 1, 1, 1)
		if out, err := dcmtk(t, "storescu", "-aec", "RADBRIDGE", "+sd", "+r", host, port, dir); err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
		// The order and the instance are both mapped: whatever the mapper
		// logs about them is in buf.
		waitMetric(t, "http://"+d.HTTPAddr()+"/metrics", "radbridge_mapper_observations_total", 2, "outcome", "mapped")
		logs := buf.String()
		for _, phi := range []string{"MRN4711", "MÜLLER", "Müller", "SECRET", "Lungs clear", studyUID} {
			if got := strings.Contains(logs, phi); got != on && !(on && phi == "SECRET") {
				t.Errorf("--log-patient-data=%v: log contains %q: %v", on, phi, got)
			}
		}
	}
}
