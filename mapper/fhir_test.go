package mapper_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	"github.com/google/go-cmp/cmp"

	"radbridge/ingest"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// The FHIR tests run the real rules over realistic input and check every
// resource they emit with an independent FHIR R4 validator: google/fhir's
// JSON unmarshaller, which checks structure, cardinality, required elements
// and primitive formats. Golden files under testdata/fhir hold one resource
// of each type (go test -update rewrites them).

// fhirRun feeds observations to the rules on one state, as the mapper does,
// with fixed observation times.
type fhirRun struct {
	t     *testing.T
	rules map[string]rules.Rule
	state *rules.State
	seq   uint64
	now   time.Time
	// events by scenario name.
	events []fhirEvent
}

type fhirEvent struct {
	name string
	ev   *rbv1.Event
}

func newFHIRRun(t *testing.T, o rules.Options) *fhirRun {
	byKind := rules.New(o)
	byKind[ingest.KindViewed] = rules.Viewed
	return &fhirRun{t: t, rules: byKind, state: rules.NewState(),
		now: time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)}
}

// apply runs the rule of kind on body (a timer when timer is non-nil) and
// returns the events it emitted.
func (r *fhirRun) apply(name, kind string, body any, timer *ingest.Timer) []*rbv1.Event {
	r.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		r.t.Fatal(err)
	}
	r.seq++
	r.now = r.now.Add(time.Second)
	c := rules.NewContext(r.state, ingest.Record{Seq: r.seq, Observation: ingest.Observation{
		Kind: kind, Key: fmt.Sprintf("%s:%d", kind, r.seq), Time: r.now, Body: b,
		Source: ingest.Source{Protocol: "test"},
	}}, map[string]bool{})
	c.Timer = timer
	rule := r.rules[kind]
	if rule == nil {
		r.t.Fatalf("%s: no rule for %s", name, kind)
	}
	if err := rule.Apply(c); err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	for _, ev := range c.Events() {
		r.events = append(r.events, fhirEvent{name, ev})
	}
	return c.Events()
}

func (r *fhirRun) hl7(name, msg string) []*rbv1.Event {
	raw := strings.ReplaceAll(strings.TrimSpace(msg), "\n", "\r") + "\r"
	return r.apply(name, ingest.KindHL7, ingest.HL7Body{Raw: []byte(raw)}, nil)
}

func (r *fhirRun) store(name string, in ingest.Instance) []*rbv1.Event {
	return r.apply(name, ingest.KindDICOMInstance, in, nil)
}

// quiet ends the quiet period of study uid.
func (r *fhirRun) quiet(name, uid string) []*rbv1.Event {
	body, _ := json.Marshal(map[string]string{"study": uid})
	return r.apply(name, ingest.KindDICOMInstance, nil,
		&ingest.Timer{Key: "quiet:" + uid, Kind: ingest.KindDICOMInstance, At: r.now, Body: body})
}

