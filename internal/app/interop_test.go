package app_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/internal/app"
	"radbridge/internal/testkit"
	"radbridge/mapper/rules"
)

// Nothing acknowledged is dropped or misread. Each test sends
// through the real ports with the real peers (mllp_send, storescu) and
// checks what a consumer of GET /v1/events and the patient snapshot sees.

// waitEventList polls GET /v1/events with query until at least n events match
// and returns them (bounded).
func waitEventList(t *testing.T, d *app.Daemon, query url.Values, n int) []map[string]any {
	t.Helper()
	query.Set("page_size", "200")
	var out []map[string]any
	if !testkit.Poll(30*time.Second, func() bool {
		_, list := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events?"+query.Encode())
		out = out[:0]
		for _, e := range asSlice(list["events"]) {
			out = append(out, e.(map[string]any))
		}
		return len(out) >= n
	}) {
		t.Fatalf("%d events for %s, want %d", len(out), query.Encode(), n)
	}
	return out
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func resourceField(e map[string]any, k string) any {
	r, _ := e["resource"].(map[string]any)
	return r[k]
}

func sendAA(t *testing.T, bin string, d *app.Daemon, name, msg string) {
	t.Helper()
	ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7Framed(t, name, msg))
	if ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("%s: %q", name, ack.Bytes())
	}
}

// delimOrder is one order written with the default delimiters; PID-3's
// CX-4 is an HD with sub-components, the requester's name and the reason
// carry escaped delimiters.
const delimOrder = `MSH|^~\&|RADRIS^1.2.3.4.5^ISO|NORTHWING|RADBRIDGE|IMAGING|20260310083000+0100||ORM^O01|{{ctl}}|P|2.3
PID|1||998877665^^^SSA&2.16.840.1.113883.4.1&ISO^SS~MRN6001^^^NORTHWING&1.2.3.4&ISO^MR||O\T\BRIEN^SEAN||19700101|M
ORC|NW|PLC6001|FIL6001||SC||^^^20260310090000+0100^^S||20260310082900+0100|CLERK^RIS||1234^REFERRER\T\CO^SAM^^^DR
OBR|1|PLC6001|FIL6001|71250^CT CHEST \F\ ABDOMEN^C4|S||20260310082900+0100||||||Pain \R\ fever|||1234^REFERRER^SAM^^^DR||ACC6001|RP1|SPS1||||CT|||1^^^20260310090000+0100^^S`

// delimOrderOther is delimOrder with the delimiters #$*!% and a truncation
// character @: every data character that is one of them escaped.
const delimOrderOther = `MSH#$*!%@#RADRIS$1.2.3.4.5$ISO#NORTHWING#RADBRIDGE#IMAGING#20260310083000+0100##ORM$O01#{{ctl}}#P#2.3
PID#1##998877665$$$SSA%2.16.840.1.113883.4.1%ISO$SS*MRN6001$$$NORTHWING%1.2.3.4%ISO$MR##O&BRIEN$SEAN##19700101#M
ORC#NW#PLC6001#FIL6001##SC##$$$20260310090000+0100$$S##20260310082900+0100#CLERK$RIS##1234$REFERRER&CO$SAM$$$DR
OBR#1#PLC6001#FIL6001#71250$CT CHEST | ABDOMEN$C4#S##20260310082900+0100######Pain ~ fever###1234$REFERRER$SAM$$$DR##ACC6001#RP1#SPS1####CT###1$$$20260310090000+0100$$S`

// TestDelimitersOverMLLP: one order sent with the default delimiters and
// again with another legal set is acknowledged AA both times and reads the
// same: the second event carries a ServiceRequest identical to the first
// (patient by the CX-4 authority's sub-component, escaped text intact), and
// so do the events' sources.
func TestDelimitersOverMLLP(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING")
	sendAA(t, bin, d, "default", strings.ReplaceAll(delimOrder, "{{ctl}}", "D-1"))
	sendAA(t, bin, d, "other", strings.ReplaceAll(delimOrderOther, "{{ctl}}", "D-2"))
	evs := waitEventList(t, d, url.Values{"patient_id": {"MRN6001"}}, 2)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2: %v", len(evs), evs)
	}
	first, second := evs[0]["resource"], evs[1]["resource"]
	if diff := cmp.Diff(second, first); diff != "" {
		t.Errorf("ServiceRequest from the other delimiters (-got +want):\n%s", diff)
	}
	if got := fmt.Sprint(resourceField(evs[1], "subject")); got != "map[identifier:map[system:urn:hl7v2:assigning-authority:NORTHWING value:MRN6001] type:Patient]" {
		t.Errorf("subject %s", got)
	}
	if got := fmt.Sprint(resourceField(evs[1], "requester"), resourceField(evs[1], "reasonCode"), resourceField(evs[1], "code")); !strings.Contains(got, "SAM REFERRER&CO") ||
		!strings.Contains(got, "Pain ~ fever") || !strings.Contains(got, "CT CHEST | ABDOMEN") {
		t.Errorf("requester, reason, code: %s", got)
	}
	// The sender reads the same too (MSH-3 as HD text).
	for _, e := range evs {
		src, _ := e["source"].(map[string]any)
		if app := fmt.Sprint(src["sending_application"], src["sendingApplication"]); !strings.Contains(app, "RADRIS^1.2.3.4.5^ISO") {
			t.Errorf("event source %v", src)
		}
	}
	if evs[0]["type"] != "ORDER_PLACED" || evs[1]["type"] != "ORDER_UPDATED" {
		t.Errorf("event types %v, %v", evs[0]["type"], evs[1]["type"])
	}
}

