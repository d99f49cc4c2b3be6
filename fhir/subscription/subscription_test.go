package subscription

import (
	"encoding/json"
	"errors"
	"flag"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	rbv1 "radbridge/proto/radbridge/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/stored")

// sub is a backport Subscription; edit changes its JSON text.
func sub(topic, channel, endpoint string, filters ...string) string {
	var fe []string
	for _, f := range filters {
		b, _ := json.Marshal(f)
		fe = append(fe, `{"url":"`+ExtFilter+`","valueString":`+string(b)+`}`)
	}
	ep := ""
	if endpoint != "" {
		ep = `"endpoint":"` + endpoint + `",`
	}
	return `{"resourceType":"Subscription","status":"requested","reason":"unit test",
"criteria":"` + TopicBase + topic + `","_criteria":{"extension":[` + strings.Join(fe, ",") + `]},
"channel":{"type":"` + channel + `",` + ep + `"payload":"application/fhir+json",
"extension":[{"url":"` + ExtHeartbeat + `","valueUnsignedInt":60},{"url":"` + ExtTimeout + `","valueUnsignedInt":20},{"url":"` + ExtMaxCount + `","valuePositiveInt":5}],
"_payload":{"extension":[{"url":"` + ExtContent + `","valueCode":"full-resource"}]}}}`
}

func TestParse(t *testing.T) {
	s, err := Parse([]byte(sub("patient-imaging-feed", "rest-hook", "https://ehr.example.org/hook", "ImagingStudy?patient=Patient/MRN-1&modality=CT,MR", "?priority=stat,critical")))
	if err != nil {
		t.Fatal(err)
	}
	want := &Spec{
		Topic:    TopicBase + "patient-imaging-feed",
		Criteria: []string{"ImagingStudy?patient=Patient/MRN-1&modality=CT,MR", "?priority=stat,critical"},
		Filters: []Filter{
			{Resource: "ImagingStudy", Param: "patient", Values: []string{"Patient/MRN-1"}},
			{Resource: "ImagingStudy", Param: "modality", Values: []string{"CT", "MR"}},
			{Param: "priority", Values: []string{"stat", "critical"}},
		},
		ChannelType: "rest-hook", Endpoint: "https://ehr.example.org/hook", Payload: "application/fhir+json", Content: "full-resource",
		HeartbeatSeconds: 60, TimeoutSeconds: 20, MaxCount: 5, Reason: "unit test",
	}
	if d := cmp.Diff(s, want); d != "" {
		t.Errorf("Parse (-got +want):\n%s", d)
	}
}