// fhirRIS is a RIS workflow as in internal/app's risMessages, with an
// explicit zone on every time so the resources do not depend on the
// machine's, and more message shapes seen at sites.
var fhirRIS = []struct{ name, msg string }{
	{"new STAT order, non-ASCII name", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310083000+0100||ORM^O01|ORM-1001|P|2.3|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
PV1|1|O|RAD^^^NORTHWING
ORC|NW|PLC1001|FIL1001||SC||^^^20260310090000+0100^^S||20260310082900+0100|CLERK^RIS||1234^REFERRER^SAM^^^DR
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|S||20260310082900+0100||||||Cough \T\ fever \S\ 3 days|||1234^REFERRER^SAM^^^DR||ACC1001|RP1|SPS1||||CT|||1^^^20260310090000+0100^^S`},
	{"status change", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310091500+0100||ORM^O01|ORM-1002|P|2.3|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
ORC|XO|PLC1001|FIL1001||IP||^^^20260310090000+0100^^S||20260310091500+0100
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|S|||||||||||||ACC1001|RP1|SPS1|||||CT|||1^^^20260310090000+0100^^S`},
	{"preliminary report", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310101500+0100||ORU^R01^ORU_R01|ORU-1003|P|2.5.1|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
ORC|RE|PLC1001|FIL1001||IP
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|||20260310090500+0100|||||||||1234^REFERRER^SAM^^^DR||ACC1001|RP1|SPS1||20260310101500+0100||CT|P|||||||5555&RESIDENT&RIA
OBX|1|TX|RPT^Report^L|1|PRELIMINARY: no acute findings.||||||P`},
	{"final report with escapes", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310113000+0100||ORU^R01^ORU_R01|ORU-1004|P|2.5.1|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
ORC|RE|PLC1001|FIL1001||CM
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|||20260310090500+0100|||||||||1234^REFERRER^SAM^^^DR||ACC1001|RP1|SPS1||20260310113000+0100||CT|F|||||||3333&RADIOLOGIST&PAT
OBX|1|TX|RPT^Report^L|1|FINDINGS: Lungs clear \T\ no effusion.\.br\Heart normal.||||||F
OBX|2|TX|RPT^Report^L|2|IMPRESSION: No acute abnormality.||||||F`},
	{"corrected report, HH flag", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310120000+0100||ORU^R01^ORU_R01|ORU-1005|P|2.5.1|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
ORC|RE|PLC1001|FIL1001||CM
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|||20260310090500+0100|||||||||1234^REFERRER^SAM^^^DR||ACC1001|RP1|SPS1||20260310120000+0100||CT|C|||||||3333&RADIOLOGIST&PAT
OBX|1|TX|RPT^Report^L|1|ADDENDUM: 4 mm nodule right upper lobe; pneumothorax on image 41.|||HH|||C`},
	{"second order", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310121000+0100||ORM^O01|ORM-1006|P|2.3
PID|1||MRN4711^^^NORTHWING^MR||MULLER^ZOE||19700101|F
ORC|NW|PLC1002|FIL1002||SC||^^^20260311090000+0100^^R
OBR|1|PLC1002|FIL1002|76700^US ABDOMEN COMPLETE^C4||||||||||||||ACC1002||||||US`},
	{"cancel", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310122000+0100||ORM^O01|ORM-1007|P|2.3
PID|1||MRN4711^^^NORTHWING^MR||MULLER^ZOE||19700101|F
ORC|CA|PLC1002|FIL1002||CA
OBR|1|PLC1002|FIL1002|76700^US ABDOMEN COMPLETE^C4||||||||||||||ACC1002||||||US`},
	// No OBR-18 and no placer number: only the filler number names the
	// order. The patient's authority has a space, as some sites' do.
	{"ORM without OBR-18, filler number only", `MSH|^~\&|RADRIS|STMARY|RADBRIDGE|IMAGING|20260310123000+0100||ORM^O01|ORM-1008|P|2.3
PID|1||MRN4711^^^ST MARY^MR||MULLER^ZOE||19700101|F
ORC|NW||FIL2001||SC||^^^20260312100000+0100^^A||20260310122900+0100
OBR|1||FIL2001|MRHEAD^MR HEAD W/O CONTRAST^L|||||||||Headache|||||||||||MR`},
	// PID-3 without an identifier.
	{"ORM without a patient identifier", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310124000+0100||ORM^O01|ORM-1011|P|2.3
PID|1||^^^NORTHWING^MR||DOE^JOHN
ORC|NW|PLC1004|FIL1004||SC
OBR|1|PLC1004|FIL1004|71045^XR CHEST 1 VIEW^C4||||||||||||||ACC1004||||||CR`},
	// Formatted text and coded observations; OBR-22 at day precision.
	{"ORU with FT and CE", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260311093000+0100||ORU^R01^ORU_R01|ORU-1009|P|2.5.1
PID|1||MRN4711^^^NORTHWING^MR||MULLER^ZOE||19700101|F
ORC|RE|PLC1002|FIL1002||CM
OBR|1|PLC1002|FIL1002|76700^US ABDOMEN COMPLETE^C4|||20260311090000+0100|||||||||||ACC1002||||20260311||US|F
OBX|1|FT|&GDT^Report^LN|1|\H\FINDINGS\N\: Liver normal.\.br\No free fluid.||||||F
OBX|2|CE|RID5^Impression^RADLEX|2|RID3874^normal^RADLEX||||||F`},
	// An IHE SWF OMI^O23: the accession number is IPC-1.
	{"OMI^O23 with IPC-1", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260311100000+0100||OMI^O23^OMI_O23|OMI-1010|P|2.5.1
PID|1||MRN4711^^^NORTHWING^MR||MULLER^ZOE||19700101|F
ORC|NW|PLC1003|FIL1003||SC|||||||1234^REFERRER^SAM^^^DR
TQ1|1||||||20260312080000+0100|||R
OBR|1|PLC1003|FIL1003|73721^MRI KNEE W/O CONTRAST^C4|||||||||||||||||||MR
IPC|ACC1003|RP1003|1.2.826.0.1.3680043.8.498.3|SPS1003|MR`},
}