// TestOnePatientIdentifierAcrossFronts: an HL7 order and a DICOM study of
// one MRN carry the same FHIR subject.identifier (system and value): the
// configured --patient-identifier-system, or without any configuration
// the documented default with PID-3's MR repetition as the patient.
func TestOnePatientIdentifierAcrossFronts(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	for _, tc := range []struct {
		name   string
		flags  []string
		system string
	}{
		{"configured", []string{"--hl7-patient-authority", "NORTHWING", "--dicom-patient-issuer", "NORTHWING", "--patient-identifier-system", "urn:oid:1.2.3.999"}, "urn:oid:1.2.3.999"},
		{"nothing configured", nil, "urn:radbridge:patient-id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, filepath.Join(t.TempDir(), "data"), append(tc.flags, "--study-quiet-period", "1s")...)
			// PID-3: an SSN first, the MRN (type MR) second.
			sendAA(t, bin, d, "order", strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "ID-1"))
			storeStudy(t, d, studyUID+".71", "MRN4711", "ACC1001", 2)
			order := waitEventList(t, d, url.Values{"patient_id": {"MRN4711"}, "type": {"ORDER_PLACED"}}, 1)[0]
			study := waitEventList(t, d, url.Values{"patient_id": {"MRN4711"}, "type": {"IMAGING_STUDY_AVAILABLE"}}, 1)[0]
			want := map[string]any{"type": "Patient", "identifier": map[string]any{"system": tc.system, "value": "MRN4711"}}
			for _, e := range []map[string]any{order, study} {
				if diff := cmp.Diff(resourceField(e, "subject"), any(want)); diff != "" {
					t.Errorf("%v subject (-got +want):\n%s", e["type"], diff)
				}
			}
		})
	}
}

// TestStudyUIDJoinsOverTheWire: orders that name the Study Instance UID
// (OMI IPC-3; ORM ZDS-1) join the studies storescu sends without an
// accession or with one the modality rewrote: the ImagingStudy is based on
// the ServiceRequest, which carries the UID and is completed.
func TestStudyUIDJoinsOverTheWire(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING", "--study-quiet-period", "1s")
	uidA, uidB := studyUID+".81", studyUID+".82"
	sendAA(t, bin, d, "omi", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260311100000+0100||OMI^O23^OMI_O23|UID-1|P|2.5.1
PID|1||MRN4711^^^NORTHWING^MR||MULLER^ZOE||19700101|F
ORC|NW|PLC3001|FIL3001||SC
TQ1|1||||||20260312080000+0100|||R
OBR|1|PLC3001|FIL3001|71250^CT CHEST W/O CONTRAST^C4|||||||||||||||||||CT
IPC|ACC3001|RP3001|`+uidA+`|SPS3001|CT`)
	sendAA(t, bin, d, "orm", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260311100500+0100||ORM^O01|UID-2|P|2.3
PID|1||MRN4711^^^NORTHWING^MR||MULLER^ZOE||19700101|F
ORC|NW|PLC3002|FIL3002||SC
OBR|1|PLC3002|FIL3002|71250^CT CHEST W/O CONTRAST^C4||||||||||||||ACC3002||||||CT
ZDS|`+uidB+`^RADRIS^Application^DICOM`)
	storeStudy(t, d, uidA, "MRN4711", "", 2)        // no accession
	storeStudy(t, d, uidB, "MRN4711", "MOD-777", 2) // rewritten by the modality

	var snap map[string]any
	if !testkit.Poll(30*time.Second, func() bool {
		_, snap = testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/patients/MRN4711/imaging")
		return len(asSlice(snap["studies"])) == 2 && allAvailable(snap) && len(asSlice(snap["orders"])) == 2
	}) {
		t.Fatalf("snapshot never settled: %v", snap)
	}
	for _, s := range asSlice(snap["studies"]) {
		st := s.(map[string]any)
		want := map[string]string{uidA: "ServiceRequest/" + rules.ServiceRequestID("MRN4711", "ACC3001"), uidB: "ServiceRequest/" + rules.ServiceRequestID("MRN4711", "ACC3002")}[st["id"].(string)]
		if got := fmt.Sprint(st["basedOn"]); got != "[map[reference:"+want+"]]" {
			t.Errorf("study %v basedOn %s, want %s", st["id"], got, want)
		}
	}
	for _, o := range asSlice(snap["orders"]) {
		or := o.(map[string]any)
		uid := map[string]string{rules.ServiceRequestID("MRN4711", "ACC3001"): uidA, rules.ServiceRequestID("MRN4711", "ACC3002"): uidB}[or["id"].(string)]
		ids, _ := json.Marshal(or["identifier"])
		if !strings.Contains(string(ids), `{"system":"urn:dicom:uid","value":"urn:oid:`+uid+`"}`) || or["status"] != "completed" {
			t.Errorf("order %v: status %v identifiers %s", or["id"], or["status"], ids)
		}
	}
	// Subscribers saw the link: the newest event about each study carries
	// basedOn, and no event warned.
	evs := waitEventList(t, d, url.Values{"patient_id": {"MRN4711"}}, 4)
	newest := map[string]map[string]any{}
	for _, e := range evs {
		if e["resource_type"] == "ImagingStudy" || e["resourceType"] == "ImagingStudy" {
			newest[fmt.Sprint(resourceField(e, "id"))] = e
		}
		if strings.Contains(fmt.Sprint(e["message"]), "warning") {
			t.Errorf("event %v warns: %v", e["type"], e["message"])
		}
	}
	for _, uid := range []string{uidA, uidB} {
		if e := newest[uid]; e == nil || resourceField(e, "basedOn") == nil {
			t.Errorf("newest event about study %s: %v", uid, e)
		}
	}
}
