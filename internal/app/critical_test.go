package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"radbridge/internal/testkit"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// TestCriticalFindingsRoom: a subscriber asking for stat and critical events
// of all patients (gRPC, the room protocol, REST) gets exactly those from a
// RIS workflow: the STAT order's events and the critical corrected report.
func TestCriticalFindingsRoom(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, _ := grpcClient(t, d.GRPCAddr())
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{Priority: []rbv1.Priority{rbv1.Priority_PRIORITY_CRITICAL}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Header(); err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(ctx, "ws://"+d.HTTPAddr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	readRoom := func() map[string]any {
		t.Helper()
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			json.Unmarshal(b, &m)
			if m["type"] != "heartbeat" {
				return m
			}
		}
	}
	readRoom() // welcome
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","data":{"subscription_id":"critical","all_patients":true,"priorities":["critical"]}}`)); err != nil {
		t.Fatal(err)
	}
	if m := readRoom(); m["type"] != "subscription" {
		t.Fatalf("subscribe answered %v", m)
	}
	for _, m := range risMessages {
		testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl)))
	}
	ev, err := sub.Recv()
	for err == nil && ev.Heartbeat {
		ev, err = sub.Recv()
	}
	if err != nil || ev.Priority != rbv1.Priority_PRIORITY_CRITICAL || ev.Type != rbv1.EventType_IMAGING_REPORT_READY || ev.Source.GetMessageControlId() != "ORU-1005" {
		t.Fatalf("critical room over gRPC got %v, %v; want the critical corrected report", ev, err)
	}
	u := readRoom()
	if data, _ := u["data"].(map[string]any); u["type"] != "update" || data["priority"] != "critical" || data["event_type"] != "imaging.report.ready" {
		t.Errorf("critical room over /ws got %v", u)
	}
	code, list := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events?priority=stat&priority=PRIORITY_CRITICAL")
	evs, _ := list["events"].([]any)
	if code != 200 || len(evs) != 6 { // placed, updated, preliminary, final, completed (stat order) + critical correction
		t.Errorf("GET /v1/events?priority=stat&priority=PRIORITY_CRITICAL: %d, %d events; want 6", code, len(evs))
	}
	if code, _ := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events?priority=urgent"); code != 400 {
		t.Errorf("unknown priority: HTTP %d, want 400", code)
	}
}

// TestCriticalMarkSurvivesReload : the PACS sends a study
// (storescu) and the RIS a corrected report with a critical finding
// (mllp_send, OBX-8 HH). A page opened afterwards (Chromium), so it learns
// of the report only from the snapshot, shows the CRITICAL mark on the
// study and the report, and still does after a reload; the snapshot names
// the report critical and the DiagnosticReport carries the finding as a
// contained Observation interpreted HH.
func TestCriticalMarkSurvivesReload(t *testing.T) {
	mllp := testkit.Peer(t, "mllp_send")
	testkit.Peer(t, "storescu")
	studyDir := t.TempDir()
	makeStudy(t, studyDir, studyUID, 1, 2, 1)
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s", "--hl7-patient-authority", "NORTHWING")
	base := "http://" + d.HTTPAddr()
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aec", "RADBRIDGE", "+sd", "+r", host, port, studyDir); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	m := risMessages[4]
	if ack := testkit.MLLPSend(t, mllp, d.MLLPAddr(), testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl))); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("corrected report: %q", ack.Bytes())
	}
	reportID := rules.DiagnosticReportID("MRN4711", "ACC1001")
	var snap map[string]any
	if !testkit.Poll(30*time.Second, func() bool {
		_, snap = testkit.GetJSON(t, base+"/v1/patients/MRN4711/imaging")
		prio, _ := snap["report_priority"].(map[string]any)
		return prio[reportID] == "critical" && allAvailable(snap)
	}) {
		t.Fatalf("snapshot never showed the critical report available with its study: %v", snap)
	}
	rep := snap["reports"].([]any)[0].(map[string]any)
	if !readmodel.CriticalReport(rep) || fmt.Sprint(rep["result"]) != "[map[reference:#obx-1]]" {
		t.Errorf("DiagnosticReport in the snapshot: contained %v result %v; want the HH finding", rep["contained"], rep["result"])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	browser := testkit.Chromium(t, ctx)
	tb := openTab(t, browser, "tab", base+"/?patient=MRN4711")
	t.Cleanup(func() { tb.screenshot(t, artifactsDir(t), "critical-after-reload.png") })
	marked := `!!document.querySelector('[data-testid="study-card"][data-study-uid="` + studyUID + `"] [data-testid="critical-badge"]') &&
		!!document.querySelector('[data-testid="report"][data-report-id="` + reportID + `"][data-priority="critical"] [data-testid="report-priority"]')`
	for _, when := range []string{"opened after the report", "reloaded"} {
		if when == "reloaded" {
			evalIn[bool](t, tb, `(() => { document.body.dataset.beforeReload = "1"; return true; })()`)
			if err := chromedp.Do(tb.ctx, chromedp.Reload()); err != nil {
				t.Fatalf("reload: %v", err)
			}
			tb.waitFor(t, "the reloaded page", `document.body && document.body.dataset.beforeReload === undefined`)
		}
		tb.waitFor(t, when+": live", `document.querySelector('[data-testid="connection"]').textContent === "live"`)
		tb.waitFor(t, when+": critical mark on the study and the report", marked)
		if n := evalIn[string](t, tb, `document.querySelector('[data-testid="connection"]').dataset.events`); n != "0" {
			t.Errorf("%s: the page applied %s live events; the mark must come from the snapshot", when, n)
		}
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.errors) > 0 {
		t.Errorf("page errors: %v", tb.errors)
	}
}
