package app_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// scraped is one parsed /metrics page.
type scraped struct {
	raw []byte
	mfs map[string]*dto.MetricFamily
}

// scrape GETs url (with a bearer token when set) and parses the text
// exposition format.
func scrape(t *testing.T, url, token string) scraped {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("GET %s: not the Prometheus text format: %v\n%s", url, err, b)
	}
	return scraped{raw: b, mfs: mfs}
}

// value is the sum of the samples of metric name whose labels include
// labels (name=value pairs); a histogram counts its observations.
func (s scraped) value(name string, labels ...string) float64 {
	mf := s.mfs[name]
	if mf == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range mf.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

func (s scraped) has(name string) bool { return s.mfs[name] != nil }

// lint fails t on every promlint problem in the page.
func (s scraped) lint(t *testing.T) {
	t.Helper()
	problems, err := promlint.New(bytes.NewReader(s.raw)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// metricNames lists the radbridge_ families of a page.
func (s scraped) metricNames() []string {
	var out []string
	for name := range s.mfs {
		if strings.HasPrefix(name, "radbridge_") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// TestMetricsEndpoint: /metrics on the HTTP front needs a token when auth
// is on (and an unrestricted one); --metrics-addr serves the same registry
// without one. An ORM^O01 answered AA and an order without PID-3 answered
// AE are counted by type and code.
func TestMetricsEndpoint(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("ops-token-0123456789 ops\nnurse-token-0123456789 nurse patient=P1\n"), 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens, "--metrics-addr", "127.0.0.1:0")
	front := "http://" + d.HTTPAddr() + "/metrics"
	if code, _ := httpDo(t, "GET", front, "", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a token: %d, want 401", code)
	}
	if code, _ := httpDo(t, "GET", front, "nurse-token-0123456789", ""); code != http.StatusForbidden {
		t.Errorf("GET /metrics with a patient-limited token: %d, want 403", code)
	}
	before := scrape(t, front, "ops-token-0123456789")

	ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "order", strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "MET-1")))
	if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AA" {
		t.Fatalf("order: ACK %q, want AA", ack.Bytes())
	}
	ack = testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "no-pid3", "MSH|^~\\&|RADRIS|NW|RADBRIDGE|IMG|20260310||ORM^O01|MET-2|P|2.3\nPID|1||||X^Y\nORC|NW|P1|F1\nOBR|1|P1|F1|71250^CT CHEST"))
	if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AE" {
		t.Fatalf("order without PID-3: ACK %q, want AE", ack.Bytes())
	}

	after := scrape(t, front, "ops-token-0123456789")
	sep := scrape(t, "http://"+d.MetricsAddr()+"/metrics", "")
	for _, s := range []scraped{after, sep} {
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"radbridge_hl7_messages_total", []string{"message_type", "ORM^O01", "ack_code", "AA"}, 1},
			{"radbridge_hl7_messages_total", []string{"message_type", "ORM^O01", "ack_code", "AE"}, 1},
			{"radbridge_hl7_messages_total", nil, 2},
			{"radbridge_mllp_connections_total", nil, 2},
		} {
			if got := s.value(c.name, c.labels...) - before.value(c.name, c.labels...); got != c.want {
				t.Errorf("%s%v went up by %v, want %v", c.name, c.labels, got, c.want)
			}
		}
		for _, name := range []string{"radbridge_build_info", "radbridge_start_time_seconds", "go_goroutines", "process_resident_memory_bytes"} {
			if !s.has(name) {
				t.Errorf("no %s", name)
			}
		}
		s.lint(t)
	}
}

// waitMetric scrapes until metric name (with labels) equals want, for at
// most 30 s; it returns the last page. It fails the test otherwise.
func waitMetric(t *testing.T, url, name string, want float64, labels ...string) scraped {
	t.Helper()
	var s scraped
	if !testkit.Poll(30*time.Second, func() bool { s = scrape(t, url, ""); return s.value(name, labels...) == want }) {
		t.Fatalf("%s%v stayed %v, want %v", name, labels, s.value(name, labels...), want)
	}
	return s
}

