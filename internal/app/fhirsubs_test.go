package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	"radbridge/fhir/subscription"
	"radbridge/internal/testkit"
)

// fhirDo sends a FHIR request and returns the status and the decoded body.
func fhirDo(t *testing.T, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %q", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

// subscriptionJSON is a backport Subscription on topic with filters.
func subscriptionJSON(topic, channel, endpoint, content string, filters ...string) string {
	var fe []string
	for _, f := range filters {
		fe = append(fe, fmt.Sprintf(`{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria","valueString":%q}`, f))
	}
	ep := ""
	if endpoint != "" {
		ep = fmt.Sprintf(`"endpoint":%q,`, endpoint)
	}
	crit := ""
	if len(fe) > 0 {
		crit = `"_criteria":{"extension":[` + strings.Join(fe, ",") + `]},`
	}
	return fmt.Sprintf(`{"resourceType":"Subscription","status":"requested","reason":"test",
"criteria":"https://radbridge.dev/fhir/SubscriptionTopic/%s",%s
"channel":{"type":%q,%s"payload":"application/fhir+json",
 "extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout","valueUnsignedInt":5}],
 "_payload":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content","valueCode":%q}]}}}`,
		topic, crit, channel, ep, content)
}

// createSubscription POSTs a Subscription and returns its id.
func createSubscription(t *testing.T, base, token, body string) string {
	t.Helper()
	code, m := fhirDo(t, "POST", base+"/fhir/Subscription", token, body)
	if code != 201 {
		t.Fatalf("POST Subscription: %d %v", code, m)
	}
	id, _ := m["id"].(string)
	if id == "" || m["status"] != "requested" {
		t.Fatalf("created Subscription: %v", m)
	}
	return id
}

// waitStatus waits until subscription id has status want.
func waitStatus(t *testing.T, base, token, id, want string) map[string]any {
	t.Helper()
	var m map[string]any
	if !testkit.Poll(30*time.Second, func() bool {
		var code int
		code, m = fhirDo(t, "GET", base+"/fhir/Subscription/"+id, token, "")
		return code == 200 && m["status"] == want
	}) {
		t.Fatalf("Subscription/%s not %s within 30s: %v", id, want, m)
	}
	return m
}

// notification is what a test reads from a notification bundle.
type notification struct {
	Type   string
	Since  uint64
	Events []uint64
	Focus  []string
	// Resources counts the entries after the status carrying a resource.
	Resources int
}

var fhirR4 = func() *jsonformat.Unmarshaller {
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		panic(err)
	}
	return u
}()

