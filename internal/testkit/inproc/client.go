package inproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"radbridge/internal/cli"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Run runs a radbridge command (cli.Run) in this process, for at most a
// minute, and returns its exit code and output.
func Run(tb testing.TB, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code = cli.Run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

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
	return PublishJSON(tb, base, fmt.Sprintf(`{"type":"IMAGING_STUDY_VIEWED","patient_id":%q,"study_instance_uid":%q,"viewer_name":"Dr Test"}`, patient, study))
}

// PublishJSON posts the event body (JSON) to the REST API at base
// (http://host:port, without auth) and returns the event.
func PublishJSON(tb testing.TB, base, body string) map[string]any {
	tb.Helper()
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