const fhirStudyUID = "1.2.826.0.1.3680043.8.498.20"

// fhirCT returns CT instance n of the multi-series test study.
func fhirCT(n int) ingest.Instance {
	return ingest.Instance{
		SOPClassUID: ctImageClass, SOPInstanceUID: fmt.Sprintf("%s.1.%d", fhirStudyUID, n),
		StudyInstanceUID: fhirStudyUID, SeriesInstanceUID: fhirStudyUID + ".1",
		PatientID: "MRN4711", IssuerOfPatientID: "2.16.840.1.113883.3.999", PatientName: "MULLER^ZOE",
		AccessionNumber: "ACC1001", Modality: "CT", BodyPartExamined: "CHEST",
		StudyDescription: "CT CHEST W/O CONTRAST", SeriesDescription: "AXIAL 1.25",
		StudyDate: "20260310", StudyTime: "090512.25", ReferringPhysicianName: "REFERRER^SAM^^DR",
		SeriesNumber: 2, InstanceNumber: n,
	}
}

// fhirRunAll runs every scenario and returns the run.
func fhirRunAll(t *testing.T) *fhirRun {
	t.Helper()
	r := newFHIRRun(t, rules.Options{HL7PatientAuthority: "NORTHWING", QuietPeriod: time.Second, Zone: time.FixedZone("CET", 3600)})
	for _, m := range fhirRIS {
		if len(r.hl7(m.name, m.msg)) == 0 {
			t.Errorf("%s: no event", m.name)
		}
	}

	// A multi-series study (CT and its dose report) made available when
	// quiet.
	for _, i := range []int{2, 1, 3} {
		r.store("multi-series study", fhirCT(i))
	}
	sr := fhirCT(1)
	sr.SOPClassUID, sr.SOPInstanceUID, sr.SeriesInstanceUID = srDocumentClass, fhirStudyUID+".2.1", fhirStudyUID+".2"
	sr.Modality, sr.SeriesDescription, sr.SeriesNumber, sr.BodyPartExamined = "SR", "DOSE REPORT", 999, ""
	r.store("multi-series study", sr)
	r.quiet("multi-series study", fhirStudyUID)

	// No study time, a body part outside CID 4031, no patient id, an
	// issuer that is not an OID, no SOP class.
	odd := fhirCT(1)
	odd.StudyInstanceUID, odd.SeriesInstanceUID, odd.SOPInstanceUID = "1.2.3.30", "1.2.3.30.1", "1.2.3.30.1.1"
	odd.StudyTime, odd.BodyPartExamined, odd.Modality = "", "LEFT LITTLE TOE", "XC"
	odd.PatientID, odd.IssuerOfPatientID, odd.AccessionNumber, odd.ReferringPhysicianName = "", "", "", ""
	odd.SeriesNumber, odd.InstanceNumber, odd.SeriesDescription, odd.StudyDescription = 0, 0, "", ""
	r.store("odd study: no time, unknown body part, no patient", odd)
	r.quiet("odd study: no time, unknown body part, no patient", odd.StudyInstanceUID)
	local := fhirCT(1)
	local.StudyInstanceUID, local.SeriesInstanceUID, local.SOPInstanceUID = "1.2.3.31", "1.2.3.31.1", "1.2.3.31.1.1"
	local.IssuerOfPatientID, local.Modality, local.SOPClassUID = "ST MARY HOSPITAL", "", ""
	r.store("issuer not an OID, no modality", local)
	r.quiet("issuer not an OID, no modality", local.StudyInstanceUID)

	// An IAN listing instances never received, and one for a study never
	// stored.
	ian := fhirCT(1)
	ian.StudyInstanceUID, ian.SeriesInstanceUID = "1.2.3.32", "1.2.3.32.1"
	ian.SOPInstanceUID = "1.2.3.32.1.1"
	r.store("IAN listing missing instances", ian)
	n := ingest.IAN{SOPInstanceUID: "1.2.3.99.1", StudyInstanceUID: "1.2.3.32", Series: []ingest.IANSeries{{
		SeriesInstanceUID: "1.2.3.32.1", Instances: []ingest.IANInstance{
			{SOPClassUID: ctImageClass, SOPInstanceUID: "1.2.3.32.1.1", InstanceAvailability: "ONLINE", RetrieveAETitle: "PACS"},
			{SOPClassUID: ctImageClass, SOPInstanceUID: "1.2.3.32.1.2", InstanceAvailability: "ONLINE", RetrieveAETitle: "PACS"},
		}}}}
	r.apply("IAN listing missing instances", ingest.KindDICOMIAN, n, nil)
	n.SOPInstanceUID, n.StudyInstanceUID, n.Series[0].SeriesInstanceUID = "1.2.3.99.2", "1.2.3.33", "1.2.3.33.1"
	n.Series[0].Instances = n.Series[0].Instances[:1]
	n.Series[0].Instances[0].SOPInstanceUID = "1.2.3.33.1.1"
	r.apply("IAN of a study never stored", ingest.KindDICOMIAN, n, nil)

	// MPPS: in progress, one instance, completed.
	mpps := fhirCT(1)
	mpps.StudyInstanceUID, mpps.SeriesInstanceUID, mpps.SOPInstanceUID = "1.2.3.34", "1.2.3.34.1", "1.2.3.34.1.1"
	r.apply("MPPS", ingest.KindDICOMMPPS, ingest.MPPSUpdate{SOPInstanceUID: "1.2.3.98", Create: true, Status: ingest.MPPSInProgress,
		StudyInstanceUIDs: []string{"1.2.3.34"}, AccessionNumbers: []string{"ACC1001"}, PatientID: "MRN4711", Modality: "CT"}, nil)
	r.store("MPPS", mpps)
	r.apply("MPPS", ingest.KindDICOMMPPS, ingest.MPPSUpdate{SOPInstanceUID: "1.2.3.98", Status: ingest.MPPSCompleted,
		Series: []ingest.MPPSSeries{{SeriesInstanceUID: "1.2.3.34.1", SOPInstanceUIDs: []string{"1.2.3.34.1.1"}}}}, nil)

	// The viewer opens the study, with and without the viewer's identity.
	r.apply("viewed", ingest.KindViewed, ingest.Viewed{PatientID: "MRN4711", StudyInstanceUID: fhirStudyUID,
		AccessionNumber: "ACC1001", ViewerID: "u-1234", ViewerName: "Dr Pat Radiologist"}, nil)
	r.apply("viewed anonymously", ingest.KindViewed, ingest.Viewed{PatientID: "MRN4711", StudyInstanceUID: "1.2.3.30"}, nil)
	r.apply("viewed by an authenticated subject", ingest.KindViewed, ingest.Viewed{PatientID: "MRN4711", StudyInstanceUID: fhirStudyUID,
		ViewerID: "u-1234", ViewerName: "Dr Pat Radiologist", Agent: "ward-tablet"}, nil)
	return r
}

