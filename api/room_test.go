package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"radbridge/auth"
	"radbridge/eventlog"
	"radbridge/fanout"
	"radbridge/ingest"
	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// roomEnv is a room server over an in-memory event log.
type roomEnv struct {
	t    *testing.T
	log  *eventlog.Memory
	hub  *fanout.Hub
	svc  *Service
	h    *roomHandler
	srv  *httptest.Server
	url  string
	next uint64
}

func newRoomEnv(t *testing.T, cfg HTTPConfig, tweak func(*roomLimits)) *roomEnv {
	t.Helper()
	return newRoomEnvHub(t, cfg, fanout.Config{}, tweak)
}

func newRoomEnvHub(t *testing.T, cfg HTTPConfig, hc fanout.Config, tweak func(*roomLimits)) *roomEnv {
	t.Helper()
	log := eventlog.NewMemory()
	hub := fanout.New(log, hc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); hub.Run(ctx) }()
	if err := hub.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	svc := NewService(log, hub, ingest.NewMemory(), nil, nil, nil)
	h := newRoomHandler(svc, cfg)
	if tweak != nil {
		tweak(&h.lim)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		svc.Stop()
		cancel()
		<-done
	})
	return &roomEnv{t: t, log: log, hub: hub, svc: svc, h: h, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
}

// add appends an event and returns it with its sequence.
func (e *roomEnv) add(typ rbv1.EventType, patient, resType, resID string) *rbv1.Event {
	e.t.Helper()
	e.next++
	res, _ := structpb.NewStruct(map[string]any{"resourceType": resType, "id": resID, "status": "available", "note": "ü <&>"})
	ev := &rbv1.Event{
		Id: fmt.Sprintf("ev-%d", e.next), Type: typ, Time: timestamppb.New(time.Date(2026, 3, 10, 8, 30, 0, 0, time.UTC)),
		PatientId: patient, AccessionNumber: "ACC1", Severity: rbv1.Severity_SEVERITY_SUCCESS, Priority: rbv1.Priority_PRIORITY_STAT,
		Message: "New imaging study available: CT CHEST", ResourceType: resType, ResourceId: resID, Resource: res,
	}
	seq, err := e.log.Append(context.Background(), eventlog.Key{IngestSeq: e.next}, ev)
	if err != nil {
		e.t.Fatal(err)
	}
	ev.Sequence = seq
	return ev
}

type roomClient struct {
	t *testing.T
	c *websocket.Conn
}

func dialRoom(t *testing.T, url string, hdr http.Header) *roomClient {
	t.Helper()
	rc, w := dialRoomWelcome(t, url, hdr)
	if w["type"] != "welcome" {
		t.Fatalf("first message %v; want welcome", w)
	}
	return rc
}

// dialRoomWelcome opens a room connection with the header hdr and returns
// it with its first message (the welcome, unchecked).
func dialRoomWelcome(t *testing.T, url string, hdr http.Header) (*roomClient, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	rc := &roomClient{t: t, c: c}
	return rc, rc.next()
}

func (rc *roomClient) sendRaw(s string) {
	rc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rc.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		rc.t.Fatalf("send %.80s: %v", s, err)
	}
}

func (rc *roomClient) send(typ string, data any) {
	rc.t.Helper()
	b, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	rc.sendRaw(string(b))
}

// read returns the next message other than a heartbeat, or the error.
func (rc *roomClient) read() (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, b, err := rc.c.Read(ctx)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("server sent %q: %w", b, err)
		}
		if m["type"] != "heartbeat" {
			return m, nil
		}
	}
}

func (rc *roomClient) next() map[string]any {
	rc.t.Helper()
	m, err := rc.read()
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	return m
}

// expect reads the next message and checks its type (and error code).
func (rc *roomClient) expect(typ string, code ...string) map[string]any {
	rc.t.Helper()
	m := rc.next()
	if m["type"] != typ || len(code) > 0 && m["error"] != code[0] {
		rc.t.Fatalf("got %v; want %s %v", m, typ, code)
	}
	return m
}

