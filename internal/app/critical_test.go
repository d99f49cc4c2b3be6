package app_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	rbv1 "radbridge/proto/radbridge/v1"
)

// TestCriticalFindingsRoom: a subscriber asking for stat and critical events
// of all patients (gRPC, the room protocol, REST) gets exactly those from a
// RIS workflow: the STAT order's events and the critical corrected report.
func TestCriticalFindingsRoom(t *testing.T) {
	bin := needPeer(t, "mllp_send")
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
		mllpSend(t, bin, d.MLLPAddr(), writeHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl)))
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
	code, list := getJSON(t, "http://"+d.HTTPAddr()+"/v1/events?priority=stat&priority=PRIORITY_CRITICAL")
	evs, _ := list["events"].([]any)
	if code != 200 || len(evs) != 6 { // placed, updated, preliminary, final, completed (stat order) + critical correction
		t.Errorf("GET /v1/events?priority=stat&priority=PRIORITY_CRITICAL: %d, %d events; want 6", code, len(evs))
	}
	if code, _ := getJSON(t, "http://"+d.HTTPAddr()+"/v1/events?priority=urgent"); code != 400 {
		t.Errorf("unknown priority: HTTP %d, want 400", code)
	}
}