// TestFHIRResourcesValid checks every resource the rules emit with
// google/fhir's R4 validator, and the shape of the patient reference.
func TestFHIRResourcesValid(t *testing.T) {
	r := fhirRunAll(t)
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, e := range r.events {
		ev := e.ev
		if ev.Resource == nil {
			t.Errorf("%s: %v event without resource", e.name, ev.Type)
			continue
		}
		res := ev.Resource.AsMap()
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		types[ev.ResourceType]++
		if _, err := u.Unmarshal(b); err != nil {
			t.Errorf("%s: %v %s is not valid FHIR R4: %v\n%s", e.name, ev.Type, ev.ResourceType, err, b)
			continue
		}
		if res["resourceType"] != ev.ResourceType || res["id"] != ev.ResourceId {
			t.Errorf("%s: event names %s/%s, resource is %v/%v", e.name, ev.ResourceType, ev.ResourceId, res["resourceType"], res["id"])
		}
		checkStudyNoEmpty(t, e.name+": "+ev.ResourceType, res)
		checkURIs(t, e.name+": "+ev.ResourceType, res)
		if s, ok := res["subject"]; ok {
			checkSubject(t, e.name+": "+ev.ResourceType+".subject", s, ev.PatientId)
		}
	}
	want := map[string]int{"ServiceRequest": 7, "DiagnosticReport": 4, "ImagingStudy": 14, "AuditEvent": 3}
	if diff := cmp.Diff(types, want); diff != "" {
		t.Errorf("resources emitted (-got +want):\n%s", diff)
	}
}

