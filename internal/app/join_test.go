package app_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
	"radbridge/mapper/rules"
)

// TestJoinAcrossProtocols: images, reports and orders arrive from the real
// tools in an unhelpful order (images and the final report before their
// order; a second patient's order before its images; a study with no order
// at all): the patient snapshots show each study joined to its order and
// report, with report status and body-region counts, and the event stream
// shows the joins as updates.
func TestJoinAcrossProtocols(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING", "--study-quiet-period", "1s")
	host, port := hostPort(d.DICOMAddr())
	send := func(name, msg string) {
		t.Helper()
		if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, name, msg)); ack.Segment("MSA").Field(1) != "AA" {
			t.Fatalf("%s: %q", name, ack.Bytes())
		}
	}
	store := func(uid, pid, acc string) {
		t.Helper()
		dir := t.TempDir()
		py := testkit.Peer(t, "/usr/bin/python3")
		if out, err := runCmd(py, filepath.Join("..", "..", "scripts", "dicom", "study.py"), dir, uid, pid, acc, "1", "3"); err != nil {
			t.Fatalf("study.py: %v\n%s", err, out)
		}
		if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, dir); err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
	}
	msg := func(i int, ctl string) string { return strings.ReplaceAll(risMessages[i].msg, "{{ctl}}", ctl) }
	uidA, uidB, uidLone := studyUID+".1", studyUID+".2", studyUID+".3"

	// Patient MRN4711, ACC1001: images, then the final report, then the order.
	store(uidA, "MRN4711", "ACC1001")
	send("final", msg(3, "J-F1"))
	send("order", msg(0, "J-O1"))
	// Patient MRN5000, ACC2001: the order first, then the images.
	send("order2", strings.NewReplacer("MRN4711", "MRN5000", "ACC1002", "ACC2001", "{{ctl}}", "J-O2").Replace(risMessages[5].msg))
	store(uidB, "MRN5000", "ACC2001")
	// A study nobody ordered.
	store(uidLone, "MRN5000", "")

	var snapA, snapB map[string]any
	if !testkit.Poll(30*time.Second, func() bool {
		_, snapA = testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/patients/MRN4711/imaging")
		_, snapB = testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/patients/MRN5000/imaging")
		s, _ := snapB["studies"].([]any)
		return len(s) == 2 && allAvailable(snapA) && allAvailable(snapB)
	}) {
		t.Fatalf("snapshots never settled:\n%v\n%v", snapA, snapB)
	}
	studies := func(snap map[string]any) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, s := range snap["studies"].([]any) {
			m := s.(map[string]any)
			out[m["id"].(string)] = m
		}
		return out
	}
	a := studies(snapA)[uidA]
	if fmt.Sprint(a["basedOn"]) != "[map[reference:ServiceRequest/"+rules.ServiceRequestID("MRN4711", "ACC1001")+"]]" {
		t.Errorf("MRN4711 study basedOn %v", a["basedOn"])
	}
	if st := snapA["study_report_status"].(map[string]any)[uidA]; st != "final" {
		t.Errorf("MRN4711 study report status %v, want final", st)
	}
	rep := snapA["reports"].([]any)[0].(map[string]any)
	if fmt.Sprint(rep["imagingStudy"]) != "[map[reference:ImagingStudy/"+uidA+"]]" || fmt.Sprint(rep["basedOn"]) != "[map[reference:ServiceRequest/"+rules.ServiceRequestID("MRN4711", "ACC1001")+"]]" {
		t.Errorf("MRN4711 report links imagingStudy %v basedOn %v", rep["imagingStudy"], rep["basedOn"])
	}
	if o := snapA["orders"].([]any)[0].(map[string]any); o["status"] != "completed" {
		t.Errorf("MRN4711 order status %v, want completed", o["status"])
	}
	if c := fmt.Sprint(snapA["body_region_counts"]); c != "map[CHEST:1]" {
		t.Errorf("MRN4711 body regions %s", c)
	}
	bs := studies(snapB)
	if fmt.Sprint(bs[uidB]["basedOn"]) != "[map[reference:ServiceRequest/"+rules.ServiceRequestID("MRN5000", "ACC2001")+"]]" || bs[uidLone]["basedOn"] != nil {
		t.Errorf("MRN5000 studies: ordered basedOn %v, unordered basedOn %v", bs[uidB]["basedOn"], bs[uidLone]["basedOn"])
	}
	if o := snapB["orders"].([]any)[0].(map[string]any); o["status"] != "completed" {
		t.Errorf("MRN5000 order status %v, want completed once its study is available", o["status"])
	}
	// The joins reached subscribers as events.
	// (A study linked before it is available gets PROGRESS; a report linked
	// after it was announced, IMAGING_REPORT_UPDATED: README, "Join rules".)
	_, list := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events?patient_id=MRN4711&type=IMAGING_STUDY_UPDATED&type=IMAGING_STUDY_PROGRESS&type=IMAGING_REPORT_READY&type=IMAGING_REPORT_UPDATED&page_size=100")
	linked, ready := 0, 0
	for _, e := range list["events"].([]any) {
		r := e.(map[string]any)["resource"].(map[string]any)
		if r["basedOn"] != nil || r["imagingStudy"] != nil {
			linked++
		}
		if e.(map[string]any)["type"] == "IMAGING_REPORT_READY" {
			ready++
		}
	}
	if linked < 2 || ready != 1 {
		t.Errorf("%d study/report events carry links for MRN4711, %d IMAGING_REPORT_READY; want the joins as updates and the report ready once", linked, ready)
	}
}

func allAvailable(snap map[string]any) bool {
	ss, _ := snap["studies"].([]any)
	if len(ss) == 0 {
		return false
	}
	for _, s := range ss {
		if s.(map[string]any)["status"] != "available" {
			return false
		}
	}
	return true
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