// TestMetricsAfterRealTraffic: a RIS (mllp_send) sends an order, a PACS
// (DCMTK) verifies and stores a three-instance study, one gRPC subscriber
// follows along. /metrics then says exactly what happened: one ORM^O01
// answered AA, one accepted association with three successful C-STOREs and
// one C-ECHO, a rejected one with its reason, each event the subscriber
// received counted by type and in the ingest-to-event histogram, one
// gRPC subscriber, no lag, and the study in the quiet-period queue until
// it is available.
func TestMetricsAfterRealTraffic(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	testkit.Peer(t, "storescu")
	studies := t.TempDir()
	makeStudy(t, studies, studyUID, 1, 3, 1)
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING", "--study-quiet-period", "5s")
	url := "http://" + d.HTTPAddr() + "/metrics"
	before := scrape(t, url, "")
	if got := before.value("radbridge_subscribers", "transport", "grpc"); got != 0 {
		t.Fatalf("grpc subscribers before any: %v", got)
	}

	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitMetric(t, url, "radbridge_subscribers", 1, "transport", "grpc")
	seen := map[string]float64{}
	var lastSeen uint64
	next := func() *rbv1.Event {
		t.Helper()
		ev := nextEvent(t, sub)
		seen[ev.Type.String()]++
		lastSeen = ev.Sequence
		return ev
	}

	ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "order", strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "MET-10")))
	if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AA" {
		t.Fatalf("order: ACK %q, want AA", ack.Bytes())
	}
	if ev := next(); ev.Type != rbv1.EventType_ORDER_PLACED {
		t.Fatalf("first event %v, want ORDER_PLACED", ev.Type)
	}

	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "echoscu", "-aet", "PACS", "-aec", "RADBRIDGE", host, port); err != nil {
		t.Fatalf("echoscu: %v\n%s", err, out)
	}
	if out, err := dcmtk(t, "echoscu", "-aet", "PACS", "-aec", "SOMEONE", host, port); err == nil {
		t.Fatalf("echoscu to a wrong called AE succeeded\n%s", out)
	}
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, studies); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	// Stored, not yet quiet for 5 s: one study waits.
	waitMetric(t, url, "radbridge_mapper_quiet_period_studies", 1)
	for {
		if ev := next(); ev.Type == rbv1.EventType_IMAGING_STUDY_AVAILABLE {
			break
		}
	}
	// The mapper has applied the timer that made the study available.
	after := waitMetric(t, url, "radbridge_mapper_lag_records", 0)
	after = waitMetric(t, url, "radbridge_mapper_quiet_period_studies", 0)
	// The subscriber takes every event up to the end of the log (the last
	// observation may have made more than one).
	for lastSeen < uint64(after.value("radbridge_events_last_sequence")) {
		next()
	}

	delta := func(name string, labels ...string) float64 {
		return after.value(name, labels...) - before.value(name, labels...)
	}
	var events float64
	for typ, n := range seen {
		events += n
		if got := delta("radbridge_events_emitted_total", "type", typ); got != n {
			t.Errorf("radbridge_events_emitted_total{type=%q} went up by %v; the subscriber received %v", typ, got, n)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"radbridge_hl7_messages_total", []string{"message_type", "ORM^O01", "ack_code", "AA"}, 1},
		{"radbridge_hl7_messages_total", nil, 1},
		{"radbridge_dicom_associations_total", []string{"result", "accepted"}, 2},
		{"radbridge_dicom_associations_total", []string{"result", "rejected"}, 1},
		{"radbridge_dicom_associations_rejected_total", []string{"reason", "called_ae_not_recognized"}, 1},
		{"radbridge_dicom_associations_aborted_total", nil, 0},
		{"radbridge_dicom_echoes_total", nil, 1},
		{"radbridge_dicom_instances_total", []string{"status_class", "success"}, 3},
		{"radbridge_dicom_instances_total", []string{"status_class", "failure"}, 0},
		{"radbridge_ingest_observations_total", []string{"front", "mllp", "kind", "hl7.message", "result", "recorded"}, 1},
		{"radbridge_ingest_observations_total", []string{"front", "dimse", "kind", "dicom.instance", "result", "recorded"}, 3},
		{"radbridge_ingest_observations_total", []string{"front", "mapper", "kind", "mapper.timer", "result", "recorded"}, 1},
		{"radbridge_ingest_observations_total", []string{"result", "failed"}, 0},
		{"radbridge_store_append_duration_seconds", []string{"stream", "ingest"}, 5},
		{"radbridge_store_append_duration_seconds", []string{"stream", "events"}, events},
		{"radbridge_events_emitted_total", nil, events},
		{"radbridge_ingest_to_event_seconds", nil, events},
		{"radbridge_mapper_observations_total", []string{"outcome", "mapped"}, 5},
		{"radbridge_mapper_observations_total", []string{"outcome", "failed"}, 0},
		{"radbridge_subscribers", []string{"transport", "grpc"}, 1},
		{"radbridge_subscribers", nil, 1},
		{"radbridge_subscriber_slow_disconnects_total", nil, 0},
		{"radbridge_read_model_write_failures_total", nil, 0},
		{"radbridge_mllp_connections_open", nil, 0},
		{"radbridge_dicom_associations_open", nil, 0},
	} {
		if got := delta(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v went up by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := after.value("radbridge_dicom_received_bytes_total"); got < 3*1024 {
		t.Errorf("radbridge_dicom_received_bytes_total %v, want the three instances' bytes", got)
	}
	if events < 3 { // ORDER_PLACED, progress, IMAGING_STUDY_AVAILABLE at least
		t.Errorf("subscriber received %v events: %v", events, seen)
	}
	for name, want := range map[string]float64{"radbridge_mapper_leader": 1, "radbridge_mapper_ready": 1, "radbridge_store_up": 1} {
		if got := after.value(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if a, h := after.value("radbridge_mapper_applied_sequence"), after.value("radbridge_ingest_last_sequence"); a != h || a != 5 {
		t.Errorf("applied %v, ingest head %v; want both 5", a, h)
	}
	if got, want := after.value("radbridge_events_last_sequence"), events; got != want {
		t.Errorf("radbridge_events_last_sequence = %v, want %v", got, want)
	}
	// No patient data in label values (names, ids, accession, UIDs).
	for _, secret := range []string{"MRN4711", "998877665", "ACC1001", studyUID, "MÜLLER", "PACS"} {
		if bytes.Contains(after.raw, []byte(secret)) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
	after.lint(t)
	t.Logf("radbridge metrics: %s", strings.Join(after.metricNames(), " "))

	// The example alerting rules name only metrics that exist.
	rules, err := os.ReadFile("../../docs/prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(rules, &doc); err != nil || len(doc.Groups) == 0 || len(doc.Groups[0].Rules) == 0 {
		t.Fatalf("docs/prometheus-alerts.yml: %v, %d groups", err, len(doc.Groups))
	}
	for _, r := range doc.Groups[0].Rules {
		if r.Alert == "" || r.Expr == "" {
			t.Errorf("docs/prometheus-alerts.yml: rule %+v without alert or expr", r)
		}
	}
	for _, name := range regexp.MustCompile(`radbridge_[a-z0-9_]+`).FindAllString(string(rules), -1) {
		family := strings.TrimSuffix(name, "_bucket")
		if !after.has(family) {
			t.Errorf("docs/prometheus-alerts.yml uses %s, which the daemon does not export", name)
		}
	}
}
