package fhir_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"radbridge/auth"
	"radbridge/eventlog"
	"radbridge/fhir"
	rbv1 "radbridge/proto/radbridge/v1"
)

var t0 = time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)

// golden reads a resource the mapper's golden files hold.
func golden(t testing.TB, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("../mapper/testdata/fhir/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

type fixture struct {
	log *eventlog.Memory
	srv *httptest.Server
	h   *fhir.Handler
	n   int
}

func (f *fixture) append(t testing.TB, typ rbv1.EventType, patient string, res map[string]any) uint64 {
	t.Helper()
	pb, err := structpb.NewStruct(res)
	if err != nil {
		t.Fatal(err)
	}
	f.n++
	seq, err := f.log.Append(context.Background(), eventlog.Key{IngestSeq: uint64(f.n)}, &rbv1.Event{
		Type: typ, PatientId: patient, Time: timestamppb.New(t0.Add(time.Duration(f.n) * time.Minute)),
		ResourceType: res["resourceType"].(string), ResourceId: res["id"].(string), Resource: pb,
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func newFixture(t testing.TB, a auth.Authenticator) *fixture {
	t.Helper()
	f := &fixture{log: eventlog.NewMemory()}
	f.h = fhir.New(fhir.Config{Events: f.log, Auth: a, Topics: []string{"https://radbridge.dev/fhir/SubscriptionTopic/imaging-study-available"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	mux := http.NewServeMux()
	mux.Handle("/fhir", f.h)
	mux.Handle("/fhir/", f.h)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// study returns the golden ImagingStudy as id of patient with status.
func study(t testing.TB, id, patient, status, modality string) map[string]any {
	s := golden(t, "imagingstudy")
	s["id"], s["status"] = id, status
	s["subject"] = map[string]any{"type": "Patient", "identifier": map[string]any{"system": "urn:test", "value": patient}}
	s["identifier"] = []any{
		map[string]any{"system": "urn:dicom:uid", "value": "urn:oid:" + id},
		map[string]any{"type": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}}}, "value": "ACC-" + id},
	}
	s["modality"] = []any{map[string]any{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}}
	s["basedOn"] = []any{map[string]any{"reference": "ServiceRequest/order-" + id}}
	return s
}

var validator *jsonformat.Unmarshaller

func init() {
	var err error
	if validator, err = jsonformat.NewUnmarshaller("UTC", fhirversion.R4); err != nil {
		panic(err)
	}
}

// get fetches path and checks that the answer is valid FHIR R4 JSON.
func get(t testing.TB, f *fixture, path string, hdr ...string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := fmt.Fprint(&b, readAll(resp)); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusNotModified {
		return resp.StatusCode, resp.Header, nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	if _, err := validator.Unmarshal([]byte(b.String())); err != nil {
		t.Errorf("GET %s: not valid FHIR R4: %v\n%s", path, err, b.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(b.String()), &m); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, resp.Header, m
}

func readAll(resp *http.Response) string {
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

func ids(bundle map[string]any) []string {
	var out []string
	for _, e := range asList(bundle["entry"]) {
		e := e.(map[string]any)
		if e["search"].(map[string]any)["mode"] != "match" {
			continue
		}
		r := e["resource"].(map[string]any)
		out = append(out, r["id"].(string))
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

func link(bundle map[string]any, rel string) string {
	for _, l := range asList(bundle["link"]) {
		l := l.(map[string]any)
		if l["relation"] == rel {
			return l["url"].(string)
		}
	}
	return ""
}

func pathOf(t testing.TB, u string) string {
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.RequestURI()
}

func TestReadAndSearch(t *testing.T) {
	f := newFixture(t, nil)
	f.append(t, rbv1.EventType_IMAGING_STUDY_PROGRESS, "P1", study(t, "1.2.3.1", "P1", "registered", "CT"))
	f.append(t, rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", study(t, "1.2.3.2", "P1", "available", "MR"))
	v3 := f.append(t, rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", study(t, "1.2.3.1", "P1", "available", "CT"))
	f.append(t, rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P2", study(t, "1.2.3.9", "P2", "available", "CT"))
	sr := golden(t, "servicerequest")
	f.append(t, rbv1.EventType_ORDER_PLACED, "P1", sr)
	dr := golden(t, "diagnosticreport")
	last := f.append(t, rbv1.EventType_IMAGING_REPORT_READY, "P1", dr)

	code, hdr, res := get(t, f, "/fhir/ImagingStudy/1.2.3.1")
	if code != 200 || res["status"] != "available" {
		t.Fatalf("read: %d %v", code, res["status"])
	}
	meta := res["meta"].(map[string]any)
	if meta["versionId"] != fmt.Sprint(v3) || meta["lastUpdated"] != "2026-03-10T08:03:00.000000Z" || hdr.Get("ETag") != fmt.Sprintf(`W/"%d"`, v3) {
		t.Errorf("read meta %v, ETag %q; want version %d", meta, hdr.Get("ETag"), v3)
	}
	if hdr.Get(fhir.SeqHeader) != fmt.Sprint(last) {
		t.Errorf("%s %q, want %d", fhir.SeqHeader, hdr.Get(fhir.SeqHeader), last)
	}
	if code, _, _ := get(t, f, "/fhir/ImagingStudy/1.2.3.1", "If-None-Match", hdr.Get("ETag")); code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", code)
	}

	for _, c := range []struct {
		q    string
		want string
	}{
		{"patient=P1", "1.2.3.1 1.2.3.2"},
		{"_id=1.2.3.9,1.2.3.2,nope", "1.2.3.9 1.2.3.2"},
		{"patient=Patient/P1&_sort=_lastUpdated", "1.2.3.2 1.2.3.1"},
		{"subject=P2", "1.2.3.9"},
		{"patient:identifier=urn:test|P2", "1.2.3.9"},
		{"identifier=urn:dicom:uid|urn:oid:1.2.3.2", "1.2.3.2"},
		{"identifier=urn:oid:1.2.3.2,ACC-1.2.3.9", "1.2.3.9 1.2.3.2"},
		{"identifier=ACC-1.2.3.1&patient=P2", ""},
		{"status=available&modality=MR", "1.2.3.2"},
		{"modality=http://dicom.nema.org/resources/ontology/DCM|CT&patient=P1", "1.2.3.1"},
		{"based-on=ServiceRequest/order-1.2.3.9", "1.2.3.9"},
		{"_lastUpdated=ge2026-03-10T08:03:00Z&_lastUpdated=lt2026-03-10T08:04:00Z", "1.2.3.1"},
		{"_lastUpdated=lt2026-03-10T08:03:00Z", "1.2.3.2"},
		{"_lastUpdated=2026-03-11", ""},
		{"_lastUpdated=gt2026-03-10T08:03:00.000000Z", "1.2.3.9"}, // after the lastUpdated 1.2.3.1 shows
	} {
		code, _, b := get(t, f, "/fhir/ImagingStudy?"+c.q)
		if code != 200 {
			t.Errorf("%s: %d %v", c.q, code, b)
			continue
		}
		if got := strings.Join(ids(b), " "); got != c.want {
			t.Errorf("%s: got %q, want %q", c.q, got, c.want)
		}
		if b["type"] != "searchset" || b["total"] != float64(len(ids(b))) {
			t.Errorf("%s: type %v total %v", c.q, b["type"], b["total"])
		}
	}
	if _, _, b := get(t, f, "/fhir/DiagnosticReport?based-on="+sr["id"].(string)); len(ids(b)) != 1 {
		t.Errorf("report by based-on: %v", ids(b))
	}
	if _, _, b := get(t, f, "/fhir/ServiceRequest?patient=P1&status=active"); len(ids(b)) != 1 {
		t.Errorf("order by status: %v", ids(b))
	}
	code, _, cs := get(t, f, "/fhir/metadata")
	if code != 200 || cs["fhirVersion"] != "4.0.1" || !strings.Contains(fmt.Sprint(cs), "capabilitystatement-subscriptiontopic-canonical") {
		t.Errorf("metadata: %d %v", code, cs)
	}
}

func TestPagingUnderConcurrentWrites(t *testing.T) {
	f := newFixture(t, nil)
	for i := range 5 {
		f.append(t, rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", study(t, fmt.Sprintf("1.2.%d", i), "P1", "available", "CT"))
	}
	_, _, b := get(t, f, "/fhir/ImagingStudy?patient=P1&_count=2")
	seen := ids(b)
	for next := link(b, "next"); next != ""; next = link(b, "next") {
		// Writes between pages: an update moves a study to the top, a new
		// one arrives. Neither shows in this search's pages.
		f.append(t, rbv1.EventType_IMAGING_STUDY_UPDATED, "P1", study(t, "1.2.0", "P1", "cancelled", "CT"))
		f.append(t, rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", study(t, fmt.Sprintf("1.3.%d", len(seen)), "P1", "available", "CT"))
		var code int
		code, _, b = get(t, f, pathOf(t, next))
		if code != 200 {
			t.Fatalf("next: %d %v", code, b)
		}
		if b["total"] != float64(5) {
			t.Errorf("total on a later page %v, want 5", b["total"])
		}
		seen = append(seen, ids(b)...)
	}
	if got := strings.Join(seen, " "); got != "1.2.4 1.2.3 1.2.2 1.2.1 1.2.0" {
		t.Errorf("pages: %s", got)
	}
}

func TestErrorsAreOperationOutcomes(t *testing.T) {
	tokens, err := auth.ReadTokens(strings.NewReader("tok-all-0123456789abcdef all\ntok-p1-0123456789abcdef p1 patient=P1\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, tokens)
	f.append(t, rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", study(t, "1.2.1", "P1", "available", "CT"))
	f.append(t, rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P2", study(t, "1.2.2", "P2", "available", "CT"))
	all, p1 := []string{"Authorization", "Bearer tok-all-0123456789abcdef"}, []string{"Authorization", "Bearer tok-p1-0123456789abcdef"}
	for _, c := range []struct {
		path string
		hdr  []string
		code int
	}{
		{"/fhir/ImagingStudy?patient=P1", nil, 401},
		{"/fhir/ImagingStudy?patient=P1", []string{"Authorization", "Bearer nope-0123456789abcdef"}, 401},
		{"/fhir/ImagingStudy?patient=P2", p1, 403},
		{"/fhir/ImagingStudy/1.2.2", p1, 404},
		{"/fhir/ImagingStudy/1.2.9", all, 404},
		{"/fhir/Patient/1", all, 404},
		{"/fhir/ImagingStudy/bad_id!", all, 400},
		{"/fhir/ImagingStudy?foo=1", all, 400},
		{"/fhir/ImagingStudy?_count=x", all, 400},
		{"/fhir/ImagingStudy?_sort=date", all, 400},
		{"/fhir/ImagingStudy?_lastUpdated=xx2026", all, 400},
		{"/fhir/ImagingStudy?_cursor=AAAA", all, 400},
		{"/fhir/ImagingStudy?patient:missing=P1", all, 400},
		{"/fhir/ServiceRequest?modality=CT", all, 400},
		{"/fhir/ImagingStudy?_format=xml", all, 406},
		{"/fhir/ImagingStudy", append([]string{"Accept", "application/fhir+xml"}, all...), 406},
		{"/fhir/ImagingStudy/1.2.1/_history/1", all, 404},
		{"/fhir/metadata", nil, 200},
	} {
		code, _, b := get(t, f, c.path, c.hdr...)
		if code != c.code {
			t.Errorf("%s: %d, want %d", c.path, code, c.code)
		}
		if c.code >= 400 && b["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: %v", c.path, b)
		}
	}
	// A scoped token's totals count its own patients only.
	if _, _, b := get(t, f, "/fhir/ImagingStudy?status=available", p1...); b["total"] != float64(1) {
		t.Errorf("scoped total %v", b["total"])
	}
	// Lenient: the unknown parameter is ignored, and said so.
	_, _, b := get(t, f, "/fhir/ImagingStudy?patient=P1&foo=1&_count=1000", append([]string{"Prefer", "handling=lenient"}, all...)...)
	if len(ids(b)) != 1 || !strings.Contains(fmt.Sprint(b), "foo") || !strings.Contains(fmt.Sprint(b), "capped at 100") {
		t.Errorf("lenient: %v", b)
	}
	req, _ := http.NewRequest(http.MethodDelete, f.srv.URL+"/fhir/ImagingStudy/1.2.1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
}

// TestSubscriptionsHook: Config.Extra gets the requests under its first
// path segment unchanged; Config.Resources adds CapabilityStatement
// entries, and Topics land on the Subscription entry as the backport's
// extension.
func TestSubscriptionsHook(t *testing.T) {
	var got []string
	h := fhir.New(fhir.Config{
		Events: eventlog.NewMemory(),
		Topics: []string{"https://radbridge.dev/fhir/SubscriptionTopic/a", "https://radbridge.dev/fhir/SubscriptionTopic/b"},
		Extra: map[string]http.Handler{"Subscription": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.Method+" "+r.URL.Path)
			fhir.WriteOutcome(w, http.StatusTeapot, "informational", "subscriptions")
		})},
		Resources: []map[string]any{{"type": "Subscription", "interaction": []any{map[string]any{"code": "create"}}}},
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, p := range []string{"/fhir/Subscription", "/fhir/Subscription/s1/$status"} {
		resp, err := http.Post(srv.URL+p, "application/fhir+json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot {
			t.Errorf("POST %s: %d", p, resp.StatusCode)
		}
	}
	if want := []string{"POST /fhir/Subscription", "POST /fhir/Subscription/s1/$status"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Extra got %v, want %v", got, want)
	}
	f := &fixture{srv: srv}
	_, _, cs := get(t, f, "/fhir/metadata")
	var sub map[string]any
	for _, r := range asList(cs["rest"].([]any)[0].(map[string]any)["resource"]) {
		if r := r.(map[string]any); r["type"] == "Subscription" {
			if sub != nil {
				t.Error("two Subscription entries")
			}
			sub = r
		}
	}
	if sub == nil || len(asList(sub["interaction"])) != 1 || len(asList(sub["extension"])) != 2 ||
		asList(sub["extension"])[1].(map[string]any)["url"] != fhir.TopicCanonicalExtension ||
		asList(sub["extension"])[1].(map[string]any)["valueCanonical"] != "https://radbridge.dev/fhir/SubscriptionTopic/b" {
		t.Errorf("Subscription entry %v", sub)
	}
}

// TestCursorExpiresWhenItsVersionsAreDropped: once more than
// SupersededKept versions were superseded after a search's first page,
// the versions it pages through are gone and its next page is 410 Gone
// (search again), whatever PagingWindow would allow; a new search answers.
func TestCursorExpiresWhenItsVersionsAreDropped(t *testing.T) {
	f := newFixture(t, nil)
	for i := range 3 {
		f.append(t, rbv1.EventType_IMAGING_STUDY_AVAILABLE, "P1", study(t, fmt.Sprintf("1.2.%d", i), "P1", "available", "CT"))
	}
	_, _, b := get(t, f, "/fhir/ImagingStudy?patient=P1&_count=2")
	next := link(b, "next")
	if next == "" {
		t.Fatalf("no next link: %v", b)
	}
	// A small resource: the updates are many.
	pb, err := structpb.NewStruct(map[string]any{"resourceType": "ImagingStudy", "id": "1.2.0", "status": "available",
		"subject": map[string]any{"type": "Patient", "identifier": map[string]any{"system": "urn:test", "value": "P1"}}})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range fhir.SupersededKept + 1 {
		last, err = f.log.Append(context.Background(), eventlog.Key{IngestSeq: uint64(100 + i)}, &rbv1.Event{
			Type: rbv1.EventType_IMAGING_STUDY_UPDATED, PatientId: "P1", Time: timestamppb.New(t0),
			ResourceType: "ImagingStudy", ResourceId: "1.2.0", Resource: pb,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if last >= fhir.PagingWindow {
		t.Fatalf("%d events: the paging window alone would expire the cursor", last)
	}
	for deadline := time.Now().Add(time.Minute); f.h.Position() < last; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("indexed %d of %d events", f.h.Position(), last)
		}
	}
	code, _, b := get(t, f, pathOf(t, next))
	if code != http.StatusGone || b["resourceType"] != "OperationOutcome" {
		t.Errorf("next page after %d updates: %d %v, want 410 and an OperationOutcome", fhir.SupersededKept+1, code, b)
	}
	if code, _, b := get(t, f, "/fhir/ImagingStudy?patient=P1"); code != 200 || b["total"] != float64(3) {
		t.Errorf("a new search: %d, total %v", code, b["total"])
	}
}
