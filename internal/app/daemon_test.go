package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"radbridge/internal/app"
	"radbridge/internal/testkit"
	"radbridge/internal/testkit/inproc"
	rbv1 "radbridge/proto/radbridge/v1"
)

// startDaemon runs radbridge in-process on loopback ports 0 and waits until
// it is ready.
func startDaemon(t *testing.T, dir string, extra ...string) *app.Daemon {
	t.Helper()
	return inproc.Start(t, dir, nil, extra...).Daemon
}

func startDaemonLog(t *testing.T, dir string, log *slog.Logger, extra ...string) *app.Daemon {
	t.Helper()
	return inproc.Start(t, dir, log, extra...).Daemon
}

// runApp runs a radbridge command in-process.
func runApp(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return inproc.Run(t, args...)
}

func grpcClient(t *testing.T, addr string) (rbv1.EventServiceClient, *grpc.ClientConn) {
	t.Helper()
	return inproc.EventClient(t, addr)
}

// publish posts an IMAGING_STUDY_VIEWED through REST and returns the event.
func publish(t *testing.T, base, patient, study string) map[string]any {
	t.Helper()
	return inproc.Publish(t, base, patient, study)
}

// TestPublishedEventReachesEveryFront: an event published over REST comes
// back from GET /v1/events, a WebSocket stream and a gRPC subscriber that
// were open before it, and from GetPatientImaging's as_of sequence.
func TestPublishedEventReachesEveryFront(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	base := "http://" + d.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	client, conn := grpcClient(t, d.GRPCAddr())
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "radbridge.v1.EventService"})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health: %v %v", hc, err)
	}
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"P-77"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Header(); err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(ctx, "ws://"+d.HTTPAddr()+"/v1/events:stream?patient_id=P-77&since=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()

	publish(t, base, "OTHER", "1.2.9") // filtered out everywhere below
	ev := publish(t, base, "P-77", "1.2.840.1")
	if ev["sequence"] != "2" || ev["type"] != "IMAGING_STUDY_VIEWED" || ev["resource_type"] != "AuditEvent" {
		t.Fatalf("published event = %v", ev)
	}

	got, err := sub.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got.Sequence != 2 || got.PatientId != "P-77" || got.StudyInstanceUid != "1.2.840.1" || got.Resource.Fields["resourceType"].GetStringValue() != "AuditEvent" {
		t.Errorf("gRPC subscriber got %v", got)
	}
	_, msg, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wev map[string]any
	json.Unmarshal(msg, &wev)
	if wev["sequence"] != "2" || wev["patient_id"] != "P-77" || wev["id"] != ev["id"] {
		t.Errorf("WebSocket got %s", msg)
	}

	code, list := testkit.GetJSON(t, base+"/v1/events?patient_id=P-77")
	evs, _ := list["events"].([]any)
	if code != 200 || len(evs) != 1 || evs[0].(map[string]any)["id"] != ev["id"] {
		t.Errorf("GET /v1/events?patient_id=P-77 = %d %v", code, list)
	}
	code, list = testkit.GetJSON(t, base+"/v1/events?type=imaging.study.viewed&since=1")
	if evs, _ := list["events"].([]any); code != 200 || len(evs) != 1 {
		t.Errorf("GET /v1/events with a dotted type and since=1 = %d %v", code, list)
	}
	code, snap := testkit.GetJSON(t, base+"/v1/patients/P-77/imaging")
	if code != 200 || snap["as_of_sequence"] != "2" {
		t.Errorf("GetPatientImaging = %d %v; want as_of_sequence 2", code, snap)
	}
}