// closed reads until the socket ends and returns the close status and reason.
func (rc *roomClient) closed() (websocket.StatusCode, string, []map[string]any) {
	rc.t.Helper()
	var msgs []map[string]any
	for {
		m, err := rc.read()
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason, msgs
			}
			rc.t.Fatalf("socket ended with %v, not a close frame (after %v)", err, msgs)
		}
		msgs = append(msgs, m)
	}
}

func (rc *roomClient) subscribe(id string, patients []string, types ...string) {
	rc.t.Helper()
	d := map[string]any{"subscription_id": id, "patient_ids": patients}
	if len(types) > 0 {
		d["resource_types"] = types
	}
	rc.send("subscribe", d)
	if m := rc.expect("subscription"); m["data"].(map[string]any)["subscription_id"] != id {
		rc.t.Fatalf("subscription answer %v for %s", m, id)
	}
}

func (rc *roomClient) ping() {
	rc.t.Helper()
	rc.send("ping", nil)
	rc.expect("pong")
}

func TestRoomUpdateShape(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, env.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var welcome struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(b, &welcome); err != nil || welcome.Type != "welcome" || welcome.Data["server"] != "radbridge" || welcome.Data["auth_required"] != false {
		t.Fatalf("welcome %s", b)
	}
	rc := &roomClient{t: t, c: c}
	rc.ping()

	env.add(rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", "ImagingStudy", "old") // before the subscription: not sent
	rc.subscribe("s1", []string{"P1"}, "ImagingStudy", "ServiceRequest")
	env.add(rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P2", "ImagingStudy", "other-patient")
	env.add(rbv1.EventType_IMAGING_REPORT_READY, "P1", "DiagnosticReport", "other-type")
	want := env.add(rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", "ImagingStudy", "1.2.840.1")
	env.add(rbv1.EventType_ORDER_CANCELLED, "P1", "ServiceRequest", "ACC1")

	u := rc.expect("update")
	if ts, _ := u["timestamp"].(string); !strings.HasPrefix(ts, "2026-03-10T08:30:00") {
		t.Errorf("timestamp %q", ts)
	}
	wantData := map[string]any{
		"event_type": "imaging.study.available", "action": "created", "patient_id": "P1",
		"resource_type": "ImagingStudy", "resource_id": "1.2.840.1",
		"resource": map[string]any{"resourceType": "ImagingStudy", "id": "1.2.840.1", "status": "available", "note": "ü <&>"},
		"sequence": float64(want.Sequence), "event_id": want.Id, "time": "2026-03-10T08:30:00.000Z",
		"severity": "success", "priority": "stat", "message": "New imaging study available: CT CHEST",
		"accession_number": "ACC1", "subscription_id": "s1",
	}
	if d := cmp.Diff(u["data"], any(wantData)); d != "" {
		t.Errorf("update data (-got +want):\n%s", d)
	}
	if len(u) != 3 {
		t.Errorf("update has keys %v; want type, data, timestamp", u)
	}
	u = rc.expect("update")
	if d := u["data"].(map[string]any); d["event_type"] != "order.cancelled" || d["action"] != "updated" || d["resource_type"] != "ServiceRequest" {
		t.Errorf("second update %v", d)
	}
}

func TestRoomActions(t *testing.T) {
	for typ, want := range map[rbv1.EventType][2]string{
		rbv1.EventType_IMAGING_STUDY_AVAILABLE: {"imaging.study.available", "created"},
		rbv1.EventType_IMAGING_STUDY_UPDATED:   {"imaging.study.updated", "updated"},
		rbv1.EventType_IMAGING_STUDY_PROGRESS:  {"imaging.study.progress", "updated"},
		rbv1.EventType_RESULT_RECEIVED:         {"result.received", "created"},
		rbv1.EventType_IMAGING_REPORT_READY:    {"imaging.report.ready", "updated"},
		rbv1.EventType_ORDER_PLACED:            {"order.placed", "created"},
		rbv1.EventType_ORDER_UPDATED:           {"order.updated", "updated"},
		rbv1.EventType_ORDER_CANCELLED:         {"order.cancelled", "updated"},
		rbv1.EventType_IMAGING_STUDY_VIEWED:    {"imaging.study.viewed", "created"},
	} {
		var d map[string]any
		b := append(updatePrefix(&rbv1.Event{Type: typ, Sequence: 3}), `"x"}}`...)
		if err := json.Unmarshal(b, &struct {
			Data *map[string]any `json:"data"`
		}{&d}); err != nil {
			t.Fatalf("%v: %s: %v", typ, b, err)
		}
		if got := [2]string{d["event_type"].(string), d["action"].(string)}; got != want {
			t.Errorf("%v: %v; want %v", typ, got, want)
		}
		if d["severity"] != "info" || d["priority"] != "routine" || d["resource"] != nil {
			t.Errorf("%v without severity, priority, resource: %v", typ, d)
		}
	}
}

func TestRoomSeveralSubscriptions(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	rc := dialRoom(t, env.url, nil)
	rc.subscribe("a", []string{"P1"})
	rc.subscribe("b", []string{"P1", "P2"}, "ImagingStudy")
	rc.send("subscribe", map[string]any{"subscription_id": "b", "patient_ids": []string{"P3"}})
	if m := rc.expect("error", roomDuplicate); m["data"].(map[string]any)["subscription_id"] != "b" {
		t.Errorf("duplicate error %v", m)
	}

	ev := env.add(rbv1.EventType_IMAGING_STUDY_UPDATED, "P1", "ImagingStudy", "1.2.3")
	got := map[string]float64{}
	for range 2 {
		d := rc.expect("update")["data"].(map[string]any)
		got[d["subscription_id"].(string)] = d["sequence"].(float64)
	}
	if d := cmp.Diff(got, map[string]float64{"a": float64(ev.Sequence), "b": float64(ev.Sequence)}); d != "" {
		t.Errorf("one event, two subscriptions (-got +want):\n%s", d)
	}
	env.add(rbv1.EventType_IMAGING_STUDY_UPDATED, "P2", "ImagingStudy", "1.2.4")
	if d := rc.expect("update")["data"].(map[string]any); d["subscription_id"] != "b" || d["patient_id"] != "P2" {
		t.Errorf("P2 event %v", d)
	}

	rc.send("unsubscribe", map[string]any{"subscription_id": "a"})
	if m := rc.expect("unsubscribed"); m["data"].(map[string]any)["subscription_id"] != "a" {
		t.Errorf("unsubscribed %v", m)
	}
	rc.send("unsubscribe", map[string]any{"subscription_id": "a"})
	rc.expect("error", roomUnknownSub)
	env.add(rbv1.EventType_ORDER_PLACED, "P1", "ServiceRequest", "ACC9") // a would match; b filters it
	last := env.add(rbv1.EventType_IMAGING_STUDY_UPDATED, "P1", "ImagingStudy", "1.2.5")
	if d := rc.expect("update")["data"].(map[string]any); d["subscription_id"] != "b" || d["sequence"] != float64(last.Sequence) {
		t.Errorf("after unsubscribing a: %v", d)
	}
	rc.ping()                         // nothing of a's slipped in before the pong
	rc.subscribe("a", []string{"P1"}) // an id is free again after unsubscribe
}

func TestRoomSinceResumes(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	for i := range 4 {
		env.add(rbv1.EventType_IMAGING_STUDY_PROGRESS, "P1", "ImagingStudy", fmt.Sprint("s", i))
	}
	rc := dialRoom(t, env.url, nil)
	rc.send("subscribe", map[string]any{"subscription_id": "r", "patient_ids": []string{"P1"}, "since": "2"}) // as protojson writes it
	rc.expect("subscription")
	live := dialRoom(t, env.url, nil)
	live.subscribe("l", []string{"P1"})
	env.add(rbv1.EventType_IMAGING_STUDY_PROGRESS, "P1", "ImagingStudy", "s4")
	for _, want := range []float64{3, 4, 5} {
		if d := rc.expect("update")["data"].(map[string]any); d["sequence"] != want {
			t.Fatalf("resumed subscription: sequence %v; want %v", d["sequence"], want)
		}
	}
	if d := live.expect("update")["data"].(map[string]any); d["sequence"] != float64(5) {
		t.Errorf("live subscription starts with %v; want 5", d["sequence"])
	}
}

func TestRoomBadInput(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	rc := dialRoom(t, env.url, nil)
	many := make([]string, 51)
	for i := range many {
		many[i] = fmt.Sprint("P", i)
	}
	for _, tc := range []struct {
		name, msg, code string
	}{
		{"malformed JSON", `{"type":"subscribe",`, roomBadMessage},
		{"not an object", `[1,2]`, roomBadMessage},
		{"no type", `{"data":{}}`, roomBadMessage},
		{"unknown type", `{"type":"publish","data":{}}`, roomUnknownType},
		{"subscribe without data", `{"type":"subscribe"}`, roomBadMessage},
		{"patient_ids not a list", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":"P1"}}`, roomBadMessage},
		{"no subscription id", `{"type":"subscribe","data":{"patient_ids":["P1"]}}`, roomBadRequest},
		{"no patients", `{"type":"subscribe","data":{"subscription_id":"x"}}`, roomBadRequest},
		{"empty patient", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":[""]}}`, roomBadRequest},
		{"too many patients", fmt.Sprintf(`{"type":"subscribe","data":{"subscription_id":"x","patient_ids":%s}}`, jsonOf(many)), roomBadRequest},
		{"both patients and all", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":["P1"],"all_patients":true}}`, roomBadRequest},
		{"unknown resource type", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":["P1"],"resource_types":["Patient"]}}`, roomBadRequest},
		{"unknown event type", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":["P1"],"event_types":["imaging.nope"]}}`, roomBadRequest},
		{"future cursor", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":["P1"],"since":99}}`, roomOutOfRange},
		{"negative cursor", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":["P1"],"since":-1}}`, roomBadMessage},
		{"fractional cursor", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":["P1"],"since":1.5}}`, roomBadMessage},
		{"cursor not a number", `{"type":"subscribe","data":{"subscription_id":"x","patient_ids":["P1"],"since":"one"}}`, roomBadMessage},
		{"unsubscribe without id", `{"type":"unsubscribe"}`, roomBadMessage},
		{"unknown subscription", `{"type":"unsubscribe","data":{"subscription_id":"nope"}}`, roomUnknownSub},
	} {
		rc.sendRaw(tc.msg)
		m := rc.next()
		if m["type"] != "error" || m["error"] != tc.code || m["message"] == "" {
			t.Errorf("%s: got %v; want error %s with a message", tc.name, m, tc.code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rc.c.Write(ctx, websocket.MessageBinary, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	rc.expect("error", roomBadMessage)
	rc.ping() // still open
	rc.subscribe("x", []string{"P1"}, "ImagingStudy", "DiagnosticReport", "ServiceRequest")
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRoomOversizedFrame(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	rc := dialRoom(t, env.url, nil)
	other := dialRoom(t, env.url, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rc.c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping","data":"`+strings.Repeat("x", 70<<10)+`"}`))
	if code, reason, _ := rc.closed(); code != websocket.StatusMessageTooBig || reason == "" {
		t.Errorf("oversized frame: close %d %q; want 1009 with a reason", code, reason)
	}
	other.ping()
}

func TestRoomRateLimit(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	rc := dialRoom(t, env.url, nil)
	other := dialRoom(t, env.url, nil)
	go func() {
		for range 500 {
			if rc.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`)) != nil {
				return
			}
		}
	}()
	code, reason, msgs := rc.closed()
	pongs, limited := 0, 0
	for _, m := range msgs {
		switch {
		case m["type"] == "pong":
			pongs++
		case m["type"] == "error" && m["error"] == roomRateLimited:
			limited++
		default:
			t.Errorf("flood answered with %v", m)
		}
	}
	if code != websocket.StatusPolicyViolation || reason == "" || limited == 0 || pongs > 45 {
		t.Errorf("flood: close %d %q after %d pongs and %d RATE_LIMITED; want 1008, at most the burst of pongs, RATE_LIMITED", code, reason, pongs, limited)
	}
	other.ping()
}

func TestRoomSubscriptionLimit(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	rc := dialRoom(t, env.url, nil)
	for i := range 20 {
		rc.subscribe(fmt.Sprint("s", i), []string{"P1"})
	}
	rc.send("subscribe", map[string]any{"subscription_id": "s20", "patient_ids": []string{"P1"}})
	if m := rc.expect("error", roomSubLimit); m["data"].(map[string]any)["subscription_id"] != "s20" {
		t.Errorf("limit error %v", m)
	}
	rc.send("unsubscribe", map[string]any{"subscription_id": "s3"})
	rc.expect("unsubscribed")
	rc.subscribe("s20", []string{"P1"})
	ev := env.add(rbv1.EventType_ORDER_PLACED, "P1", "ServiceRequest", "A")
	seen := map[string]bool{}
	for range 20 {
		d := rc.expect("update")["data"].(map[string]any)
		if d["sequence"] != float64(ev.Sequence) {
			t.Fatalf("update %v", d)
		}
		seen[d["subscription_id"].(string)] = true
	}
	if len(seen) != 20 || seen["s3"] {
		t.Errorf("updates went to %v", seen)
	}
}

// fakeAuth knows a few tokens.
type fakeAuth map[string]*auth.Principal

func (f fakeAuth) Authenticate(_ context.Context, tok string) (*auth.Principal, error) {
	switch {
	case tok == "expired":
		return nil, auth.ErrTokenExpired
	case tok == "soon":
		return &auth.Principal{Subject: "short", Patients: []string{"P1"}, Expires: time.Now().Add(300 * time.Millisecond)}, nil
	case f[tok] != nil:
		return f[tok], nil
	}
	return nil, auth.ErrUnauthenticated
}

func TestRoomAuth(t *testing.T) {
	authn := fakeAuth{
		"admin":  {Subject: "admin"},
		"nurse":  {Subject: "nurse", Patients: []string{"P1"}},
		"nurse2": {Subject: "nurse2", Patients: []string{"P2"}},
	}
	env := newRoomEnv(t, HTTPConfig{Auth: authn}, nil)
	dialNoWelcome := func(url string, hdr http.Header) (*roomClient, map[string]any) {
		t.Helper()
		rc, w := dialRoomWelcome(t, url, hdr)
		if w["type"] != "welcome" {
			t.Fatalf("first message %v; want welcome", w)
		}
		return rc, w["data"].(map[string]any)
	}
	mustClose := func(name string, rc *roomClient, code string) {
		t.Helper()
		st, reason, msgs := rc.closed()
		if st != websocket.StatusPolicyViolation || reason != code || len(msgs) != 1 || msgs[0]["error"] != code {
			t.Errorf("%s: %v then close %d %q; want error %s and close 1008 %s", name, msgs, st, reason, code, code)
		}
	}

	t.Run("nothing before auth", func(t *testing.T) {
		rc, w := dialNoWelcome(env.url+"?token=admin&access_token=admin", nil) // never from the URL
		if w["auth_required"] != true || w["authenticated"] != false {
			t.Errorf("welcome %v", w)
		}
		rc.send("subscribe", map[string]any{"subscription_id": "x", "patient_ids": []string{"P1"}})
		mustClose("subscribe before auth", rc, roomAuthFailed)
	})
	t.Run("bad token", func(t *testing.T) {
		rc, _ := dialNoWelcome(env.url, nil)
		rc.send("auth", map[string]any{"token": "forged"})
		mustClose("bad token", rc, roomAuthFailed)
	})
	t.Run("expired token", func(t *testing.T) {
		rc, _ := dialNoWelcome(env.url, nil)
		rc.send("auth", map[string]any{"token": "expired"})
		mustClose("expired token", rc, roomTokenExpired)
	})
	t.Run("expired header token", func(t *testing.T) {
		rc, w := dialNoWelcome(env.url, http.Header{"Authorization": {"Bearer expired"}})
		if w["authenticated"] != false {
			t.Errorf("welcome %v", w)
		}
		rc.send("ping", nil)
		mustClose("expired header token", rc, roomTokenExpired)
	})
	t.Run("restricted principal", func(t *testing.T) {
		rc, _ := dialNoWelcome(env.url, nil)
		rc.send("auth", map[string]any{"token": "nurse"})
		rc.expect("authenticated")
		rc.send("subscribe", map[string]any{"subscription_id": "other", "patient_ids": []string{"P1", "P2"}})
		if m := rc.expect("error", roomForbidden); m["data"].(map[string]any)["subscription_id"] != "other" {
			t.Errorf("forbidden %v", m)
		}
		rc.send("subscribe", map[string]any{"subscription_id": "all", "all_patients": true})
		rc.expect("error", roomForbidden)
		rc.ping() // the socket stays open
		rc.subscribe("mine", []string{"P1"})
		env.add(rbv1.EventType_ORDER_PLACED, "P2", "ServiceRequest", "A2")
		ev := env.add(rbv1.EventType_ORDER_PLACED, "P1", "ServiceRequest", "A1")
		if d := rc.expect("update")["data"].(map[string]any); d["sequence"] != float64(ev.Sequence) {
			t.Errorf("update %v", d)
		}
		rc.send("auth", map[string]any{"token": "nurse2"}) // may not see the open subscription
		rc.expect("error", roomForbidden)
		rc.send("auth", map[string]any{"token": "nurse"}) // refreshed token
		rc.expect("authenticated")
	})
	t.Run("header and cookie", func(t *testing.T) {
		rc, w := dialNoWelcome(env.url, http.Header{"Authorization": {"Bearer admin"}})
		if w["authenticated"] != true {
			t.Errorf("welcome with a bearer header %v", w)
		}
		rc.send("subscribe", map[string]any{"subscription_id": "all", "all_patients": true})
		rc.expect("subscription")
		ev := env.add(rbv1.EventType_ORDER_PLACED, "P9", "ServiceRequest", "A9")
		if d := rc.expect("update")["data"].(map[string]any); d["sequence"] != float64(ev.Sequence) {
			t.Errorf("all_patients update %v", d)
		}
		rc, w = dialNoWelcome(env.url, http.Header{"Cookie": {"radbridge_token=nurse"}})
		if w["authenticated"] != true {
			t.Errorf("welcome with a cookie %v", w)
		}
		rc.send("subscribe", map[string]any{"subscription_id": "x", "patient_ids": []string{"P2"}})
		rc.expect("error", roomForbidden)
	})
	t.Run("token expires", func(t *testing.T) {
		rc, _ := dialNoWelcome(env.url, nil)
		rc.send("auth", map[string]any{"token": "soon"})
		rc.expect("authenticated")
		rc.subscribe("mine", []string{"P1"})
		mustClose("token expires", rc, roomTokenExpired)
	})
	t.Run("no auth message in time", func(t *testing.T) {
		env.h.lim.authWait = 200 * time.Millisecond
		defer func() { env.h.lim.authWait = 10 * time.Second }()
		rc, _ := dialNoWelcome(env.url, nil)
		mustClose("silent client", rc, roomAuthFailed)
	})
}

func TestRoomOrigin(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{OriginPatterns: []string{"ehr.example"}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for origin, ok := range map[string]bool{"https://ehr.example": true, "https://evil.example": false, "": true} {
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		c, resp, err := websocket.Dial(ctx, env.url, &websocket.DialOptions{HTTPHeader: hdr})
		if ok != (err == nil) {
			t.Errorf("Origin %q: %v; want allowed %v", origin, err, ok)
		}
		if err == nil {
			c.CloseNow()
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("Origin %q: response %v; want 403", origin, resp)
		}
	}
}

// TestRoomSlowConsumer: a client that stops reading falls out of the
// hub's window and is closed with 1013 and a cursor to resume from; the
// others go on.
func TestRoomSlowConsumer(t *testing.T) {
	env := newRoomEnvHub(t, HTTPConfig{}, fanout.Config{WindowEvents: 8}, func(l *roomLimits) { l.outbox = 1 })
	slow := dialRoom(t, env.url, nil)
	slow.subscribe("s", []string{"P1"})
	big := strings.Repeat("x", 32<<10)
	for i := range 300 {
		env.next++
		res, _ := structpb.NewStruct(map[string]any{"resourceType": "ImagingStudy", "text": big})
		if _, err := env.log.Append(context.Background(), eventlog.Key{IngestSeq: env.next}, &rbv1.Event{Type: rbv1.EventType_IMAGING_STUDY_PROGRESS, PatientId: "P1", ResourceType: "ImagingStudy", ResourceId: fmt.Sprint(i), Resource: res}); err != nil {
			t.Fatal(err)
		}
	}
	code, reason, msgs := slow.closed()
	var last float64
	for _, m := range msgs[:len(msgs)-1] {
		d := m["data"].(map[string]any)
		if m["type"] != "update" || d["sequence"].(float64) != last+1 {
			t.Fatalf("after sequence %v: %v", last, m["type"])
		}
		last = d["sequence"].(float64)
	}
	end := msgs[len(msgs)-1]
	resume := end["data"].(map[string]any)["resume"].(map[string]any)["s"]
	if code != websocket.StatusTryAgainLater || reason != fmt.Sprintf("too slow: resume with since=%v", last) || end["error"] != roomSlowConsumer || resume != last {
		t.Errorf("slow client: %d updates, then %v and close %d %q; want SLOW_CONSUMER and 1013 resume with since=%v", len(msgs)-1, end, code, reason, last)
	}
	dialRoom(t, env.url, nil).ping()
}

// TestRoomNoLeaks: connections with subscriptions, ended by the client in
// every way, leave no goroutine behind.
func TestRoomNoLeaks(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	time.Sleep(50 * time.Millisecond) // the environment's goroutines settle before the baseline: no state to wait for
	base := runtime.NumGoroutine()
	for i := range 6 {
		rc := dialRoom(t, env.url, nil)
		rc.subscribe("a", []string{"P1"})
		rc.subscribe("b", []string{"P2"}, "ImagingStudy")
		env.add(rbv1.EventType_IMAGING_STUDY_UPDATED, "P1", "ImagingStudy", "x")
		rc.expect("update")
		switch i % 3 {
		case 0:
			rc.c.Close(websocket.StatusNormalClosure, "bye")
		case 1:
			rc.c.CloseNow()
		case 2:
			// The server closes mid-frame; how the client sees that (close
			// frame or reset) does not matter here.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = rc.c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping","data":"`+strings.Repeat("x", 70<<10)+`"}`))
			for {
				if _, _, err := rc.c.Read(ctx); err != nil {
					break
				}
			}
			cancel()
			rc.c.CloseNow()
		}
	}
	testkit.Poll(10*time.Second, func() bool { return runtime.NumGoroutine() <= base })
	if n := runtime.NumGoroutine(); n > base || env.hub.Subscribers() != 0 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, %d before; %d hub subscribers\n%s", n, base, env.hub.Subscribers(), buf[:runtime.Stack(buf, true)])
	}
}

// TestRoomShutdown: Service.Stop ends room connections with 1001.
func TestRoomShutdown(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	rc := dialRoom(t, env.url, nil)
	rc.subscribe("a", []string{"P1"})
	env.svc.Stop()
	if code, _, _ := rc.closed(); code != websocket.StatusGoingAway {
		t.Errorf("shutdown: close %d; want 1001", code)
	}
}

// FuzzRoomMessage feeds arbitrary client frames (one per line) to a
// connection's message handler: every answer is a JSON message with a
// type, and nothing panics.
func FuzzRoomMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping"}`,
		`{"type":"auth","data":{"token":"x"}}`,
		`{"type":"subscribe","data":{"subscription_id":"a","patient_ids":["P1"],"resource_types":["ImagingStudy"],"since":0}}`,
		"{\"type\":\"subscribe\",\"data\":{\"subscription_id\":\"a\",\"patient_ids\":[\"P1\"]}}\n{\"type\":\"unsubscribe\",\"data\":{\"subscription_id\":\"a\"}}",
		`{"type":"subscribe","data":{"subscription_id":"a","all_patients":true,"event_types":["order.placed"]}}`,
		`{"type":"unsubscribe","data":{"subscription_id":null}}`,
		`{"type":"subscribe","data":{"since":1e99}}`, `{"type":5}`, `null`, `"ping"`, `{`, "\xff\xfe", `{"type":"subscribe","data":[]}`,
	} {
		f.Add(s)
	}
	log := eventlog.NewMemory()
	hub := fanout.New(log, fanout.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go hub.Run(ctx)
	if err := hub.WaitReady(ctx); err != nil {
		f.Fatal(err)
	}
	log.Append(ctx, eventlog.Key{IngestSeq: 1}, &rbv1.Event{Type: rbv1.EventType_ORDER_PLACED, PatientId: "P1", ResourceType: "ServiceRequest"})
	svc := NewService(log, hub, ingest.NewMemory(), nil, nil, nil)
	h := newRoomHandler(svc, HTTPConfig{})
	f.Fuzz(func(t *testing.T, in string) {
		cctx, ccancel := context.WithCancel(ctx)
		rc := &roomConn{h: h, ctx: cctx, cancel: ccancel, out: make(chan outMsg, 1024), closed: make(chan closeReq, 1),
			subs: map[string]*roomSub{}, principal: &auth.Principal{Subject: "anonymous"}, tokens: 1e9}
		lines := strings.Split(in, "\n")
		if len(lines) > 200 {
			lines = lines[:200] // each answer fits the outbox
		}
		for _, line := range lines {
			rc.handle([]byte(line))
		}
		ccancel()
		rc.wg.Wait()
		rc.stopTimers()
		close(rc.out)
		for m := range rc.out {
			var v struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal(m.b, &v); err != nil || v.Type == "" {
				t.Fatalf("answer %q to %q", m.b, in)
			}
		}
	})
}

// TestRoomEncodesEachEventOnce: N connections following one patient get
// one update each per event, each with its own subscription_id, while the
// update is encoded once per event; connections following another patient
// get none of those frames.
func TestRoomEncodesEachEventOnce(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	const n = 40
	var p1, p2 []*roomClient
	for i := range n {
		rc := dialRoom(t, env.url, nil)
		if i%4 == 3 {
			rc.subscribe(fmt.Sprintf("other-%d", i), []string{"P2"})
			p2 = append(p2, rc)
			continue
		}
		rc.subscribe(fmt.Sprintf("s-%d", i), []string{"P1"})
		p1 = append(p1, rc)
	}
	ev1 := env.add(rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", "ImagingStudy", "1.2.3")
	ev2 := env.add(rbv1.EventType_ORDER_PLACED, "P1", "ServiceRequest", "ACC9")
	ev3 := env.add(rbv1.EventType_ORDER_PLACED, "P2", "ServiceRequest", "ACC10")
	check := func(rc *roomClient, sub, patient string, seq uint64) {
		t.Helper()
		d := rc.expect("update")["data"].(map[string]any)
		if d["subscription_id"] != sub || d["patient_id"] != patient || d["sequence"] != float64(seq) {
			t.Errorf("%s got %v; want patient %s sequence %d", sub, d, patient, seq)
		}
	}
	for i, rc := range p1 {
		sub := fmt.Sprintf("s-%d", i+i/3)
		check(rc, sub, "P1", ev1.Sequence)
		check(rc, sub, "P1", ev2.Sequence)
	}
	for i, rc := range p2 {
		// The first update a P2 connection sees is P2's own event.
		check(rc, fmt.Sprintf("other-%d", 4*i+3), "P2", ev3.Sequence)
	}
	if got, want := env.h.updates.encodes.Load(), int64(3); got != want {
		t.Errorf("%d encodings for 3 events and %d connections; want %d", got, n, want)
	}
}

// TestUpdateCacheEncodesOnceConcurrently: many subscribers asking at once
// for a new entry's update share one encoding.
func TestUpdateCacheEncodesOnceConcurrently(t *testing.T) {
	var c updateCache
	c.init(4)
	res, _ := structpb.NewStruct(map[string]any{"resourceType": "ImagingStudy", "id": "1.2.3"})
	e := fanout.NewEntry(&rbv1.Event{Sequence: 7, PatientId: "P1", Type: rbv1.EventType_IMAGING_STUDY_AVAILABLE, Resource: res})
	const n = 200
	frames := make([][]byte, n)
	start := make(chan struct{})
	done := make(chan struct{})
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			id, _ := json.Marshal(fmt.Sprintf("sub-%d", i))
			frames[i] = c.encode(e, id)
		}()
	}
	close(start)
	for range n {
		<-done
	}
	if got := c.encodes.Load(); got != 1 {
		t.Errorf("%d encodings for one entry and %d subscribers; want 1", got, n)
	}
	for i, b := range frames {
		var m struct {
			Data struct {
				SubscriptionID string `json:"subscription_id"`
				Sequence       uint64 `json:"sequence"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("frame %d %s: %v", i, b, err)
		}
		if want := fmt.Sprintf("sub-%d", i); m.Data.SubscriptionID != want || m.Data.Sequence != 7 {
			t.Errorf("frame %d: %+v; want %s, sequence 7", i, m.Data, want)
		}
	}
}
