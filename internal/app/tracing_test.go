package app_test

import (
	"bytes"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"radbridge/internal/testkit"
)

// otlpReceiver is the receiving end of OTLP/HTTP (protobuf), as a
// collector's otlphttp receiver: it decodes every export request.
type otlpReceiver struct {
	mu    sync.Mutex
	raw   [][]byte
	spans []*tracepb.Span
	svc   []string
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	var req coltracepb.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(b, &req) != nil {
		http.Error(w, "want OTLP protobuf on /v1/traces", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	o.raw = append(o.raw, b)
	for _, rs := range req.ResourceSpans {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				o.svc = append(o.svc, kv.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (o *otlpReceiver) find(name string) *tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.spans {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// TestTracingExportsIngestAndMapperSpans: with --otel-endpoint, an order
// sent with mllp_send becomes a trace exported over OTLP/HTTP: a span for
// recording it in the ingest log (front mllp) and, as its child, the
// mapper's span with the ORDER_PLACED event. No patient data is exported.
func TestTracingExportsIngestAndMapperSpans(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // export every 50 ms instead of 5 s
	rcv := &otlpReceiver{}
	collector := httptest.NewServer(rcv)
	defer collector.Close()
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING", "--otel-endpoint", collector.URL)
	ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "order", strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "TR-1")))
	if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AA" {
		t.Fatalf("order: ACK %q, want AA", ack.Bytes())
	}
	var in, mp *tracepb.Span
	testkit.Poll(30*time.Second, func() bool {
		in, mp = rcv.find("radbridge.ingest hl7.message"), rcv.find("radbridge.map hl7.message")
		return mp != nil
	})
	if in == nil || mp == nil {
		t.Fatalf("spans received: ingest %v, map %v", in != nil, mp != nil)
	}
	if !bytes.Equal(mp.TraceId, in.TraceId) || !bytes.Equal(mp.ParentSpanId, in.SpanId) {
		t.Errorf("map span (trace %s, parent %s) is not the child of the ingest span (trace %s, span %s)",
			hex.EncodeToString(mp.TraceId), hex.EncodeToString(mp.ParentSpanId), hex.EncodeToString(in.TraceId), hex.EncodeToString(in.SpanId))
	}
	attrs := map[string]string{}
	for _, kv := range in.Attributes {
		attrs[kv.Key] = kv.GetValue().GetStringValue()
	}
	if attrs["radbridge.front"] != "mllp" || attrs["radbridge.kind"] != "hl7.message" {
		t.Errorf("ingest span attributes %v", in.Attributes)
	}
	if len(mp.Events) != 1 || mp.Events[0].Name != "event appended" || mp.Events[0].Attributes[0].GetValue().GetStringValue() != "ORDER_PLACED" {
		t.Errorf("map span events %v, want one ORDER_PLACED", mp.Events)
	}
	if in.StartTimeUnixNano > mp.StartTimeUnixNano || mp.EndTimeUnixNano < mp.StartTimeUnixNano {
		t.Errorf("span times: ingest starts %d, map %d-%d", in.StartTimeUnixNano, mp.StartTimeUnixNano, mp.EndTimeUnixNano)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.svc) == 0 || rcv.svc[0] != "radbridge" {
		t.Errorf("service.name %v", rcv.svc)
	}
	for _, b := range rcv.raw {
		for _, secret := range []string{"MRN4711", "998877665", "ACC1001", "MÜLLER", "TR-1"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("exported spans contain %q", secret)
			}
		}
	}
}