func TestParseRefuses(t *testing.T) {
	good := sub("imaging-report-ready", "websocket", "", "DiagnosticReport?patient=P1")
	for _, c := range []struct{ name, body, want string }{
		{"empty", ``, "not a Subscription"},
		{"array", `[]`, "not a Subscription"},
		{"trailing", good + `{}`, "trailing"},
		{"wrong type", strings.Replace(good, `"Subscription"`, `"Basic"`, 1), "resourceType"},
		{"unknown element", strings.Replace(good, `"reason"`, `"foo":true,"reason"`, 1), "foo"},
		{"modifier extension", strings.Replace(good, `"reason"`, `"modifierExtension":[{"url":"x"}],"reason"`, 1), "modifierExtension"},
		{"no reason", strings.Replace(good, `"reason":"unit test",`, ``, 1), "reason"},
		{"status off", strings.Replace(good, `"requested"`, `"off"`, 1), "status"},
		{"unknown topic", strings.Replace(good, "imaging-report-ready", "x", 1), "unknown topic"},
		{"R4 query criteria", strings.Replace(good, TopicBase+"imaging-report-ready", "DiagnosticReport?status=final", 1), "unknown topic"},
		{"unknown filter", sub("imaging-report-ready", "websocket", "", "DiagnosticReport?code=1"), `no filter "code"`},
		{"bad status", sub("imaging-report-ready", "websocket", "", "?status=available"), "status"},
		{"good status other type", sub("imaging-order-placed", "websocket", "", "ServiceRequest?status=final"), "status"},
		{"resource of another topic", sub("imaging-report-ready", "websocket", "", "ImagingStudy?patient=P1"), "not ImagingStudy"},
		{"no value", sub("imaging-report-ready", "websocket", "", "?patient="), "param=value"},
		{"bad escape", sub("imaging-report-ready", "websocket", "", "?patient=%zz"), "escape"},
		{"patient path", sub("imaging-report-ready", "websocket", "", "?patient=Patient/a/b"), "patient"},
		{"feed without patient", sub("patient-imaging-feed", "websocket", ""), "patient filter"},
		{"email", sub("imaging-report-ready", "email", "mailto:x@example.org"), "channel.type"},
		{"rest-hook without endpoint", sub("imaging-report-ready", "rest-hook", ""), "endpoint"},
		{"rest-hook ftp", sub("imaging-report-ready", "rest-hook", "ftp://example.org/x"), "endpoint"},
		{"rest-hook user", sub("imaging-report-ready", "rest-hook", "https://u:p@example.org/x"), "endpoint"},
		{"websocket endpoint", sub("imaging-report-ready", "websocket", "wss://example.org"), "endpoint"},
		{"heartbeat too long", strings.Replace(good, `"valueUnsignedInt":60`, `"valueUnsignedInt":86400`, 1), "heartbeat"},
		{"timeout string", strings.Replace(good, `"valueUnsignedInt":20`, `"valueUnsignedInt":"20"`, 1), "timeout"},
		{"max count 0", strings.Replace(good, `"valuePositiveInt":5`, `"valuePositiveInt":0`, 1), "max-count"},
		{"content", strings.Replace(good, `"full-resource"`, `"all"`, 1), "payload-content"},
		{"payload xml", strings.Replace(good, `"application/fhir+json"`, `"application/fhir+xml"`, 1), "payload"},
		{"header injection", strings.Replace(sub("imaging-report-ready", "rest-hook", "https://e.example/h"), `"payload"`, `"header":["X-A: 1\r\nX-B: 2"],"payload"`, 1), "header"},
		{"header host", strings.Replace(sub("imaging-report-ready", "rest-hook", "https://e.example/h"), `"payload"`, `"header":["Host: evil"],"payload"`, 1), "Host"},
		{"header signature", strings.Replace(sub("imaging-report-ready", "rest-hook", "https://e.example/h"), `"payload"`, `"header":["X-Radbridge-Signature: x"],"payload"`, 1), "X-Radbridge-Signature"},
		{"short secret", strings.Replace(good, `"reason"`, `"extension":[{"url":"`+ExtSecret+`","valueString":"short"}],"reason"`, 1), "secret"},
		{"extension without url", strings.Replace(good, `"reason"`, `"extension":[{"valueString":"x"}],"reason"`, 1), "url"},
		{"bad end", strings.Replace(good, `"reason"`, `"end":"tomorrow","reason"`, 1), "end"},
		{"too big", `{"resourceType":"Subscription","reason":"` + strings.Repeat("x", MaxBody) + `"}`, "larger"},
	} {
		_, err := Parse([]byte(c.body))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want ErrInvalid with %q", c.name, err, c.want)
		}
	}
}

func studyEvent(t *testing.T) *rbv1.Event {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "mapper", "testdata", "fhir", "imagingstudy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	res, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return &rbv1.Event{Sequence: 42, Type: rbv1.EventType_IMAGING_STUDY_AVAILABLE, PatientId: "MRN4711", AccessionNumber: "ACC1001",
		StudyInstanceUid: m["id"].(string), ResourceType: "ImagingStudy", ResourceId: m["id"].(string), Resource: res,
		Priority: rbv1.Priority_PRIORITY_STAT, Time: timestamppb.New(time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC))}
}