var (
	nestedExtension = regexp.MustCompile(`extension\[\d+\]\.extension\[\d+\]$`)
	simpleName      = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*$`)
)

// checkURIs checks what the validator does not: every system and url is
// an absolute URI, and extension urls are URLs, not URNs (FHIR R4 2.21.0.1).
func checkURIs(t *testing.T, path string, v any) {
	t.Helper()
	switch v := v.(type) {
	case []any:
		for i, e := range v {
			checkURIs(t, fmt.Sprintf("%s[%d]", path, i), e)
		}
	case map[string]any:
		for k, e := range v {
			s, ok := e.(string)
			switch {
			case !ok:
				checkURIs(t, path+"."+k, e)
			case k == "url" && nestedExtension.MatchString(path) && simpleName.MatchString(s):
				// A complex extension's parts are named relative to it
				// (FHIR R4 2.21.0.1: "the url is a simple name").
			case k == "system" || k == "url":
				u, err := url.Parse(s)
				if err != nil || !u.IsAbs() || strings.ContainsAny(s, " \t\r\n") {
					t.Errorf("%s.%s = %q is not an absolute URI", path, k, s)
				} else if k == "url" && u.Scheme != "http" && u.Scheme != "https" {
					t.Errorf("%s.%s = %q: an extension url SHALL be a URL", path, k, s)
				}
			}
		}
	}
}

// checkSubject checks the patient reference: by identifier, whose value is
// the event's patient id and whose system, when present, is an absolute
// URI; or, without a patient id, a display only.
func checkSubject(t *testing.T, where string, v any, patientID string) {
	t.Helper()
	s, _ := v.(map[string]any)
	if patientID == "" {
		if _, ok := s["identifier"]; ok || s["display"] == nil {
			t.Errorf("%s: %v; want a display only without a patient id", where, v)
		}
		return
	}
	if ty, ok := s["type"]; ok && ty != "Patient" {
		t.Errorf("%s: type %v, want Patient", where, ty)
	}
	id, _ := s["identifier"].(map[string]any)
	value, _ := id["value"].(string)
	// The value is the patient id, or its identifier when the patient id
	// is qualified by another issuer (id^issuer).
	if id == nil || value == "" || value != patientID && !strings.HasPrefix(patientID, value+"^") {
		t.Errorf("%s: %v; want an identifier with value %q", where, v, patientID)
		return
	}
	if _, ok := id["system"]; !ok {
		t.Errorf("%s: %v; want an identifier with a system", where, v)
	}
	if sys, ok := id["system"].(string); ok {
		if u, err := url.Parse(sys); err != nil || !u.IsAbs() || strings.ContainsAny(sys, " \t") {
			t.Errorf("%s: system %q is not an absolute URI", where, sys)
		}
	}
}

// TestFHIRGolden compares one resource of each type with
// testdata/fhir/<type>.json.
func TestFHIRGolden(t *testing.T) {
	r := fhirRunAll(t)
	pick := map[string]string{
		"ServiceRequest":   "new STAT order, non-ASCII name",
		"DiagnosticReport": "final report with escapes",
		"ImagingStudy":     "multi-series study",
		"AuditEvent":       "viewed",
	}
	got := map[string][]byte{}
	for _, e := range r.events {
		if pick[e.ev.ResourceType] != e.name {
			continue
		}
		b, err := json.MarshalIndent(e.ev.Resource.AsMap(), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got[e.ev.ResourceType] = append(b, '\n') // the last one: the study once available
	}
	for typ := range pick {
		path := filepath.Join("testdata", "fhir", strings.ToLower(typ)+".json")
		if got[typ] == nil {
			t.Errorf("%s: no resource from %q", typ, pick[typ])
			continue
		}
		golden(t, path, got[typ], typ)
	}
}

// TestFHIRCriticalReport: a report with a critical OBX carries it in the
// resource (contained Observation with the v3 interpretation, referenced
// from result), compared with testdata/fhir/diagnosticreport-critical.json;
// a report without one carries none.
func TestFHIRCriticalReport(t *testing.T) {
	r := fhirRunAll(t)
	var got []byte
	for _, e := range r.events {
		if e.ev.ResourceType != "DiagnosticReport" {
			continue
		}
		res := e.ev.Resource.AsMap()
		if crit := readmodel.CriticalReport(res); crit != (e.ev.Priority == rbv1.Priority_PRIORITY_CRITICAL) {
			t.Errorf("%s: CriticalReport %v, event priority %v", e.name, crit, e.ev.Priority)
		}
		if e.name == "corrected report, HH flag" {
			got, _ = json.MarshalIndent(res, "", "  ")
			got = append(got, '\n')
		}
	}
	golden(t, filepath.Join("testdata", "fhir", "diagnosticreport-critical.json"), got, "critical DiagnosticReport")
}
