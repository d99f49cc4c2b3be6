package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// Tokens of the reconciliation tests: an operator, a reader without the
// role, a client restricted to MRN4711 and one restricted to another patient.
const (
	opToken     = "op-0123456789abcdef0123456789abcdef"
	readerToken = "rd-0123456789abcdef0123456789abcdef"
	mrnToken    = "pt-0123456789abcdef0123456789abcdef"
	otherToken  = "ot-0123456789abcdef0123456789abcdef"
)

// tokensDaemon starts a daemon with --auth tokens and the four tokens
// above, and returns it with its HTTP base URL.
func tokensDaemon(t *testing.T, extra ...string) (base string, d interface {
	HTTPAddr() string
	DICOMAddr() string
	MLLPAddr() string
}) {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(opToken+" alice role=operator\n"+readerToken+" bob\n"+mrnToken+" ward patient=MRN4711\n"+otherToken+" other patient=MRN9999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dd := startDaemon(t, filepath.Join(dir, "data"), append([]string{"--auth", "tokens", "--auth-tokens-file", tokens}, extra...)...)
	return "http://" + dd.HTTPAddr(), dd
}

// apiJSON does a request with a bearer token and decodes the JSON answer.
func apiJSON(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var text string
	if body != nil {
		b, _ := json.Marshal(body)
		text = string(b)
	}
	code, answer := httpDo(t, method, url, token, text)
	var m map[string]any
	if err := json.Unmarshal([]byte(answer), &m); err != nil {
		t.Fatalf("%s %s: %d %q is not a JSON object", method, url, code, answer)
	}
	return code, m
}

// explainStudy returns the first study of an explanation, or nil.
func explainStudy(m map[string]any) map[string]any {
	l, _ := m["studies"].([]any)
	if len(l) == 0 {
		return nil
	}
	s, _ := l[0].(map[string]any)
	return s
}

// TestExplainAStudy: an order over MLLP (mllp_send), then its study by
// storescu: GET /v1/explain says, while the images arrive, how many are in
// per series and how long the quiet period has left, then why the study
// became available, the order it joined and the events involved;
// radbridge explain prints the same. A token restricted to another patient
// sees nothing of it and may not name the patient.
func TestExplainAStudy(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	base, d := tokensDaemon(t, "--study-quiet-period", "8s", "--hl7-patient-authority", "NORTHWING")
	f := testkit.WriteHL7(t, "order", strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "EXPL-1"))
	if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), f); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("order ACK %q", ack.Bytes())
	}
	dir := t.TempDir()
	makeStudy(t, dir, studyUID, 2, 3, 1)
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, dir); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	url := base + "/v1/explain?study=" + studyUID
	var st map[string]any
	testkit.EventuallyState(t, 20*time.Second, "explain counts 6 instances", func() (bool, string) {
		_, m := apiJSON(t, "GET", url, mrnToken, nil)
		st = explainStudy(m)
		return st != nil && st["instances_received"] == float64(6), fmt.Sprint(m)
	})
	if av := st["available"].(map[string]any); av["fired"] != true {
		// Still in its quiet period (8 s): it says how long is left.
		q, _ := st["quiet_period"].(map[string]any)
		if left, _ := q["seconds_left"].(float64); left <= 0 || left > 8 || !strings.Contains(fmt.Sprint(av["reason"]), "quiet period ends in") {
			t.Errorf("receiving study: available %v, quiet period %v", av, q)
		}
	}
	if series, _ := st["series"].([]any); len(series) != 2 || series[0].(map[string]any)["received"] != float64(3) {
		t.Errorf("series %v, want two of 3 instances", st["series"])
	}
	testkit.EventuallyState(t, 30*time.Second, "explain says available", func() (bool, string) {
		_, m := apiJSON(t, "GET", url, mrnToken, nil)
		st = explainStudy(m)
		return st != nil && st["available"].(map[string]any)["fired"] == true, fmt.Sprint(st)
	})
	_, m := apiJSON(t, "GET", url, mrnToken, nil)
	st = explainStudy(m)
	if r := fmt.Sprint(st["available"].(map[string]any)["reason"]); !strings.Contains(r, "quiet-period (6 instances received") {
		t.Errorf("available reason %q", r)
	}
	if c, _ := st["completion"].(map[string]any); c["reason"] != "quiet-period" {
		t.Errorf("completion %v", st["completion"])
	}
	if j, _ := st["order"].(map[string]any)["joined"].([]any); len(j) != 1 {
		t.Errorf("order join %v", st["order"])
	}
	if seqs, _ := st["ingest_sequences"].([]any); len(seqs) < 3 { // first and last instance, the timer
		t.Errorf("ingest sequences %v", st["ingest_sequences"])
	}
	orders, _ := m["orders"].([]any)
	if len(orders) != 1 || orders[0].(map[string]any)["status"] != "completed" {
		t.Errorf("orders %v", m["orders"])
	}
	types := map[string]bool{}
	for _, e := range m["events"].([]any) {
		types[e.(map[string]any)["type"].(string)] = true
	}
	for _, want := range []string{"ORDER_PLACED", "IMAGING_STUDY_PROGRESS", "IMAGING_STUDY_AVAILABLE"} {
		if !types[want] {
			t.Errorf("events %v lack %s", types, want)
		}
	}

	// The CLI.
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte(mrnToken+"\n"), 0o600)
	code, out, errOut := runApp(t, "explain", "--addr", d.HTTPAddr(), "--token-file", tok, "--accession", "ACC1001")
	if code != 0 || !strings.Contains(out, "available: fired: quiet-period") || !strings.Contains(out, "IMAGING_STUDY_AVAILABLE") {
		t.Errorf("radbridge explain: exit %d\n%s\n%s", code, out, errOut)
	}

	// Patient scoping.
	_, m = apiJSON(t, "GET", url, otherToken, nil)
	if explainStudy(m) != nil || len(m["orders"].([]any)) != 0 || len(m["events"].([]any)) != 0 || strings.Contains(fmt.Sprint(m), "MRN4711") {
		t.Errorf("another patient's token sees %v", m)
	}
	if code, _ := apiJSON(t, "GET", base+"/v1/explain?patient=MRN4711", otherToken, nil); code != http.StatusForbidden {
		t.Errorf("another patient's token naming MRN4711: %d, want 403", code)
	}
	if code, m := apiJSON(t, "GET", base+"/v1/explain?patient=MRN4711", mrnToken, nil); code != 200 || explainStudy(m) == nil {
		t.Errorf("MRN4711's token: %d %v", code, m)
	}
	if code, _ := apiJSON(t, "GET", base+"/v1/explain?study=1&patient=2", mrnToken, nil); code != http.StatusBadRequest {
		t.Errorf("two selectors: %d, want 400", code)
	}
	if code, _ := apiJSON(t, "GET", url, "", nil); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
}
