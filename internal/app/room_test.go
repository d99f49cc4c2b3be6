package app_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"radbridge/internal/testkit"
)

// TestRoomProtocolRISWorkflow: a browser room client on /ws subscribes to
// one patient; the RIS workflow sent with mllp_send reaches it as update
// messages with dotted event types, actions and the FHIR resources.
func TestRoomProtocolRISWorkflow(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+d.HTTPAddr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	type msg struct {
		Type  string         `json:"type"`
		Error string         `json:"error"`
		Data  map[string]any `json:"data"`
	}
	read := func() msg {
		t.Helper()
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			var m msg
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("server sent %q", b)
			}
			if m.Type != "heartbeat" {
				return m
			}
		}
	}
	send := func(s string) {
		t.Helper()
		if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if m := read(); m.Type != "welcome" || m.Data["server"] != "radbridge" {
		t.Fatalf("first message %v", m)
	}
	send(`{"type":"subscribe","data":{"subscription_id":"chart-1","patient_ids":["MRN4711"],"resource_types":["ImagingStudy","DiagnosticReport","ServiceRequest"]}}`)
	if m := read(); m.Type != "subscription" || m.Data["subscription_id"] != "chart-1" {
		t.Fatalf("subscribe answered %v", m)
	}
	send(`{"type":"subscribe","data":{"subscription_id":"someone-else","patient_ids":["MRN0001"]}}`)
	if m := read(); m.Type != "subscription" {
		t.Fatalf("second subscribe answered %v", m)
	}
	for _, m := range risMessages {
		ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl)))
		if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AA" {
			t.Fatalf("%s: ACK %q", m.name, ack.Bytes())
		}
	}
	want := []struct{ eventType, action, resource, priority, status string }{
		{"order.placed", "created", "ServiceRequest", "stat", "active"},
		{"order.updated", "updated", "ServiceRequest", "stat", ""},
		{"result.received", "created", "DiagnosticReport", "stat", "preliminary"},
		{"imaging.report.ready", "updated", "DiagnosticReport", "stat", "final"},
		{"order.updated", "updated", "ServiceRequest", "stat", "completed"}, // joined by accession
		{"imaging.report.ready", "updated", "DiagnosticReport", "critical", "corrected"},
		{"order.placed", "created", "ServiceRequest", "routine", "active"},
		{"order.cancelled", "updated", "ServiceRequest", "routine", "revoked"},
	}
	var prev float64
	for i, w := range want {
		m := read()
		if m.Type != "update" {
			t.Fatalf("message %d: %v; want an update", i+1, m)
		}
		u := m.Data
		res, _ := u["resource"].(map[string]any)
		if u["event_type"] != w.eventType || u["action"] != w.action || u["resource_type"] != w.resource || u["priority"] != w.priority ||
			u["patient_id"] != "MRN4711" || u["subscription_id"] != "chart-1" {
			t.Errorf("update %d: %s %s %s %s patient %s sub %s; want %s %s %s %s MRN4711 chart-1", i+1,
				u["event_type"], u["action"], u["resource_type"], u["priority"], u["patient_id"], u["subscription_id"], w.eventType, w.action, w.resource, w.priority)
		}
		if res["resourceType"] != w.resource || res["id"] == nil || res["id"] != u["resource_id"] || (w.status != "" && res["status"] != w.status) {
			t.Errorf("update %d (%s): resource_id %v, resource %v; want a %s with status %q", i+1, w.eventType, u["resource_id"], res, w.resource, w.status)
		}
		if seq, _ := u["sequence"].(float64); seq <= prev || u["event_id"] == "" || u["message"] == "" {
			t.Errorf("update %d: sequence %v after %v, event_id %v, message %v", i+1, u["sequence"], prev, u["event_id"], u["message"])
		} else {
			prev = seq
		}
	}
	send(`{"type":"ping"}`)
	if m := read(); m.Type != "pong" {
		t.Errorf("after the workflow: %v; want pong and no other update", m)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
}
