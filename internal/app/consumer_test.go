package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/scu"
	"radbridge/internal/testkit"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/store"
)

// nextEvents reads events (heartbeats skipped) from sub until one of type
// until arrives, and returns them all.
func nextEvents(t *testing.T, sub rbv1.EventService_SubscribeClient, until rbv1.EventType) []*rbv1.Event {
	t.Helper()
	var got []*rbv1.Event
	for {
		ev, err := sub.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", types(got), err)
		}
		if ev.Heartbeat {
			continue
		}
		got = append(got, ev)
		if ev.Type == until {
			return got
		}
	}
}

func types(evs []*rbv1.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type.String()+" "+e.ResourceType)
	}
	return out
}

func countType(evs []*rbv1.Event, typ rbv1.EventType) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// storeStudy writes a study with study.py and sends it with storescu.
func storeStudy(t *testing.T, d interface{ DICOMAddr() string }, uid, pid, acc string, instances int) {
	t.Helper()
	dir := t.TempDir()
	py := testkit.Peer(t, "/usr/bin/python3")
	if out, err := exec.Command(py, filepath.Join("..", "..", "scripts", "dicom", "study.py"), dir, uid, pid, acc, "1", fmt.Sprint(instances)).CombinedOutput(); err != nil {
		t.Fatalf("study.py: %v\n%s", err, out)
	}
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, dir); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
}

