package api

import (
	"net/url"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"

	rbv1 "radbridge/proto/radbridge/v1"
)

// FuzzQuery feeds raw query strings to the WebSocket stream's parser and
// the gateway's strict query parser: they answer with an error or a
// request, never a panic.
func FuzzQuery(f *testing.F) {
	for _, s := range []string{
		"patient_id=P1&since=5", "type=imaging.study.available&type=ORDER_PLACED", "since=-1", "since=99999999999999999999",
		"resource_type=ImagingStudy&heartbeat_seconds=3601", "from_now=true", "patient_id=%00%ff", "a.b.c=1", "page_size=1&since=2",
	} {
		f.Add(s)
	}
	ws := &wsStream{}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		if r, err := ws.parse(v); err == nil && r == nil {
			t.Fatal("nil request without error")
		}
		_ = strictQuery{}.Parse(&rbv1.ListEventsRequest{}, v, utilities.NewDoubleArray(nil))
		_ = strictQuery{}.Parse(&rbv1.GetPatientImagingRequest{}, v, utilities.NewDoubleArray([][]string{{"patient_id"}}))
	})
}
