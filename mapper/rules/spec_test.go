package rules_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/ingest"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// The tests in this file read like the HL7 v2 and DICOM specifications: each
// feeds observations to the rules' entry point (rules.Map) and checks the
// events that the last one derives, with the FHIR resources they carry.

const (
	specStudy  = "1.2.826.0.1.3680043.8.498.1"
	specSeries = specStudy + ".1"
	ctImage    = "1.2.840.10008.5.1.4.1.1.2" // CT Image Storage
)

// specObservation is one observation: an HL7 message, a DICOM instance
// (C-STORE), an IAN, an MPPS N-CREATE/N-SET, or the end of a study's quiet
// period (the timer the rules scheduled, firing).
type specObservation struct {
	kind  string
	body  any
	quiet string // Study Instance UID whose quiet period ends
}

// hl7Msg is an HL7 v2 message written one segment a line.
func hl7Msg(segments ...string) specObservation {
	raw := strings.Join(segments, "\r") + "\r"
	return specObservation{kind: ingest.KindHL7, body: ingest.HL7Body{Raw: []byte(raw)}}
}

func stored(in ingest.Instance) specObservation {
	return specObservation{kind: ingest.KindDICOMInstance, body: in}
}

func ian(n ingest.IAN) specObservation {
	return specObservation{kind: ingest.KindDICOMIAN, body: n}
}

func mpps(u ingest.MPPSUpdate) specObservation {
	return specObservation{kind: ingest.KindDICOMMPPS, body: u}
}

func quietPeriodEnds(uid string) specObservation { return specObservation{quiet: uid} }

const (
	msh = `MSH|^~\&|RIS|HOSP|RADBRIDGE|IMG|20260310083000+0000||`
	pid = `PID|1||MRN1^^^HOSP^MR||DOE^JANE||19700101|F`
)

// order is an ORM^O01 with ORC-1 control and ORC-5 status for accession
// ACC1.
func order(control, status string) specObservation {
	return hl7Msg(msh+`ORM^O01|C-`+control+status+`|P|2.3`, pid,
		`ORC|`+control+`|P1|F1||`+status,
		`OBR|1|P1|F1|71250^CT CHEST^C4||||||||||||||ACC1||||||CT`)
}

// result is an ORU^R01 for accession ACC1 with OBR-25 resultStatus and an
// OBX whose OBX-8 abnormal flag is flag.
func result(resultStatus, flag string) specObservation {
	return hl7Msg(msh+`ORU^R01|R-`+resultStatus+flag+`|P|2.5.1`, pid,
		`ORC|RE|P1|F1||CM`,
		`OBR|1|P1|F1|71250^CT CHEST^C4||||||||||||||ACC1||||20260310100000+0000||CT|`+resultStatus,
		`OBX|1|TX|RPT^Report^L|1|No acute findings.|||`+flag+`|||`+resultStatus)
}

// ct is CT instance n of the study, accession ACC1, patient MRN1.
func ct(n int) ingest.Instance {
	return ingest.Instance{
		SOPClassUID: ctImage, SOPInstanceUID: fmt.Sprintf("%s.%d", specSeries, n),
		StudyInstanceUID: specStudy, SeriesInstanceUID: specSeries,
		TransferSyntaxUID: "1.2.840.10008.1.2.1", PatientID: "MRN1", PatientName: "DOE^JANE",
		AccessionNumber: "ACC1", Modality: "CT", StudyDate: "20260310", StudyTime: "090000",
		SeriesNumber: 1, InstanceNumber: n, Size: 1000,
	}
}

// ianOf is an IAN listing instances ONLINE.
func ianOf(ins ...ingest.Instance) ingest.IAN {
	n := ingest.IAN{SOPInstanceUID: "1.2.826.0.1.3680043.8.498.9", StudyInstanceUID: specStudy}
	s := ingest.IANSeries{SeriesInstanceUID: specSeries}
	for _, in := range ins {
		s.Instances = append(s.Instances, ingest.IANInstance{SOPClassUID: in.SOPClassUID, SOPInstanceUID: in.SOPInstanceUID, InstanceAvailability: "ONLINE", RetrieveAETitle: "PACS"})
	}
	n.Series = []ingest.IANSeries{s}
	return n
}