func TestMatch(t *testing.T) {
	ev := studyEvent(t)
	mod := ev.Resource.Fields["modality"].GetListValue().GetValues()[0].GetStructValue().Fields["code"].GetStringValue()
	topic, _ := TopicByURL(TopicBase + "imaging-study-available")
	feed, _ := TopicByURL(TopicBase + "patient-imaging-feed")
	orders, _ := TopicByURL(TopicBase + "imaging-order-placed")
	for _, c := range []struct {
		name     string
		topic    Topic
		criteria string
		want     bool
	}{
		{"no filter", topic, "", true},
		{"other topic", orders, "", false},
		{"patient", topic, "?patient=Patient/MRN4711", true},
		{"patient bare", feed, "ImagingStudy?patient=MRN4711", true},
		{"other patient", feed, "?patient=Patient/MRN1", false},
		{"patient system", topic, "?patient=urn:hl7v2:assigning-authority:NORTHWING|MRN4711", true},
		{"patient wrong system", topic, "?patient=urn:other|MRN4711", false},
		{"modality", topic, "?modality=" + mod, true},
		{"modality list", topic, "?modality=XA," + mod, true},
		{"other modality", topic, "?modality=XA", false},
		{"accession", topic, "?identifier=ACC1001", true},
		{"study uid", topic, "?identifier=urn:oid:" + ev.StudyInstanceUid, true},
		{"other accession", topic, "?identifier=ACC2", false},
		{"status", topic, "?status=available", true},
		{"other status", topic, "?status=registered", false},
		{"priority", topic, "?priority=stat", true},
		{"priority critical", topic, "?priority=critical", false},
		{"and", topic, "?patient=MRN4711&priority=routine", false},
	} {
		var fs []Filter
		if c.criteria != "" {
			var err error
			if fs, err = parseCriteria(c.topic, c.criteria); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if got := c.topic.Match(ev, fs); got != c.want {
			t.Errorf("%s: Match = %v, want %v", c.name, got, c.want)
		}
	}
}

// r4 is google/fhir/go's R4 parser, made on first use (it is slow to
// make, and fuzz workers that never need it should not wait for it).
var r4 = sync.OnceValue(func() *jsonformat.Unmarshaller {
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		panic(err)
	}
	return u
})

func valid(t *testing.T, what string, b []byte) {
	t.Helper()
	if _, err := r4().Unmarshal(b); err != nil {
		t.Errorf("%s is not valid FHIR R4: %v\n%s", what, err, b)
	}
}

func stored(t *testing.T) *Stored {
	t.Helper()
	s, err := Parse([]byte(sub("imaging-study-available", "rest-hook", "https://ehr.example.org/hook", "ImagingStudy?patient=Patient/MRN4711")))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)
	return &Stored{Version: FormatVersion, ID: "0123456789abcdef0123456789abcdef", Spec: *s, Owner: "ehr", Scope: nil, Status: StatusActive, Created: at, Updated: at, StartSeq: 41}
}

// TestEmittedResourcesValid validates every resource radbridge emits
// here with google/fhir/go: notifications of each type and content,
// $status, the Subscription itself and an OperationOutcome.
func TestEmittedResourcesValid(t *testing.T) {
	st := stored(t)
	ev := studyEvent(t)
	base := "https://radbridge.example.org/fhir"
	for _, c := range []struct{ typ, content string }{
		{TypeHandshake, ContentEmpty}, {TypeHeartbeat, ContentIDs}, {TypeEvent, ContentEmpty}, {TypeEvent, ContentIDs}, {TypeEvent, ContentFull}, {TypeQueryEvent, ContentFull},
	} {
		var evs []Numbered
		if c.typ == TypeEvent || c.typ == TypeQueryEvent {
			evs = []Numbered{{N: 7, Event: ev}, {N: 8}} // 8: gone from the log
		}
		b := st.Bundle(base, c.typ, 8, c.content, evs)
		valid(t, c.typ+"/"+c.content, b)
		var bundle struct {
			Type  string
			Entry []map[string]any
		}
		json.Unmarshal(b, &bundle)
		wantEntries := 1
		if c.content != ContentEmpty && len(evs) > 0 {
			wantEntries = 2
		}
		if bundle.Type != "history" || len(bundle.Entry) != wantEntries {
			t.Errorf("%s/%s: %s", c.typ, c.content, b)
		}
		params, _ := json.Marshal(bundle.Entry[0]["resource"])
		valid(t, "SubscriptionStatus", params)
		if has := bundle.Entry[len(bundle.Entry)-1]["resource"] != nil && len(bundle.Entry) > 1; has != (c.content == ContentFull && len(evs) > 0) {
			t.Errorf("%s/%s: resource in the focus entry: %v", c.typ, c.content, has)
		}
	}
	st.Error = "endpoint answered HTTP 500"
	st.Status = StatusError
	valid(t, "$status", st.StatusBundle(base, 3))
	r, _ := json.Marshal(st.Resource())
	valid(t, "Subscription", r)
	if strings.Contains(string(r), "secret") {
		t.Errorf("the secret is shown: %s", r)
	}
	st.Headers = []string{"Authorization: Bearer hook-credential"}
	r, _ = json.Marshal(st.Resource())
	if strings.Contains(string(r), "hook-credential") || !strings.Contains(string(r), `"header":["Authorization: ***"]`) {
		t.Errorf("channel.header not masked: %s", r)
	}
	w := httptest.NewRecorder()
	WriteOutcome(w, 400, "invalid", "bad")
	valid(t, "OperationOutcome", w.Body.Bytes())
}