// TestBadInputGetsPreciseStatus covers the API's bad input: codes over
// gRPC and their HTTP mappings over REST, and nothing written.
func TestBadInputGetsPreciseStatus(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	base := "http://" + d.HTTPAddr()
	publish(t, base, "P1", "1.2.3")
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/events?patient=P1", "", 400},            // unknown filter
		{"GET", "/v1/events?since=-1", "", 400},              // negative cursor
		{"GET", "/v1/events?since=999", "", 400},             // future cursor: OUT_OF_RANGE
		{"GET", "/v1/events?type=NOT_A_TYPE", "", 400},       // unknown type
		{"GET", "/v1/events?resource_type=Patient", "", 400}, // unknown resource type
		{"GET", "/v1/events?page_size=5000", "", 400},        // page too big
		{"GET", "/v1/patients/nobody/imaging", "", 404},      // unknown patient
		{"POST", "/v1/events", `{"type":"IMAGING_REPORT_READY","patient_id":"P1","study_instance_uid":"1.2"}`, 403},
		{"POST", "/v1/events", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"P1"}`, 400},
		{"POST", "/v1/events", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"P1","study_instance_uid":"not-a-uid"}`, 400},
		{"POST", "/v1/events", `{"type":"IMAGING_STUDY_VIEWED",`, 400},
		{"POST", "/v1/events", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"P1","study_instance_uid":"1.2","bogus":1}`, 400},
		{"POST", "/v1/events", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"` + strings.Repeat("x", 70<<10) + `"}`, 413},
		{"GET", "/v1/events:stream?since=999", "", 400},
		{"GET", "/v1/events:stream?patient=P1", "", 400},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		if tc.method == "POST" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: HTTP %d %s; want %d", tc.method, tc.path[:min(len(tc.path), 60)], resp.StatusCode, b, tc.want)
		}
	}
	// A state-changing request needs its declared type.
	if resp, err := http.Post(base+"/v1/events", "text/plain", strings.NewReader(`{"type":"IMAGING_STUDY_VIEWED","patient_id":"P1","study_instance_uid":"1.2"}`)); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("POST /v1/events as text/plain: HTTP %d; want 415", resp.StatusCode)
	}
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		req  *rbv1.SubscribeRequest
		want codes.Code
	}{
		{"future cursor", &rbv1.SubscribeRequest{SinceSequence: 50}, codes.OutOfRange},
		{"unknown type", &rbv1.SubscribeRequest{Type: []rbv1.EventType{99}}, codes.InvalidArgument},
		{"unknown resource type", &rbv1.SubscribeRequest{ResourceType: []string{"Observation"}}, codes.InvalidArgument},
		{"from_now with cursor", &rbv1.SubscribeRequest{FromNow: true, SinceSequence: 1}, codes.InvalidArgument},
		{"empty patient id", &rbv1.SubscribeRequest{PatientId: []string{""}}, codes.InvalidArgument},
	} {
		s, err := client.Subscribe(ctx, tc.req)
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != tc.want {
			t.Errorf("Subscribe %s: %v; want %v", tc.name, err, tc.want)
		}
	}
	if _, err := client.PublishEvent(ctx, &rbv1.PublishEventRequest{Type: rbv1.EventType_ORDER_PLACED, PatientId: "P1", StudyInstanceUid: "1.2"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("forged ORDER_PLACED: %v; want PermissionDenied", err)
	}
	if _, err := client.PublishEvent(ctx, &rbv1.PublishEventRequest{Type: rbv1.EventType_IMAGING_STUDY_VIEWED, PatientId: strings.Repeat("x", 100<<10), StudyInstanceUid: "1.2"}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized publish: %v; want ResourceExhausted", err)
	}
	resp, err := client.ListEvents(ctx, &rbv1.ListEventsRequest{})
	if err != nil || len(resp.Events) != 1 || resp.LastSequence != 1 {
		t.Errorf("after the bad requests the log holds %v (%v); want the one good event", resp, err)
	}
}

// TestSubscribersHandOverFromCatchUpToLive: subscribers join at different
// cursors while events are being published; each receives exactly the
// events after its cursor, in order, over gRPC and WebSocket.
func TestSubscribersHandOverFromCatchUpToLive(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--subscriber-window", "16")
	base := "http://" + d.HTTPAddr()
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 40; i++ {
		publish(t, base, "P1", fmt.Sprintf("1.2.%d", i))
	}
	const total = 80
	var wg sync.WaitGroup
	check := func(name string, since uint64, seqs []uint64) {
		if len(seqs) != int(total-since) {
			t.Errorf("%s since %d: %d events, want %d", name, since, len(seqs), total-since)
			return
		}
		for i, s := range seqs {
			if s != since+uint64(i)+1 {
				t.Errorf("%s since %d: position %d has sequence %d", name, since, i, s)
				return
			}
		}
	}
	for _, since := range []uint64{0, 5, 30, 39} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{SinceSequence: since})
			if err != nil {
				t.Error(err)
				return
			}
			var seqs []uint64
			for len(seqs) < int(total-since) {
				ev, err := s.Recv()
				if err != nil {
					t.Errorf("gRPC since %d: %v", since, err)
					return
				}
				if !ev.Heartbeat {
					seqs = append(seqs, ev.Sequence)
				}
			}
			check("gRPC", since, seqs)
		}()
		go func() {
			defer wg.Done()
			c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/v1/events:stream?since=%d", d.HTTPAddr(), since), nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.CloseNow()
			var seqs []uint64
			for len(seqs) < int(total-since) {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Errorf("WebSocket since %d: %v", since, err)
					return
				}
				var ev struct {
					Sequence  string `json:"sequence"`
					Heartbeat bool   `json:"heartbeat"`
				}
				json.Unmarshal(b, &ev)
				if !ev.Heartbeat {
					var n uint64
					fmt.Sscan(ev.Sequence, &n)
					seqs = append(seqs, n)
				}
			}
			check("WebSocket", since, seqs)
		}()
	}
	for i := 40; i < total; i++ {
		publish(t, base, "P1", fmt.Sprintf("1.2.%d", i))
	}
	wg.Wait()
}

func TestIdleStreamGetsHeartbeats(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{HeartbeatSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := s.Recv()
	if err != nil || !ev.Heartbeat || ev.Sequence != 0 {
		t.Fatalf("idle stream sent %v, %v; want a heartbeat", ev, err)
	}
}

func TestDuplicatePublishIsOneEvent(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &rbv1.PublishEventRequest{Type: rbv1.EventType_IMAGING_STUDY_VIEWED, PatientId: "P1", StudyInstanceUid: "1.2.3", ClientEventId: "view-42"}
	a, err := client.PublishEvent(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.PublishEvent(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if a.Sequence != b.Sequence || a.Id != b.Id {
		t.Errorf("retried publish gave %d/%s, first %d/%s", b.Sequence, b.Id, a.Sequence, a.Id)
	}
	resp, _ := client.ListEvents(ctx, &rbv1.ListEventsRequest{})
	if len(resp.GetEvents()) != 1 {
		t.Errorf("log holds %d events after a retried publish, want 1", len(resp.GetEvents()))
	}
}