const mppsUID = "1.2.826.0.1.3680043.8.498.7"

// mppsCreated is an MPPS N-CREATE, IN PROGRESS, for the study.
func mppsCreated() ingest.MPPSUpdate {
	return ingest.MPPSUpdate{SOPInstanceUID: mppsUID, Create: true, Status: ingest.MPPSInProgress,
		StudyInstanceUIDs: []string{specStudy}, AccessionNumbers: []string{"ACC1"}, PatientID: "MRN1", Modality: "CT"}
}

// mppsCompleted is an MPPS N-SET COMPLETED naming instances as performed.
func mppsCompleted(ins ...ingest.Instance) ingest.MPPSUpdate {
	s := ingest.MPPSSeries{SeriesInstanceUID: specSeries}
	for _, in := range ins {
		s.SOPInstanceUIDs = append(s.SOPInstanceUIDs, in.SOPInstanceUID)
	}
	return ingest.MPPSUpdate{SOPInstanceUID: mppsUID, Status: ingest.MPPSCompleted, Series: []ingest.MPPSSeries{s}}
}

// specRun feeds observations to rules.Map, as the engine would.
type specRun struct {
	t      *testing.T
	byKind map[string]rules.Rule
	st     *rules.State
	seq    uint64
	now    time.Time
}

func newSpecRun(t *testing.T) *specRun {
	byKind := rules.New(rules.Options{HL7PatientAuthority: "HOSP", DICOMPatientIssuer: "HOSP", QuietPeriod: 10 * time.Second, Zone: time.UTC})
	byKind[ingest.KindViewed] = rules.Viewed
	return &specRun{t: t, byKind: byKind, st: rules.NewState(), now: time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)}
}

// feed maps o and returns its events, or the rules' error.
func (r *specRun) feed(o specObservation) ([]*rbv1.Event, error) {
	r.t.Helper()
	r.seq++
	r.now = r.now.Add(time.Second)
	var obs ingest.Observation
	if o.quiet != "" {
		tm := r.st.Timers["quiet:"+o.quiet]
		if tm == nil {
			r.t.Fatalf("no quiet period running for study %s", o.quiet)
		}
		var err error
		if obs, err = ingest.NewTimer(tm, tm.At); err != nil {
			r.t.Fatal(err)
		}
	} else {
		b, err := json.Marshal(o.body)
		if err != nil {
			r.t.Fatal(err)
		}
		obs = ingest.Observation{Kind: o.kind, Key: fmt.Sprintf("%s:%d", o.kind, r.seq), Time: r.now, Body: b}
	}
	return rules.Map(r.byKind, r.st, ingest.Record{Seq: r.seq, Observation: obs}, map[string]bool{})
}

// specEvent is what a test checks of an event: its type, priority, the
// resource it carries and that resource's status.
type specEvent struct {
	Type     rbv1.EventType
	Priority rbv1.Priority
	Resource string // resource type/id
	Status   string
}

// summarize returns what the tests check of evs. A priority left
// unspecified by the rules is routine (the engine stamps it).
func summarize(evs []*rbv1.Event) []specEvent {
	var out []specEvent
	for _, ev := range evs {
		prio := ev.Priority
		if prio == rbv1.Priority_PRIORITY_UNSPECIFIED {
			prio = rbv1.Priority_PRIORITY_ROUTINE
		}
		out = append(out, specEvent{
			Type: ev.Type, Priority: prio, Resource: ev.ResourceType + "/" + ev.ResourceId,
			Status: ev.GetResource().GetFields()["status"].GetStringValue(),
		})
	}
	return out
}

var (
	orderRef  = "ServiceRequest/" + rules.ServiceRequestID("MRN1", "ACC1")
	reportRef = "DiagnosticReport/" + rules.DiagnosticReportID("MRN1", "ACC1")
	studyRef  = "ImagingStudy/" + rules.StudyResourceID(specStudy)
)