// readNotification checks a notification with google/fhir/go (an R4
// Bundle; its first entry an R4 Parameters) and returns its contents.
func readNotification(t *testing.T, b []byte) notification {
	t.Helper()
	if _, err := fhirR4.Unmarshal(b); err != nil {
		t.Errorf("notification is not a valid R4 Bundle: %v\n%s", err, b)
	}
	var bundle struct {
		ResourceType, Type string
		Entry              []struct {
			Resource json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &bundle); err != nil || bundle.ResourceType != "Bundle" || bundle.Type != "history" || len(bundle.Entry) == 0 {
		t.Fatalf("not a history Bundle: %s", b)
	}
	var params struct {
		ResourceType string
		Parameter    []struct {
			Name        string
			ValueString string
			ValueCode   string
			Part        []struct {
				Name           string
				ValueString    string
				ValueReference struct{ Reference string }
			}
		}
	}
	if err := json.Unmarshal(bundle.Entry[0].Resource, &params); err != nil || params.ResourceType != "Parameters" {
		t.Fatalf("first entry is not Parameters: %s", b)
	}
	var n notification
	for _, p := range params.Parameter {
		switch p.Name {
		case "type":
			n.Type = p.ValueCode
		case "events-since-subscription-start":
			n.Since, _ = strconv.ParseUint(p.ValueString, 10, 64)
		case "notification-event":
			for _, part := range p.Part {
				switch part.Name {
				case "event-number":
					v, _ := strconv.ParseUint(part.ValueString, 10, 64)
					n.Events = append(n.Events, v)
				case "focus":
					n.Focus = append(n.Focus, part.ValueReference.Reference)
				}
			}
		}
	}
	for _, e := range bundle.Entry[1:] {
		if len(e.Resource) > 0 {
			n.Resources++
		}
	}
	return n
}

// hookReceiver is a rest-hook endpoint that fails its first fail
// event notifications with 503.
type hookReceiver struct {
	t    *testing.T
	fail int
	// secret, when set, is checked against the signature header.
	secret string

	mu       sync.Mutex
	failed   int
	received []notification // accepted ones, in order
	headers  []http.Header
	wake     chan struct{}
}

func newHookReceiver(t *testing.T, fail int) (*hookReceiver, *httptest.Server) {
	h := &hookReceiver{t: t, fail: fail, wake: make(chan struct{}, 1)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	if ct := r.Header.Get("Content-Type"); ct != "application/fhir+json" {
		h.t.Errorf("rest-hook Content-Type %q", ct)
	}
	n := readNotification(h.t, b)
	if h.secret != "" {
		if got, want := r.Header.Get(subscription.SignatureHeader), subscription.Sign(h.secret, b); got != want {
			h.t.Errorf("%s %q, want %q", subscription.SignatureHeader, got, want)
		}
	}
	if r.Header.Get("X-Ehr-Tenant") != "north" {
		h.t.Errorf("channel.header not sent: %v", r.Header)
	}
	h.mu.Lock()
	if n.Type == "event-notification" && h.failed < h.fail {
		h.failed++
		h.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	h.received = append(h.received, n)
	h.headers = append(h.headers, r.Header.Clone())
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusOK)
}

// events returns the event numbers received so far, in arrival order.
func (h *hookReceiver) events() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []uint64
	for _, n := range h.received {
		if n.Type == "event-notification" {
			out = append(out, n.Events...)
		}
	}
	return out
}

// waitEvents waits until at least n distinct event numbers arrived.
func (h *hookReceiver) waitEvents(t *testing.T, n int, within time.Duration) []uint64 {
	t.Helper()
	deadline := time.After(within)
	for {
		got := h.events()
		seen := map[uint64]bool{}
		for _, e := range got {
			seen[e] = true
		}
		if len(seen) >= n {
			return got
		}
		select {
		case <-h.wake:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("rest-hook received %v, want %d distinct event numbers", got, n)
		}
	}
}

// orderMessage is a new imaging order i for patient.
func orderMessage(i int, patient string) string {
	return fmt.Sprintf(`MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310083000+0100||ORM^O01|SUBS-%d-%s|P|2.3
PID|1||%s^^^NORTHWING^MR||TEST^SUBS||19700101|F
ORC|NW|PLCS%d|FILS%d||SC||^^^20260310090000^^S
OBR|1|PLCS%d|FILS%d|71250^CT CHEST^C4||||||||||||||ACCS%d||||||CT`, i, patient, patient, i, i, i, i, i)
}

// checkGapless: every number 1..n arrived, first arrivals in order, and
// nothing else.
func checkGapless(t *testing.T, got []uint64, n int) {
	t.Helper()
	var next uint64 = 1
	for _, e := range got {
		switch {
		case e == next:
			next++
		case e < next: // a redelivery carries its old number
		default:
			t.Fatalf("event numbers %v: %d arrived before %d", got, e, next)
		}
	}
	if next != uint64(n)+1 {
		t.Fatalf("event numbers %v: want 1..%d", got, n)
	}
}

// TestFHIRSubscriptionRestHook: a rest-hook receiver on 127.0.0.1 (allowed
// with --fhir-rest-hook-allow) that fails its first three deliveries still
// receives every order placed over MLLP, each with its event number, in
// order, without gaps; $status counts them and $events returns them.
func TestFHIRSubscriptionRestHook(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--fhir-rest-hook-allow", "127.0.0.1", "--fhir-rest-hook-retry-base", "20ms", "--fhir-rest-hook-max-failures", "5")
	base := "http://" + d.HTTPAddr()
	hook, srv := newHookReceiver(t, 3)
	const secret = "a-per-subscription-secret-0123"
	hook.secret = secret
	// A receiver that takes the handshake and fails every notification.
	broken, brokenSrv := newHookReceiver(t, 1<<30)

	// Without the allow-list entry, the loopback endpoint is refused.
	code, oo := fhirDo(t, "POST", base+"/fhir/Subscription", "", subscriptionJSON("imaging-order-placed", "rest-hook", "http://localhost:9/hook", "id-only"))
	if code != 400 || oo["resourceType"] != "OperationOutcome" {
		t.Fatalf("localhost endpoint: %d %v", code, oo)
	}

	withExtras := func(s, secret string) string {
		s = strings.Replace(s, `"payload"`, `"header":["X-Ehr-Tenant: north"],"payload"`, 1)
		if secret != "" {
			s = strings.Replace(s, `"reason"`, `"extension":[{"url":"`+subscription.ExtSecret+`","valueString":"`+secret+`"}],"reason"`, 1)
		}
		return s
	}
	id := createSubscription(t, base, "", withExtras(subscriptionJSON("imaging-order-placed", "rest-hook", srv.URL+"/hook", "full-resource", "ServiceRequest?patient=Patient/MRN-SUBS1"), secret))
	waitStatus(t, base, "", id, "active")
	brokenID := createSubscription(t, base, "", withExtras(subscriptionJSON("imaging-order-placed", "rest-hook", brokenSrv.URL+"/hook", "id-only"), ""))
	waitStatus(t, base, "", brokenID, "active")
	const n = 5
	for i := 1; i <= n; i++ {
		ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, fmt.Sprint("order", i), orderMessage(i, "MRN-SUBS1")))
		if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AA" {
			t.Fatalf("ACK %s", ack.Bytes())
		}
	}
	// Another patient's order is not notified.
	testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "other", orderMessage(99, "MRN-OTHER")))
	got := hook.waitEvents(t, n, 60*time.Second)
	checkGapless(t, got, n)
	hook.mu.Lock()
	for _, nt := range hook.received {
		if nt.Type == "event-notification" && (len(nt.Focus) != 1 || !strings.HasPrefix(nt.Focus[0], "ServiceRequest/") || nt.Resources != 1) {
			t.Errorf("full-resource notification: %+v", nt)
		}
	}
	if hook.received[0].Type != "handshake" {
		t.Errorf("first notification %+v, want the handshake", hook.received[0])
	}
	hook.mu.Unlock()

	// The broken receiver's subscription gives up after 5 failures in a
	// row, with the reason in the resource and in $status.
	m := waitStatus(t, base, "", brokenID, "error")
	if e, _ := m["error"].(string); !strings.Contains(e, "HTTP 503") {
		t.Errorf("error status without the reason: %v", m)
	}
	broken.mu.Lock()
	if broken.failed != 5 {
		t.Errorf("broken receiver saw %d failed deliveries, want 5", broken.failed)
	}
	broken.mu.Unlock()
	code, st := fhirDo(t, "GET", base+"/fhir/Subscription/"+brokenID+"/$status", "", "")
	if b, _ := json.Marshal(st); code != 200 || !strings.Contains(string(b), `"error"`) || !strings.Contains(string(b), "HTTP 503") {
		t.Errorf("$status of the failed subscription: %d %s", code, b)
	}

	code, st = fhirDo(t, "GET", base+"/fhir/Subscription/"+id+"/$status", "", "")
	b, _ := json.Marshal(st)
	if _, err := fhirR4.Unmarshal(b); code != 200 || err != nil {
		t.Fatalf("$status: %d %v %s", code, err, b)
	}
	if !strings.Contains(string(b), `"valueString":"5"`) {
		t.Errorf("$status does not count 5 events: %s", b)
	}
	req, _ := http.NewRequest("GET", base+"/fhir/Subscription/"+id+"/$events?eventsSinceNumber=2&eventsUntilNumber=4&content=id-only", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	eb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := fhirR4.Unmarshal(eb); err != nil {
		t.Fatalf("$events is not an R4 Bundle: %v", err)
	}
	if !bytes.Contains(eb, []byte(`"query-event"`)) || strings.Count(string(eb), `"event-number"`) != 3 {
		t.Errorf("$events 2..4: %s", eb)
	}
}