// TestEventsAConsumerCanActOn drives the joins with the real
// peers and checks what a subscriber sees: a final report announced once
// (its study arriving later links it with IMAGING_REPORT_UPDATED, not a
// second IMAGING_REPORT_READY), an IAN saying the instances went OFFLINE
// updates the study (our SCU), an order cancelled with ORC-1 SC and ORC-5
// CA is ORDER_CANCELLED and stays revoked when its study arrives (whose
// event says so), and REST lists are present when empty.
func TestEventsAConsumerCanActOn(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	testkit.Peer(t, "storescu")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING", "--study-quiet-period", "1s")
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"MRN4711"}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(name, msg string) {
		t.Helper()
		if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, name, msg)); ack.Segment("MSA").Field(1) != "AA" {
			t.Fatalf("%s: %q", name, ack.Bytes())
		}
	}

	// The final report, then its study.
	send("final", strings.ReplaceAll(risMessages[3].msg, "{{ctl}}", "C-F1"))
	first := nextEvents(t, sub, rbv1.EventType_IMAGING_REPORT_READY)
	uid := studyUID + ".81"
	storeStudy(t, d, uid, "MRN4711", "ACC1001", 2)
	later := nextEvents(t, sub, rbv1.EventType_IMAGING_STUDY_AVAILABLE)
	if n := countType(later, rbv1.EventType_IMAGING_REPORT_READY); n != 0 {
		t.Errorf("the study after its report: %d more IMAGING_REPORT_READY (%v); the report was announced once", n, types(later))
	}
	var linked *rbv1.Event
	for _, e := range later {
		if e.Type == rbv1.EventType_IMAGING_REPORT_UPDATED {
			if linked != nil {
				t.Errorf("report linked twice: %v", types(later))
			}
			linked = e
		}
		if e.Type == rbv1.EventType_IMAGING_STUDY_UPDATED {
			t.Errorf("IMAGING_STUDY_UPDATED before the study was available: %v", types(later))
		}
	}
	if linked == nil || linked.ResourceId != first[0].ResourceId ||
		fmt.Sprint(linked.Resource.AsMap()["imagingStudy"]) != "[map[reference:ImagingStudy/"+uid+"]]" {
		t.Fatalf("report link: %v; want IMAGING_REPORT_UPDATED of %s pointing at the study (events %v)", linked, first[0].ResourceId, types(later))
	}
	code, raw := testkit.Get(t, "http://"+d.HTTPAddr()+"/v1/events?type=imaging.report.updated")
	if code != 200 || !strings.Contains(raw, `"type":"IMAGING_REPORT_UPDATED"`) {
		t.Errorf("GET /v1/events?type=imaging.report.updated: %d %s", code, raw)
	}

	// The archive moves the study offline: an IAN from our SCU.
	c, err := scu.Dial(ctx, d.DICOMAddr(), scu.Config{CallingAE: "PACS", Contexts: []scu.Context{{AbstractSyntax: scu.IANSOPClass, TransferSyntaxes: []string{dataset.ImplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatal(err)
	}
	ian := scu.IAN{StudyInstanceUID: uid, Series: []scu.IANSeries{{SeriesInstanceUID: uid + ".1", Instances: []scu.IANInstance{
		{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: uid + ".1.1", InstanceAvailability: "OFFLINE"},
		{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: uid + ".1.2", InstanceAvailability: "OFFLINE"},
	}}}}
	if st, err := c.NCreateIAN(ctx, ian); err != nil || st != 0 {
		t.Fatalf("IAN: status %v, %v", st, err)
	}
	c.Close()
	upd := nextEvents(t, sub, rbv1.EventType_IMAGING_STUDY_UPDATED)
	ev := upd[len(upd)-1]
	if ev.Severity != rbv1.Severity_SEVERITY_WARNING || !strings.Contains(ev.Message, "2 offline") {
		t.Errorf("IAN OFFLINE: %v %q", ev.Severity, ev.Message)
	}
	if s := fmt.Sprint(ev.Resource.AsMap()["series"]); strings.Count(s, rules.InstanceAvailabilityExtension) != 2 || !strings.Contains(s, "valueCode:OFFLINE") {
		t.Errorf("IAN OFFLINE: series %s; want the availability extension on both instances", s)
	}

	// A second order, cancelled with ORC-1 SC and ORC-5 CA, then its study.
	send("order2", strings.ReplaceAll(risMessages[5].msg, "{{ctl}}", "C-O2"))
	send("cancel2", strings.NewReplacer("{{ctl}}", "C-X2", "ORC|CA|PLC1002|FIL1002||CA", "ORC|SC|PLC1002|FIL1002||CA").Replace(risMessages[6].msg))
	cx := nextEvents(t, sub, rbv1.EventType_ORDER_CANCELLED)
	if got := cx[len(cx)-1]; got.Source.GetMessageControlId() != "C-X2" || got.Resource.AsMap()["status"] != "revoked" {
		t.Errorf("SC with ORC-5 CA: %v", types(cx))
	}
	uid2 := studyUID + ".82"
	storeStudy(t, d, uid2, "MRN4711", "ACC1002", 1)
	av := nextEvents(t, sub, rbv1.EventType_IMAGING_STUDY_AVAILABLE)
	if e := av[len(av)-1]; e.Severity != rbv1.Severity_SEVERITY_WARNING || !strings.Contains(e.Message, "its order ACC1002 was cancelled") ||
		e.Resource.AsMap()["status"] != "available" {
		t.Errorf("study of a cancelled order: %v %q status %v", e.Severity, e.Message, e.Resource.AsMap()["status"])
	}
	if n := countType(av, rbv1.EventType_ORDER_UPDATED); n != 0 {
		t.Errorf("the cancelled order changed with its study: %v", types(av))
	}
	_, snap := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/patients/MRN4711/imaging")
	for _, o := range snap["orders"].([]any) {
		o := o.(map[string]any)
		if o["id"] == rules.ServiceRequestID("MRN4711", "ACC1002") && o["status"] != "revoked" {
			t.Errorf("cancelled order in the snapshot: status %v", o["status"])
		}
	}

	// Empty lists are present.
	code, raw = testkit.Get(t, "http://"+d.HTTPAddr()+"/v1/events?patient_id=NOBODY")
	if code != 200 || !strings.Contains(raw, `"events":[]`) {
		t.Errorf("GET /v1/events for nobody: %d %s; want \"events\":[]", code, raw)
	}
	send("lone order", strings.NewReplacer("{{ctl}}", "C-O3", "MRN4711", "MRN9001").Replace(risMessages[5].msg))
	if !testkit.Poll(5*time.Second, func() bool {
		code, raw = testkit.Get(t, "http://"+d.HTTPAddr()+"/v1/patients/MRN9001/imaging")
		return code == 200
	}) {
		t.Fatalf("snapshot of MRN9001: %d %s", code, raw)
	}
	for _, want := range []string{`"studies":[]`, `"reports":[]`, `"body_region_counts":{}`, `"study_report_status":{}`} {
		if !strings.Contains(raw, want) {
			t.Errorf("snapshot with one order lacks %s: %s", want, raw)
		}
	}
	if strings.Contains(raw, `"next_page_token"`) {
		t.Errorf("empty scalars are emitted: %s", raw)
	}
}

// TestOneAccessionTwoPatientsOverMLLP: the RIS (mllp_send)
// orders and reports one accession number for two patients (two sites).
// Each patient's ServiceRequest and DiagnosticReport get ids of their own
// (a FHIR store upserting by id keeps both), the second order is a new
// order of its patient, no event names the other patient's order numbers,
// and each report is based on its own patient's order. A read model left
// by an older radbridge (the order under its old id, the bare accession)
// holds only the new ids after `radbridge replay`.
func TestOneAccessionTwoPatientsOverMLLP(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	dir := filepath.Join(t.TempDir(), "data")
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), "--mllp-addr", "127.0.0.1:0", "--hl7-patient-authority", "NORTHWING")
	base := "http://" + d.HTTPAddr()
	other := strings.NewReplacer("MRN4711", "MRN5000", "PLC1001", "PLCB", "FIL1001", "FILB", "PLC1002", "PLCB", "FIL1002", "FILB")
	msgs := []string{
		strings.NewReplacer("ACC1002", "ACC7000", "{{ctl}}", "S-O1").Replace(risMessages[5].msg),
		other.Replace(strings.NewReplacer("ACC1002", "ACC7000", "{{ctl}}", "S-O2").Replace(risMessages[5].msg)),
		strings.NewReplacer("ACC1001", "ACC7000", "{{ctl}}", "S-F1").Replace(risMessages[3].msg),
		other.Replace(strings.NewReplacer("ACC1001", "ACC7000", "{{ctl}}", "S-F2").Replace(risMessages[3].msg)),
	}
	for i, m := range msgs {
		if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, fmt.Sprint("m", i), m)); ack.Segment("MSA").Field(1) != "AA" {
			t.Fatalf("message %d: %q", i, ack.Bytes())
		}
	}
	var evs []any
	if !testkit.Poll(15*time.Second, func() bool {
		_, list := testkit.GetJSON(t, base+"/v1/events?page_size=100")
		evs, _ = list["events"].([]any)
		return len(evs) >= 6 // 2 orders, 2 reports, 2 orders completed
	}) {
		t.Fatalf("%d events, want 6: %v", len(evs), evs)
	}
	owner := map[string]string{}
	for _, e := range evs {
		e := e.(map[string]any)
		pid, rid, msg := e["patient_id"].(string), e["resource_type"].(string)+"/"+e["resource_id"].(string), e["message"].(string)
		if p, ok := owner[rid]; ok && p != pid {
			t.Errorf("%s is the id of %s's and %s's resource", rid, p, pid)
		}
		owner[rid] = pid
		if wrong := map[string]string{"MRN4711": "PLCB", "MRN5000": "PLC1002"}[pid]; strings.Contains(msg, wrong) || strings.Contains(fmt.Sprint(e["resource"]), wrong) {
			t.Errorf("event about %s shows the other patient's order %s: %q", pid, wrong, msg)
		}
		if e["patient_id"] == "MRN5000" && e["resource_type"] == "ServiceRequest" && e["type"] != "ORDER_PLACED" && e["type"] != "ORDER_UPDATED" {
			t.Errorf("MRN5000 order event %v", e["type"])
		}
	}
	if e := evs[1].(map[string]any); e["type"] != "ORDER_PLACED" || e["resource_id"] != rules.ServiceRequestID("MRN5000", "ACC7000") {
		t.Errorf("second patient's order: %v %v; want ORDER_PLACED %s", e["type"], e["resource_id"], rules.ServiceRequestID("MRN5000", "ACC7000"))
	}
	check := func(when string) {
		t.Helper()
		for _, pid := range []string{"MRN4711", "MRN5000"} {
			_, snap := testkit.GetJSON(t, base+"/v1/patients/"+pid+"/imaging")
			orders, _ := snap["orders"].([]any)
			reports, _ := snap["reports"].([]any)
			srID, drID := rules.ServiceRequestID(pid, "ACC7000"), rules.DiagnosticReportID(pid, "ACC7000")
			if len(orders) != 1 || len(reports) != 1 {
				t.Errorf("%s: %s has %d orders and %d reports, want 1 and 1: %v", when, pid, len(orders), len(reports), snap)
				continue
			}
			o, r := orders[0].(map[string]any), reports[0].(map[string]any)
			if o["id"] != srID || r["id"] != drID || fmt.Sprint(r["basedOn"]) != "[map[reference:ServiceRequest/"+srID+"]]" ||
				!strings.Contains(fmt.Sprint(o["subject"]), pid) {
				t.Errorf("%s: %s order %v report %v basedOn %v; want %s, %s", when, pid, o["id"], r["id"], r["basedOn"], srID, drID)
			}
		}
	}
	check("live")
	stop()

	// What an older radbridge left: MRN4711's order under its old id too.
	st, err := store.Open(context.Background(), store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.Patients().Patient(context.Background(), "MRN4711")
	if err != nil || p == nil {
		t.Fatalf("read model: %v %v", p, err)
	}
	p.Orders["ACC7000"] = p.Orders[rules.ServiceRequestID("MRN4711", "ACC7000")]
	if err := st.Patients().Overwrite().PutPatient(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if p, err := st.Patients().Patient(context.Background(), "MRN4711"); err != nil || len(p.Orders) != 2 {
		t.Fatalf("the old-id order was not written: %v %v", p, err)
	}
	st.Close()
	if code, out, errOut := runApp(t, "replay", "--data-dir", dir, "--log-level", "error", "--hl7-patient-authority", "NORTHWING"); code != 0 {
		t.Fatalf("replay: %d\n%s%s", code, out, errOut)
	}
	d, _ = runDaemon(t, dir, slog.New(slog.DiscardHandler), "--hl7-patient-authority", "NORTHWING")
	base = "http://" + d.HTTPAddr()
	check("after replay")
}