func TestHL7Orders(t *testing.T) {
	runSpec(t, []specCase{
		{"ORM^O01 ORC-1 NW places an order", nil, order("NW", "SC"),
			[]specEvent{{rbv1.EventType_ORDER_PLACED, rbv1.Priority_PRIORITY_ROUTINE, orderRef, "active"}}},
		{"ORC-1 CA cancels the order", []specObservation{order("NW", "SC")}, order("CA", "CA"),
			[]specEvent{{rbv1.EventType_ORDER_CANCELLED, rbv1.Priority_PRIORITY_ROUTINE, orderRef, "revoked"}}},
		{"ORC-1 XO with ORC-5 HD puts the order on hold", []specObservation{order("NW", "SC")}, order("XO", "HD"),
			[]specEvent{{rbv1.EventType_ORDER_UPDATED, rbv1.Priority_PRIORITY_ROUTINE, orderRef, "on-hold"}}},
		{"ORC-5 CM completes the order", []specObservation{order("NW", "SC")}, order("SC", "CM"),
			[]specEvent{{rbv1.EventType_ORDER_UPDATED, rbv1.Priority_PRIORITY_ROUTINE, orderRef, "completed"}}},
	})
}

func TestHL7Results(t *testing.T) {
	runSpec(t, []specCase{
		{"ORU^R01 OBR-25 P is a preliminary result", nil, result("P", ""),
			[]specEvent{{rbv1.EventType_RESULT_RECEIVED, rbv1.Priority_PRIORITY_ROUTINE, reportRef, "preliminary"}}},
		{"OBR-25 F is a final report", nil, result("F", ""),
			[]specEvent{{rbv1.EventType_IMAGING_REPORT_READY, rbv1.Priority_PRIORITY_ROUTINE, reportRef, "final"}}},
		{"OBR-25 C is a corrected report", []specObservation{result("F", "")}, result("C", ""),
			[]specEvent{{rbv1.EventType_IMAGING_REPORT_READY, rbv1.Priority_PRIORITY_ROUTINE, reportRef, "corrected"}}},
		{"OBR-25 X cancels the result", nil, result("X", ""),
			[]specEvent{{rbv1.EventType_RESULT_RECEIVED, rbv1.Priority_PRIORITY_ROUTINE, reportRef, "cancelled"}}},
		{"OBX-8 HH makes the report critical", nil, result("F", "HH"),
			[]specEvent{{rbv1.EventType_IMAGING_REPORT_READY, rbv1.Priority_PRIORITY_CRITICAL, reportRef, "final"}}},
		{"a final report completes its order (same accession number)", []specObservation{order("NW", "SC")}, result("F", ""),
			[]specEvent{
				{rbv1.EventType_IMAGING_REPORT_READY, rbv1.Priority_PRIORITY_ROUTINE, reportRef, "final"},
				{rbv1.EventType_ORDER_UPDATED, rbv1.Priority_PRIORITY_ROUTINE, orderRef, "completed"},
			}},
	})
}

