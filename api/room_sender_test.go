package api

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"radbridge/eventlog"
	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// TestRoomIdleConnectionGoroutines: an open room connection with a
// subscription, once it has been served an update and is idle, keeps one
// goroutine in the server (its reader): no handler, writer or follower
// goroutine, and no sender once the pooled ones have lingered out.
func TestRoomIdleConnectionGoroutines(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	// Senders of earlier tests linger for wsSenderLinger: let them end
	// before the baseline.
	stable := runtime.NumGoroutine()
	testkit.Poll(5*wsSenderLinger, func() bool {
		n := runtime.NumGoroutine()
		defer func() { stable = n }()
		return n == stable && n <= stable
	})
	base := runtime.NumGoroutine()
	const n = 40
	conns := make([]*roomClient, n)
	for i := range conns {
		conns[i] = dialRoom(t, env.url, nil)
		conns[i].subscribe(fmt.Sprint("s", i), []string{"P1"})
	}
	ev := env.add(rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", "ImagingStudy", "1.2.3")
	for _, rc := range conns {
		if d := rc.expect("update")["data"].(map[string]any); d["sequence"] != float64(ev.Sequence) {
			t.Fatalf("update %v", d)
		}
	}
	// The client side (coder/websocket's client connections) runs no
	// goroutine of its own either: every goroutine counted is the server's.
	ok := testkit.Poll(10*time.Second, func() bool { return runtime.NumGoroutine()-base <= n })
	if got := runtime.NumGoroutine() - base; !ok {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines for %d idle connections; want at most one each\n%s", got, n, buf[:runtime.Stack(buf, true)])
	}
	for _, rc := range conns {
		rc.ping() // still served
	}
}

// TestRoomOrderUnderBurst: client messages sent while events arrive are
// answered in the order sent, each subscription's updates come after its
// confirmation, in sequence and without gaps, and none of a subscription
// follows its "unsubscribed".
func TestRoomOrderUnderBurst(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	rc := dialRoom(t, env.url, nil)
	rc.subscribe("a", []string{"P1"})
	// Every 20th event, a client message (under the rate limit's burst).
	msgs := []struct {
		typ   string
		data  any
		reply string
	}{
		{"ping", nil, "pong"},
		{"subscribe", map[string]any{"subscription_id": "b", "patient_ids": []string{"P1"}, "since": 0}, "subscription"},
		{"ping", nil, "pong"},
		{"subscribe", map[string]any{"subscription_id": "a", "patient_ids": []string{"P1"}}, "error"},
		{"unsubscribe", map[string]any{"subscription_id": "a"}, "unsubscribed"},
		{"ping", nil, "pong"},
		{"subscribe", map[string]any{"subscription_id": "c", "patient_ids": []string{"P1"}}, "subscription"},
		{"ping", nil, "pong"},
		{"unsubscribe", map[string]any{"subscription_id": "nope"}, "error"},
		{"ping", nil, "pong"},
	}
	const events = 240
	for i := range events {
		if i%20 == 10 && i/20 < len(msgs) {
			// The events so far reach the hub (and so the subscriptions)
			// before the client message is sent.
			if !testkit.Poll(10*time.Second, func() bool { return env.hub.Head() >= uint64(i) }) {
				t.Fatalf("hub at %d; want %d", env.hub.Head(), i)
			}
			m := msgs[i/20]
			rc.send(m.typ, m.data)
		}
		env.add(rbv1.EventType_IMAGING_STUDY_PROGRESS, "P1", "ImagingStudy", fmt.Sprint("s", i))
	}

	var replies []string
	acked := map[string]bool{"a": true}
	gone := map[string]bool{}
	last := map[string]float64{"b": 0}
	cSince := float64(-1)
	for len(replies) < len(msgs) || last["b"] < events || cSince < 0 || max(cSince, last["c"]) < events {
		m, err := rc.read()
		if err != nil {
			t.Fatalf("after replies %v and last updates %v: %v", replies, last, err)
		}
		if m["type"] != "update" {
			replies = append(replies, m["type"].(string))
			if d, ok := m["data"].(map[string]any); ok {
				switch id, _ := d["subscription_id"].(string); m["type"] {
				case "subscription":
					acked[id] = true
					if id == "c" {
						cSince, _ = d["since"].(float64) // absent: 0
					}
				case "unsubscribed":
					gone[id] = true
				}
			}
			continue
		}
		d := m["data"].(map[string]any)
		id, seq := d["subscription_id"].(string), d["sequence"].(float64)
		switch {
		case !acked[id]:
			t.Fatalf("update %v of %s before its confirmation", seq, id)
		case gone[id]:
			t.Fatalf("update %v of %s after unsubscribed", seq, id)
		case last[id] != 0 && seq != last[id]+1 || id != "c" && last[id] == 0 && seq != 1 || id == "c" && last[id] == 0 && seq != cSince+1:
			t.Fatalf("%s: sequence %v after %v", id, seq, last[id])
		}
		last[id] = seq
	}
	var want []string
	for _, m := range msgs {
		want = append(want, m.reply)
	}
	if got, want := strings.Join(replies, " "), strings.Join(want, " "); got != want {
		t.Errorf("replies %s; want %s", got, want)
	}
	if last["a"] == 0 || last["c"] == 0 {
		t.Errorf("last updates %v; want some of a (before it was unsubscribed) and of c", last)
	}
	rc.ping() // nothing left over
}

// TestRoomSubscribeWhileSending: a subscription made while the sender is
// writing a backlog the client does not read yet (more than the socket
// buffers hold) gets its confirmation before its first update, and both
// subscriptions get every event in order.
func TestRoomSubscribeWhileSending(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, nil)
	rc := dialRoom(t, env.url, nil)
	rc.subscribe("a", []string{"P1"})
	const events = 64
	big := strings.Repeat("x", 256<<10)
	for i := range events {
		env.next++
		res, _ := structpb.NewStruct(map[string]any{"resourceType": "ImagingStudy", "text": big})
		if _, err := env.log.Append(context.Background(), eventlog.Key{IngestSeq: env.next}, &rbv1.Event{Type: rbv1.EventType_IMAGING_STUDY_PROGRESS, PatientId: "P1", ResourceType: "ImagingStudy", ResourceId: fmt.Sprint(i), Resource: res}); err != nil {
			t.Fatal(err)
		}
	}
	if !testkit.Poll(10*time.Second, func() bool { return env.hub.Head() == events }) {
		t.Fatalf("hub at %d; want %d", env.hub.Head(), events)
	}
	// 16 MB of updates for a: the sender is blocked writing them.
	rc.send("subscribe", map[string]any{"subscription_id": "b", "patient_ids": []string{"P1"}, "since": 0})
	last := map[string]float64{}
	acked := false
	for last["a"] < events || last["b"] < events {
		m := rc.next()
		if m["type"] == "subscription" {
			acked = true
			continue
		}
		if m["type"] != "update" {
			t.Fatalf("got %v", m)
		}
		d := m["data"].(map[string]any)
		id, seq := d["subscription_id"].(string), d["sequence"].(float64)
		if id == "b" && !acked {
			t.Fatalf("update %v of b before its confirmation", seq)
		}
		if seq != last[id]+1 {
			t.Fatalf("%s: sequence %v after %v", id, seq, last[id])
		}
		last[id] = seq
	}
	if !acked {
		t.Error("no confirmation for b")
	}
	rc.ping()
}

// TestRoomHeartbeat: an idle connection gets heartbeat messages (from a
// sender the heartbeat timer kicks), the first a heartbeat period after the
// last write, and stays served.
func TestRoomHeartbeat(t *testing.T) {
	env := newRoomEnv(t, HTTPConfig{}, func(l *roomLimits) { l.heartbeat = 100 * time.Millisecond })
	rc := dialRoom(t, env.url, nil)
	rc.subscribe("a", []string{"P1"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for beats := 0; beats < 3; {
		_, b, err := rc.c.Read(ctx)
		if err != nil {
			t.Fatalf("after %d heartbeats: %v", beats, err)
		}
		if !strings.HasPrefix(string(b), `{"type":"heartbeat"`) {
			t.Fatalf("idle connection got %s", b)
		}
		beats++
	}
	ev := env.add(rbv1.EventType_ORDER_PLACED, "P1", "ServiceRequest", "A1")
	if d := rc.expect("update")["data"].(map[string]any); d["sequence"] != float64(ev.Sequence) {
		t.Errorf("update %v", d)
	}
}
