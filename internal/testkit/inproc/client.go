package inproc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	rbv1 "radbridge/proto/radbridge/v1"
)

// EventClient returns a client of the gRPC event service at addr (without
// TLS), closed when the test ends.
func EventClient(tb testing.TB, addr string) (rbv1.EventServiceClient, *grpc.ClientConn) {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return rbv1.NewEventServiceClient(conn), conn
}

// Publish posts an IMAGING_STUDY_VIEWED of patient and study to the REST
// API at base (http://host:port, without auth) and returns the event.
func Publish(tb testing.TB, base, patient, study string) map[string]any {
	tb.Helper()
	body := fmt.Sprintf(`{"type":"IMAGING_STUDY_VIEWED","patient_id":%q,"study_instance_uid":%q,"viewer_name":"Dr Test"}`, patient, study)
	resp, err := http.Post(base+"/v1/events", "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var ev map[string]any
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		tb.Fatalf("POST /v1/events: %d %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		tb.Fatal(err)
	}
	return ev
}
