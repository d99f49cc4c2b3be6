package app_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
	bin := needPeer(t, "mllp_send")
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

	ack := mllpSend(t, bin, d.MLLPAddr(), writeHL7(t, "order", strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "MET-1")))
	if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AA" {
		t.Fatalf("order: ACK %q, want AA", ack.Bytes())
	}
	ack = mllpSend(t, bin, d.MLLPAddr(), writeHL7(t, "no-pid3", "MSH|^~\\&|RADRIS|NW|RADBRIDGE|IMG|20260310||ORM^O01|MET-2|P|2.3\nPID|1||||X^Y\nORC|NW|P1|F1\nOBR|1|P1|F1|71250^CT CHEST"))
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
