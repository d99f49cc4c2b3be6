package app_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// makeStudyOf writes a synthetic study of patient pid and accession acc
// with scripts/dicom/study.py (makeStudy's, for another patient).
func makeStudyOf(t *testing.T, dir, study, pid, acc string, series, instances int) {
	t.Helper()
	runStudyScript(t, dir, study, pid, acc, fmt.Sprint(series), fmt.Sprint(instances))
}

// exceptionItems returns the worklist's items of kind.
func exceptionItems(m map[string]any, kind string) []map[string]any {
	var out []map[string]any
	l, _ := m["items"].([]any)
	for _, x := range l {
		it, _ := x.(map[string]any)
		if it["kind"] == kind {
			out = append(out, it)
		}
	}
	return out
}

// eventsOf returns the events of patient pid (REST, as pr's token sees them).
func eventsOf(t *testing.T, base, token, pid string) []map[string]any {
	t.Helper()
	code, m := apiJSON(t, "GET", base+"/v1/events?patient_id="+pid+"&page_size=1000", token, nil)
	if code != 200 {
		t.Fatalf("events of %s: %d %v", pid, code, m)
	}
	var out []map[string]any
	for _, x := range m["events"].([]any) {
		out = append(out, x.(map[string]any))
	}
	return out
}

// TestWrongMRNMovedByOperator: a RIS order (mllp_send) whose images never
// come is an exception; its final report before any study is one too. The
// PACS (storescu) then sends the study under a wrong MRN: the accession is
// seen under two patients, and the worklist proposes moving the study to
// the order's patient. A patient-scoped token and a token without the
// operator role may not act; an operator moves it: the patient it leaves
// gets the study withdrawn (entered-in-error) and loses it from its
// snapshot, the right patient gets it joined to the order and report, the
// exceptions are resolved, /v1/explain shows who did it and why, and after
// a stop radbridge replay --check is clean (the correction is in the
// ingest log).
func TestWrongMRNMovedByOperator(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(opToken+" alice role=operator\n"+readerToken+" bob\n"+mrnToken+" ward patient=MRN4711\n"+otherToken+" other patient=WRONG1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	mapping := []string{"--study-quiet-period", "2s", "--hl7-patient-authority", "NORTHWING", "--exceptions-unordered-after", "0s"}
	d, stop := runDaemon(t, data, slog.New(slog.DiscardHandler), append([]string{"--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0",
		"--auth", "tokens", "--auth-tokens-file", tokens}, mapping...)...)
	base := "http://" + d.HTTPAddr()

	// An order scheduled 2026-03-10 09:00 with no images: an exception
	// (its scheduled time plus the 2 h grace is long past).
	send := func(i int, ctl string) {
		t.Helper()
		f := testkit.WriteHL7(t, ctl, strings.ReplaceAll(risMessages[i].msg, "{{ctl}}", ctl))
		if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), f); ack.Segment("MSA").Field(1) != "AA" {
			t.Fatalf("%s: ACK %q", ctl, ack.Bytes())
		}
	}
	send(0, "RC-1")
	var ex map[string]any
	testkit.EventuallyState(t, 20*time.Second, "order without images listed", func() (bool, string) {
		_, ex = apiJSON(t, "GET", base+"/v1/exceptions", opToken, nil)
		return len(exceptionItems(ex, "order-without-images")) == 1, fmt.Sprint(ex)
	})
	if it := exceptionItems(ex, "order-without-images")[0]; it["patient_id"] != "MRN4711" || it["accession_number"] != "ACC1001" || it["evidence"] == "" || it["action"] == "" {
		t.Errorf("order exception %v", it)
	}
	// Its final report, before any study.
	send(3, "RC-2")
	testkit.EventuallyState(t, 20*time.Second, "report without study listed", func() (bool, string) {
		_, ex = apiJSON(t, "GET", base+"/v1/exceptions", opToken, nil)
		return len(exceptionItems(ex, "report-without-study")) == 1, fmt.Sprint(ex)
	})

	// The study, with the wrong MRN.
	studyDir := t.TempDir()
	makeStudyOf(t, studyDir, studyUID, "WRONG1", "ACC1001", 1, 3)
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, studyDir); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	var two []map[string]any
	testkit.EventuallyState(t, 30*time.Second, "the accession under two patients, with a proposed move", func() (bool, string) {
		_, ex = apiJSON(t, "GET", base+"/v1/exceptions", opToken, nil)
		two = exceptionItems(ex, "accession-two-patients")
		evs := eventsOf(t, base, opToken, "WRONG1")
		return len(two) == 1 && two[0]["resolve"] != nil && len(evs) > 0 && evs[len(evs)-1]["type"] == "IMAGING_STUDY_AVAILABLE", fmt.Sprint(ex)
	})
	if r := two[0]["resolve"].(map[string]any); r["action"] != "move" || r["study"] != studyUID || r["patient"] != "MRN4711" {
		t.Errorf("proposed resolution %v", r)
	}
	// The worklist as the MRN4711 token sees it: only its patient's items,
	// no dead letters; the metrics count every item.
	_, mine := apiJSON(t, "GET", base+"/v1/exceptions", mrnToken, nil)
	for _, x := range mine["items"].([]any) {
		if it := x.(map[string]any); strings.Contains(fmt.Sprint(it), "WRONG1") {
			t.Errorf("MRN4711's token sees %v", it)
		}
	}
	if s := scrape(t, base+"/metrics", opToken); s.value("radbridge_exceptions", "kind", "accession-two-patients") != 1 {
		t.Errorf("radbridge_exceptions{kind=accession-two-patients} = %v, want 1", s.value("radbridge_exceptions", "kind", "accession-two-patients"))
	}

	move := map[string]any{"action": "move", "study": studyUID, "patient": "MRN4711", "reason": "PACS had the wrong MRN (ticket 42)"}
	for _, tok := range []string{mrnToken, otherToken, readerToken} {
		if code, m := apiJSON(t, "POST", base+"/v1/reconcile", tok, move); code != 403 {
			t.Errorf("correction by a token without the operator role or restricted: %d %v", code, m)
		}
	}
	if code, m := apiJSON(t, "POST", base+"/v1/reconcile", opToken, map[string]any{"action": "move", "study": studyUID, "patient": "MRN4711"}); code != 400 {
		t.Errorf("a correction without a reason: %d %v", code, m)
	}
	code, res := apiJSON(t, "POST", base+"/v1/reconcile", opToken, move)
	if code != 200 {
		t.Fatalf("move: %d %v", code, res)
	}
	var got []string
	for _, x := range res["events"].([]any) {
		e := x.(map[string]any)
		got = append(got, fmt.Sprint(e["type"], " ", e["resource_type"]))
	}
	if len(got) < 2 || got[0] != "IMAGING_STUDY_UPDATED ImagingStudy" || got[1] != "IMAGING_STUDY_UPDATED ImagingStudy" {
		t.Errorf("events of the move: %v", got)
	}

	// The patient it left: the study withdrawn, gone from the snapshot.
	wrong := eventsOf(t, base, opToken, "WRONG1")
	last := wrong[len(wrong)-1]
	if last["type"] != "IMAGING_STUDY_UPDATED" || last["resource"].(map[string]any)["status"] != "entered-in-error" || strings.Contains(fmt.Sprint(last), "MRN4711") {
		t.Errorf("WRONG1's last event %v", last)
	}
	if code, img := apiJSON(t, "GET", base+"/v1/patients/WRONG1/imaging", opToken, nil); code != 200 || len(img["studies"].([]any)) != 0 {
		t.Errorf("WRONG1's snapshot: %d %v", code, img)
	}
	// The right patient: the study, joined to its order and report.
	right := eventsOf(t, base, mrnToken, "MRN4711")
	var study map[string]any
	for _, e := range right {
		if e["type"] == "IMAGING_STUDY_UPDATED" && e["study_instance_uid"] == studyUID {
			study = e["resource"].(map[string]any)
		}
	}
	if study == nil || study["status"] != "available" || study["basedOn"] == nil || !strings.Contains(fmt.Sprint(study["subject"]), "MRN4711") {
		t.Errorf("MRN4711's study event resource %v", study)
	}
	code, img := apiJSON(t, "GET", base+"/v1/patients/MRN4711/imaging", mrnToken, nil)
	if code != 200 || len(img["studies"].([]any)) != 1 || !strings.Contains(fmt.Sprint(img["studies"]), "basedOn") || !strings.Contains(fmt.Sprint(img["reports"]), "ImagingStudy/"+studyUID) {
		t.Errorf("MRN4711's snapshot: %d %v", code, img)
	}
	_, ex = apiJSON(t, "GET", base+"/v1/exceptions", opToken, nil)
	for _, k := range []string{"accession-two-patients", "order-without-images", "report-without-study", "study-without-order"} {
		if items := exceptionItems(ex, k); len(items) != 0 {
			t.Errorf("after the move, %s: %v", k, items)
		}
	}
	// Explain shows who did it, and why.
	_, e := apiJSON(t, "GET", base+"/v1/explain?study="+studyUID, mrnToken, nil)
	st := explainStudy(e)
	acts, _ := st["actions"].([]any)
	if len(acts) != 1 || acts[0].(map[string]any)["actor"] != "alice" || acts[0].(map[string]any)["reason"] != move["reason"] || acts[0].(map[string]any)["action"] != "move" {
		t.Errorf("explained actions %v", st["actions"])
	}
	// The patient it left may no longer see it.
	if _, e := apiJSON(t, "GET", base+"/v1/explain?study="+studyUID, otherToken, nil); explainStudy(e) != nil {
		t.Errorf("WRONG1's token explains the moved study: %v", e)
	}

	stop()
	code, out, errOut := runApp(t, append([]string{"replay", "--check", "--data-dir", data}, mapping...)...)
	if code != 0 || !strings.Contains(out, "events now derived that the log lacks: 0; logged events no longer derived: 0") {
		t.Errorf("replay --check after the move: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestDeadLetterRetriedByOperator: a report whose event is too large is
// dead-lettered; the worklist lists it with a proposed retry and
// /v1/explain of its accession names it. After the fix (a larger
// --max-event-bytes, which needs a restart) an operator retries it through
// the API on the running daemon: the report's event is appended, the dead
// letter and the exception are gone, and the retry names its actor.
func TestDeadLetterRetriedByOperator(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(opToken+" alice role=operator\n"+mrnToken+" ward patient=MRN-DL1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	flags := []string{"--mllp-addr", "127.0.0.1:0", "--hl7-patient-authority", "NORTHWING", "--auth", "tokens", "--auth-tokens-file", tokens}
	d, stop := runDaemon(t, data, slog.New(slog.DiscardHandler), append(flags, "--max-event-bytes", "65536")...)
	base := "http://" + d.HTTPAddr()
	report := `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20261201100000||ORU^R01|DLR-1|P|2.5.1
PID|1||MRN-DL1^^^NORTHWING^MR||BIG^REPORT
OBR|1|PDL1|FDL1|71250^CT CHEST^C4|||20261201090000|||||||||||ACC-DL1||||20261201100000||CT|F
OBX|1|TX|RPT^Report^L|1|` + strings.Repeat("Findings continue in great detail. ", 3000) + `||||||F`
	if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "report", report)); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("report: ACK %q", ack.Bytes())
	}
	var dl map[string]any
	testkit.EventuallyState(t, 20*time.Second, "the dead letter listed", func() (bool, string) {
		_, ex := apiJSON(t, "GET", base+"/v1/exceptions", opToken, nil)
		items := exceptionItems(ex, "dead-letter")
		if len(items) == 1 {
			dl = items[0]
		}
		return dl != nil, fmt.Sprint(ex)
	})
	if r, _ := dl["resolve"].(map[string]any); r["action"] != "retry" || r["seq"] == nil || strings.Contains(fmt.Sprint(dl), "MRN-DL1") {
		t.Errorf("dead-letter item %v", dl)
	}
	if _, ex := apiJSON(t, "GET", base+"/v1/exceptions", mrnToken, nil); len(exceptionItems(ex, "dead-letter")) != 0 {
		t.Errorf("a patient-scoped token sees dead letters")
	}
	_, e := apiJSON(t, "GET", base+"/v1/explain?accession=ACC-DL1", opToken, nil)
	if l, _ := e["dead_letters"].([]any); len(l) != 1 {
		t.Errorf("explain of the accession: dead letters %v", e["dead_letters"])
	}
	stop()

	d, _ = runDaemon(t, data, slog.New(slog.DiscardHandler), append(flags, "--max-event-bytes", "1048576")...)
	base = "http://" + d.HTTPAddr()
	retry := map[string]any{"action": "retry", "seq": dl["resolve"].(map[string]any)["seq"], "reason": "limit raised"}
	if code, m := apiJSON(t, "POST", base+"/v1/reconcile", mrnToken, retry); code != 403 {
		t.Errorf("retry by a patient-scoped token: %d %v", code, m)
	}
	code, res := apiJSON(t, "POST", base+"/v1/reconcile", opToken, retry)
	if code != 200 || len(res["events"].([]any)) != 1 || res["events"].([]any)[0].(map[string]any)["type"] != "IMAGING_REPORT_READY" {
		t.Fatalf("retry: %d %v", code, res)
	}
	_, ex := apiJSON(t, "GET", base+"/v1/exceptions", opToken, nil)
	if items := exceptionItems(ex, "dead-letter"); len(items) != 0 {
		t.Errorf("after the retry: %v", items)
	}
	if code, m := apiJSON(t, "POST", base+"/v1/reconcile", opToken, retry); code != 404 {
		t.Errorf("retry of a dead letter no longer there: %d %v", code, m)
	}
}