func TestDICOMStudies(t *testing.T) {
	runSpec(t, []specCase{
		{"a C-STORE of a new study reports its progress", nil, stored(ct(1)),
			[]specEvent{{rbv1.EventType_IMAGING_STUDY_PROGRESS, rbv1.Priority_PRIORITY_ROUTINE, studyRef, "registered"}}},
		{"the end of the quiet period makes the study available", []specObservation{stored(ct(1)), stored(ct(2))}, quietPeriodEnds(specStudy),
			[]specEvent{{rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.Priority_PRIORITY_ROUTINE, studyRef, "available"}}},
		{"IAN completes a study: the archive holds the instances it lists", []specObservation{stored(ct(1))}, ian(ianOf(ct(1), ct(2))),
			[]specEvent{{rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.Priority_PRIORITY_ROUTINE, studyRef, "available"}}},
		{"MPPS COMPLETED completes a study whose performed instances are stored", []specObservation{mpps(mppsCreated()), stored(ct(1))}, mpps(mppsCompleted(ct(1))),
			[]specEvent{{rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.Priority_PRIORITY_ROUTINE, studyRef, "available"}}},
		{"MPPS COMPLETED waits for performed instances not yet stored", []specObservation{mpps(mppsCreated()), stored(ct(1))}, mpps(mppsCompleted(ct(1), ct(2))),
			nil},
		{"after MPPS COMPLETED the last performed instance completes the study", []specObservation{mpps(mppsCreated()), stored(ct(1)), mpps(mppsCompleted(ct(1), ct(2)))}, stored(ct(2)),
			[]specEvent{{rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.Priority_PRIORITY_ROUTINE, studyRef, "available"}}},
		{"a study joins the order of its accession number", []specObservation{order("NW", "SC"), stored(ct(1))}, quietPeriodEnds(specStudy),
			[]specEvent{
				{rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.Priority_PRIORITY_ROUTINE, studyRef, "available"},
				{rbv1.EventType_ORDER_UPDATED, rbv1.Priority_PRIORITY_ROUTINE, orderRef, "completed"},
			}},
	})
}

// specCase: given observations already mapped, when one more is mapped,
// it derives the events want.
type specCase struct {
	name  string
	given []specObservation
	when  specObservation
	want  []specEvent
}

// runSpec runs each case on a fresh state.
func runSpec(t *testing.T, cases []specCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newSpecRun(t)
			for i, o := range tc.given {
				if _, err := r.feed(o); err != nil {
					t.Fatalf("given %d: %v", i, err)
				}
			}
			evs, err := r.feed(tc.when)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(summarize(evs), tc.want); diff != "" {
				t.Errorf("events (-got +want):\n%s", diff)
			}
		})
	}
}

// TestSpecResources checks the FHIR resources behind the events: the
// ServiceRequest of an order, the DiagnosticReport of a critical result
// (an Observation interpreted HH), and a study joined to its order.
func TestSpecResources(t *testing.T) {
	r := newSpecRun(t)
	evs, err := r.feed(order("NW", "SC"))
	if err != nil {
		t.Fatal(err)
	}
	sr := evs[0].GetResource().AsMap()
	if sr["resourceType"] != "ServiceRequest" || sr["intent"] != "order" {
		t.Errorf("order: %v", sr)
	}
	evs, err = r.feed(result("F", "HH"))
	if err != nil {
		t.Fatal(err)
	}
	if dr := evs[0].GetResource().AsMap(); !readmodel.CriticalReport(dr) {
		t.Errorf("a report with OBX-8 HH is not critical: %v", dr)
	}
	if _, err := r.feed(stored(ct(1))); err != nil {
		t.Fatal(err)
	}
	evs, err = r.feed(quietPeriodEnds(specStudy))
	if err != nil {
		t.Fatal(err)
	}
	study := evs[0].GetResource().AsMap()
	basedOn, _ := study["basedOn"].([]any)
	if len(basedOn) != 1 || basedOn[0].(map[string]any)["reference"] != orderRef {
		t.Errorf("study basedOn %v, want %s", study["basedOn"], orderRef)
	}
	if p := r.st.Patients["MRN1"]; p == nil || p.Studies[specStudy] == nil || p.Orders[rules.ServiceRequestID("MRN1", "ACC1")] == nil || p.Reports[rules.DiagnosticReportID("MRN1", "ACC1")] == nil {
		t.Errorf("the patient's read model lacks the study, order or report: %v", p)
	}
}

// TestUnsupportedMessage: a message type the rules do not map is an error
// (the engine dead-letters the record) and derives no event.
func TestUnsupportedMessage(t *testing.T) {
	r := newSpecRun(t)
	evs, err := r.feed(hl7Msg(msh+`ADT^A01|A1|P|2.3`, pid))
	if err == nil || len(evs) != 0 {
		t.Errorf("ADT^A01: events %v, error %v; want none and an error", evs, err)
	}
}