// TestStoredFormat: the JSON kept in RADBRIDGE_FHIR_SUBSCRIPTIONS is a
// contract across releases (testdata/stored, refreshed with -update).
func TestStoredFormat(t *testing.T) {
	st := stored(t)
	st.Secret = "0123456789abcdef-secret"
	cur := &Cursor{Version: FormatVersion, Seq: 50}
	cur.assign(43)
	cur.assign(47)
	cur.Delivered = 1
	cur.Failures, cur.LastError = 2, "endpoint answered HTTP 503"
	for name, v := range map[string]any{"subscription.json": st, "cursor.json": cur} {
		got, _ := json.MarshalIndent(v, "", "  ")
		p := filepath.Join("testdata", "stored", name)
		if *update {
			os.WriteFile(p, append(got, '\n'), 0o644)
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(strings.TrimSpace(string(got)), strings.TrimSpace(string(want))); d != "" {
			t.Errorf("%s (-got +want):\n%s", name, d)
		}
		// And it reads back.
		back := new(Stored)
		if name == "cursor.json" {
			c := new(Cursor)
			if err := json.Unmarshal(want, c); err != nil || c.Number != 2 {
				t.Errorf("cursor.json reads back as %+v, %v", c, err)
			}
			if s, ok := c.SeqOf(2); !ok || s != 47 {
				t.Errorf("SeqOf(2) = %d %v", s, ok)
			}
			continue
		}
		if err := json.Unmarshal(want, back); err != nil || back.Topic != st.Topic || len(back.Filters) != 1 {
			t.Errorf("subscription.json reads back as %+v, %v", back, err)
		}
	}
}

func TestCursorMapIsBounded(t *testing.T) {
	c := &Cursor{}
	for i := range 3 * MaxMapped {
		c.assign(uint64(10 + 2*i))
	}
	if len(c.Map) != MaxMapped || c.Number != 3*MaxMapped {
		t.Fatalf("map %d, number %d", len(c.Map), c.Number)
	}
	if _, ok := c.SeqOf(1); ok {
		t.Error("the oldest number is still mapped")
	}
	if s, ok := c.SeqOf(c.Number); !ok || s != uint64(10+2*(3*MaxMapped-1)) {
		t.Errorf("SeqOf(newest) = %d %v", s, ok)
	}
}

func TestAllow(t *testing.T) {
	none, _ := ParseAllow("")
	some, err := ParseAllow("127.0.0.1, 10.1.0.0/16, hooks.internal.example, *.ehr.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ip         string
		none, some bool
	}{
		{"8.8.8.8", true, true}, {"127.0.0.1", false, true}, {"127.0.0.2", false, false}, {"::1", false, false},
		{"169.254.169.254", false, false}, {"10.1.2.3", false, true}, {"10.2.0.1", false, false}, {"192.168.1.1", false, false},
		{"::ffff:127.0.0.1", false, true}, {"0.0.0.0", false, false}, {"fe80::1", false, false}, {"100.64.0.1", false, false},
		{"fd00:ec2::254", false, false}, {"2001:4860:4860::8888", true, true},
	} {
		ip := netip.MustParseAddr(c.ip)
		if got := none.IPAllowed(ip); got != c.none {
			t.Errorf("default %s: %v", c.ip, got)
		}
		if got := some.IPAllowed(ip); got != c.some {
			t.Errorf("allow-list %s: %v", c.ip, got)
		}
	}
	if none.CheckHost("localhost") == nil || none.CheckHost("169.254.169.254") == nil || none.CheckHost("[::1]") == nil {
		t.Error("internal hosts pass CheckHost")
	}
	if some.CheckHost("a.ehr.example") != nil || none.CheckHost("ehr.example.org") != nil {
		t.Error("allowed hosts refused")
	}
	for _, bad := range []string{"a/b/c", "*x.example", "a.*.example", "http://x"} {
		if _, err := ParseAllow(bad); err == nil {
			t.Errorf("ParseAllow(%q) accepted", bad)
		}
	}
}

// TestDialChecksTheResolvedAddress: a name that resolves to loopback is
// refused when dialled, whatever it is called.
func TestDialChecksTheResolvedAddress(t *testing.T) {
	srv := httptest.NewServer(nil)
	defer srv.Close()
	_, port, _ := strings.Cut(srv.Listener.Addr().String(), ":")
	none, _ := ParseAllow("")
	if _, err := none.DialContext(t.Context(), "tcp", "localhost:"+port); !errors.Is(err, ErrEndpointDenied) {
		t.Errorf("dial localhost: %v; want ErrEndpointDenied", err)
	}
	allowed, _ := ParseAllow("127.0.0.0/8")
	c, err := allowed.DialContext(t.Context(), "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("dial an allowed address: %v", err)
	}
	c.Close()
}

func TestSign(t *testing.T) {
	// RFC 4231 test case 2.
	if got := Sign("Jefe", []byte("what do ya want for nothing?")); got != "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" {
		t.Errorf("Sign = %s", got)
	}
}

func TestParseBind(t *testing.T) {
	for _, c := range []struct {
		msg, tok string
		ok       bool
	}{
		{"bind-with-token abc", "abc", true},
		{"bind-with-token  abc \n", "abc", true},
		{`{"type":"bind-with-token","payload":{"token":"abc"}}`, "abc", true},
		{`{"type":"bind-with-token","token":"abc"}`, "abc", true},
		{"bind-with-token", "", false},
		{"bind-with-token a b", "", false},
		{"ping", "", false},
		{`{"type":"ping","token":"abc"}`, "", false},
		{`{"type":"bind-with-token"}`, "", false},
		{"bind-with-token " + strings.Repeat("a", 300), "", false},
	} {
		tok, err := ParseBind([]byte(c.msg))
		if (err == nil) != c.ok || tok != c.tok {
			t.Errorf("ParseBind(%q) = %q, %v", c.msg, tok, err)
		}
	}
}

func FuzzSubscription(f *testing.F) {
	f.Add([]byte(sub("patient-imaging-feed", "rest-hook", "https://ehr.example.org/hook", "ImagingStudy?patient=Patient/MRN-1&modality=CT,MR", "?priority=stat")))
	f.Add([]byte(sub("imaging-report-ready", "websocket", "", "?status=final&identifier=urn:oid:1.2%2C3")))
	f.Add([]byte(`{"resourceType":"Subscription","channel":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		// What is accepted renders as a valid R4 Subscription and parses
		// back to the same spec.
		st := &Stored{ID: "x", Spec: *s, Status: StatusRequested}
		r, _ := json.Marshal(st.Resource())
		if _, err := r4().Unmarshal(r); err != nil {
			t.Fatalf("accepted %q renders as invalid R4: %v\n%s", b, err, r)
		}
		if _, err := TopicByURL(s.Topic); !err {
			t.Fatalf("accepted unknown topic %q", s.Topic)
		}
	})
}

func FuzzBindMessage(f *testing.F) {
	for _, s := range []string{"bind-with-token abc", `{"type":"bind-with-token","payload":{"token":"abc"}}`, "x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := ParseBind(b)
		if err == nil && !validBindToken(tok) {
			t.Fatalf("ParseBind(%q) = %q", b, tok)
		}
	})
}

// TestCriteriaRejectControlCharacters: a filter criteria value with a
// control character, written or %-escaped, is refused: the Subscription
// holding it would not be a valid R4 resource when read back.
func TestCriteriaRejectControlCharacters(t *testing.T) {
	topic, ok := TopicByURL("https://radbridge.dev/fhir/SubscriptionTopic/patient-imaging-feed")
	if !ok {
		t.Fatal("no patient-imaging-feed topic")
	}
	for _, c := range []string{
		"ImagingStudy?patient=Patient/MRN-1\x11modality=CT",
		"ImagingStudy?patient=Patient/MRN-1%11",
		"ImagingStudy?patient=Patient/MRN-\xff",
	} {
		if fs, err := parseCriteria(topic, c); err == nil {
			t.Errorf("%q accepted as %v", c, fs)
		}
	}
	if _, err := parseCriteria(topic, "ImagingStudy?patient=Patient/MRN-1&modality=CT"); err != nil {
		t.Errorf("a plain criteria refused: %v", err)
	}
}
