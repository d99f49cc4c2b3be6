package api

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"radbridge/eventlog"
	"radbridge/fanout"
	rbv1 "radbridge/proto/radbridge/v1"
)

// TestSubscribeStop: Stop ends an open Subscribe stream with UNAVAILABLE
// and the cursor to resume from, in the message and the trailer.
func TestSubscribeStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := eventlog.NewMemory()
	for i := 1; i <= 3; i++ {
		if _, err := l.Append(ctx, eventlog.Key{IngestSeq: uint64(i)}, &rbv1.Event{Type: rbv1.EventType_ORDER_PLACED, PatientId: "P1"}); err != nil {
			t.Fatal(err)
		}
	}
	svc, _ := testService(ctx, t, l)
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	rbv1.RegisterEventServiceServer(srv, svc)
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st, err := rbv1.NewEventServiceClient(cc).Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"P1"}})
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 3; want++ {
		ev, err := st.Recv()
		if err != nil || ev.GetSequence() != want {
			t.Fatalf("event %d: %v, %v", want, ev, err)
		}
	}
	svc.Stop()
	_, err = st.Recv()
	if s := status.Convert(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "resume with since_sequence=3") {
		t.Fatalf("after Stop: %v; want UNAVAILABLE, resume with since_sequence=3", err)
	}
	if got := st.Trailer().Get("radbridge-resume-since"); len(got) != 1 || got[0] != "3" {
		t.Errorf("trailer radbridge-resume-since %v, want [3]", got)
	}
}

// testService returns a Service (without ingest, mapper or read models:
// enough for the streams) over l, with its hub running until the test ends.
func testService(ctx context.Context, t *testing.T, l eventlog.Log) (*Service, *fanout.Hub) {
	t.Helper()
	hub := fanout.New(l, fanout.Config{WindowEvents: 64})
	hctx, stopHub := context.WithCancel(ctx)
	t.Cleanup(stopHub)
	go hub.Run(hctx)
	if err := hub.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return NewService(l, hub, nil, nil, nil, nil), hub
}
