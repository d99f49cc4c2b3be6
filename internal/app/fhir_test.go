package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	"radbridge/fhir"
	"radbridge/fhir/subscription"
	"radbridge/internal/testkit"
)

// fhirClientPackage is the FHIR client library the FHIR test drives the
// API with: written elsewhere, from npm, at an exact version.
const fhirClientPackage = "fhir-kit-client@2.0.3"

// fhirClient installs fhirClientPackage into a cache directory (once) and
// returns that directory.
func fhirClient(t *testing.T) string {
	t.Helper()
	return npmPackage(t, fhirClientPackage, "fhir-kit-client")
}

// npmPackage installs pkg (name@exact-version) from npm into a cache
// directory (once) and returns that directory; name is the package's
// folder under node_modules.
func npmPackage(t *testing.T, pkg, name string) string {
	t.Helper()
	npm := testkit.Peer(t, "npm")
	testkit.Peer(t, "node")
	dir := os.Getenv("RADBRIDGE_NPM_CACHE")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "radbridge-test-npm")
	}
	dir = filepath.Join(dir, strings.NewReplacer("@", "-", "/", "-").Replace(pkg))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", name, "package.json")); err == nil {
		return dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--no-audit", "--no-fund", "--save-exact", pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		testkit.Missing(t, fmt.Sprintf("npm install %s: %v (offline?)\n%s", pkg, err, out))
	}
	return dir
}

// fhirClientScript drives the API with fhir-kit-client: the
// CapabilityStatement, searches paged with _count=1 to the end following
// next links, a read, and a search the token may not make. It prints every
// answer (bundles and resources, as received) and a summary as JSON.
const fhirClientScript = `
const { Client } = await import(process.env.FHIR_KIT);
const client = new Client({ baseUrl: process.env.BASE, bearerToken: process.env.TOKEN });
const received = [];
const out = { pages: {}, ids: {}, statuses: {}, totals: {} };
const cs = await client.capabilityStatement();
received.push(cs);
out.fhirVersion = cs.fhirVersion;
out.types = cs.rest[0].resource.map(r => r.type);
for (const type of ["ServiceRequest", "ImagingStudy", "DiagnosticReport"]) {
  let bundle = await client.search({ resourceType: type, searchParams: { patient: process.env.PATIENT, _count: 1 } });
  out.pages[type] = 0; out.ids[type] = []; out.statuses[type] = []; out.totals[type] = bundle.total;
  while (bundle) {
    received.push(bundle);
    out.pages[type]++;
    for (const e of bundle.entry || []) {
      if (e.search.mode !== "match") continue;
      out.ids[type].push(e.resource.id);
      out.statuses[type].push(e.resource.status);
    }
    bundle = await client.nextPage({ bundle });
  }
}
const study = await client.read({ resourceType: "ImagingStudy", id: out.ids.ImagingStudy[0] });
received.push(study);
out.read = { id: study.id, versionId: study.meta.versionId, lastUpdated: study.meta.lastUpdated };
try {
  await client.search({ resourceType: "ImagingStudy", searchParams: { patient: process.env.OTHER } });
  out.other = "allowed";
} catch (e) {
  out.other = e.response.status;
  received.push(e.response.data);
}
out.received = received;
console.log(JSON.stringify(out));
`

type fhirClientResult struct {
	FHIRVersion string              `json:"fhirVersion"`
	Types       []string            `json:"types"`
	Pages       map[string]int      `json:"pages"`
	IDs         map[string][]string `json:"ids"`
	Statuses    map[string][]string `json:"statuses"`
	Totals      map[string]int      `json:"totals"`
	Read        struct {
		ID, VersionID, LastUpdated string
	} `json:"read"`
	Other    any               `json:"other"`
	Received []json.RawMessage `json:"received"`
}

// validFHIR fails the test unless b is a valid FHIR R4 resource.
func validFHIR(t *testing.T, what string, b []byte) {
	t.Helper()
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Unmarshal(b); err != nil {
		t.Errorf("%s is not valid FHIR R4: %v\n%s", what, err, b)
	}
}

// fhirGet GETs a FHIR URL with a bearer token and checks the answer is
// valid FHIR R4.
func fhirGet(t *testing.T, url, token string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	validFHIR(t, "GET "+url, b)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: %d %q", url, resp.StatusCode, b)
	}
	return resp.StatusCode, resp.Header, m
}

// TestFHIRReadAPIWithAFHIRClient: a RIS sends orders and reports
// (mllp_send) and a PACS two studies (storescu) of one patient and one of
// another; fhir-kit-client, a FHIR client from npm, reads the
// CapabilityStatement, pages through each search with _count=1 and reads a
// study, with a token scoped to the first patient, which gets 403 for the
// other. Every answer is valid FHIR R4 (google/fhir).
func TestFHIRReadAPIWithAFHIRClient(t *testing.T) {
	mllp := testkit.Peer(t, "mllp_send")
	testkit.Peer(t, "storescu")
	kit := fhirClient(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("fhir-all-0123456789abcdef all\nfhir-mrn4711-0123456789abcdef ehr patient=MRN4711\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, filepath.Join(dir, "data"), "--hl7-patient-authority", "NORTHWING", "--study-quiet-period", "1s",
		"--auth", "tokens", "--auth-tokens-file", tokens)
	const all, scoped = "fhir-all-0123456789abcdef", "fhir-mrn4711-0123456789abcdef"
	for _, m := range risMessages { // ACC1001: placed … corrected; ACC1002: placed, cancelled
		if ack := testkit.MLLPSend(t, mllp, d.MLLPAddr(), testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl))); ack.Segment("MSA").Field(1) != "AA" {
			t.Fatalf("%s: %q", m.name, ack.Bytes())
		}
	}
	storeStudy(t, d, "1.2.826.0.1.3680043.10.1447.1501", "MRN4711", "ACC1001", 2)
	storeStudy(t, d, "1.2.826.0.1.3680043.10.1447.1502", "MRN4711", "ACC1003", 1)
	storeStudy(t, d, "1.2.826.0.1.3680043.10.1447.1509", "OTHER15", "ACC1509", 1)

	base := "http://" + d.HTTPAddr() + "/fhir"
	// Wait until both studies of MRN4711 are available.
	var code int
	var b map[string]any
	if !testkit.Poll(60*time.Second, func() bool {
		code, _, b = fhirGet(t, base+"/ImagingStudy?patient=MRN4711&status=available", all)
		return code == 200 && b["total"] == float64(2)
	}) {
		t.Fatalf("the two studies never became available over FHIR: %d %v", code, b)
	}

	script := filepath.Join(dir, "client.mjs")
	if err := os.WriteFile(script, []byte(fhirClientScript), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(), "FHIR_KIT=file://"+filepath.Join(kit, "node_modules", "fhir-kit-client", "dist", "index.js"),
		"BASE="+base, "TOKEN="+scoped, "PATIENT=MRN4711", "OTHER=OTHER15")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node fhir-kit-client: %v\n%s\n%s", err, out, stderr)
	}
	var r fhirClientResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("client output: %v\n%s", err, out)
	}
	for i, b := range r.Received {
		validFHIR(t, fmt.Sprintf("answer %d the client received", i), b)
	}
	if r.FHIRVersion != "4.0.1" || !slices.Equal(r.Types, []string{"ImagingStudy", "DiagnosticReport", "ServiceRequest", "Subscription"}) {
		t.Errorf("CapabilityStatement: fhirVersion %q, resources %v", r.FHIRVersion, r.Types)
	}
	want := map[string][]string{
		"ServiceRequest":   {"revoked", "completed"}, // newest first: ACC1002 cancelled, ACC1001 done
		"ImagingStudy":     {"available", "available"},
		"DiagnosticReport": {"corrected"},
	}
	for typ, st := range want {
		if r.Totals[typ] != len(st) || r.Pages[typ] != len(st) || len(r.IDs[typ]) != len(st) {
			t.Errorf("%s: total %d, %d pages of _count=1, ids %v; want %d", typ, r.Totals[typ], r.Pages[typ], r.IDs[typ], len(st))
		}
		if !slices.Equal(r.Statuses[typ], st) {
			t.Errorf("%s statuses %v, want %v", typ, r.Statuses[typ], st)
		}
	}
	if !slices.Contains(r.IDs["ImagingStudy"], "1.2.826.0.1.3680043.10.1447.1501") || slices.Contains(r.IDs["ImagingStudy"], "1.2.826.0.1.3680043.10.1447.1509") {
		t.Errorf("ImagingStudy ids %v", r.IDs["ImagingStudy"])
	}
	if r.Other != float64(403) {
		t.Errorf("a search of another patient with a scoped token: %v, want 403", r.Other)
	}

	// The read's version is the event that last changed the study.
	code, hdr, study := fhirGet(t, base+"/ImagingStudy/"+r.Read.ID, scoped)
	if code != 200 || hdr.Get("ETag") != `W/"`+r.Read.VersionID+`"` || r.Read.LastUpdated == "" {
		t.Errorf("read: %d ETag %q, client saw version %q", code, hdr.Get("ETag"), r.Read.VersionID)
	}
	seq, _ := strconv.ParseUint(hdr.Get("X-Radbridge-Event-Seq"), 10, 64)
	ver, _ := strconv.ParseUint(study["meta"].(map[string]any)["versionId"].(string), 10, 64)
	if seq == 0 || ver == 0 || ver > seq {
		t.Errorf("read reflects event %d, resource version %d", seq, ver)
	}

	// meta agrees with the event log: the newest event about the study
	// (GET /v1/events) has the version's sequence and time.
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.HTTPAddr()+"/v1/events?patient_id=MRN4711&resource_type=ImagingStudy&page_size=1000", nil)
	req.Header.Set("Authorization", "Bearer "+all)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Events []struct {
			Sequence   string `json:"sequence"`
			Time       string `json:"time"`
			Type       string `json:"type"`
			ResourceID string `json:"resource_id"`
		} `json:"events"`
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var lastSeq, lastTime string
	for _, ev := range list.Events {
		if ev.ResourceID == r.Read.ID && ev.Type != "IMAGING_STUDY_VIEWED" {
			lastSeq, lastTime = ev.Sequence, ev.Time
		}
	}
	if tm, err := time.Parse(time.RFC3339Nano, lastTime); lastSeq != r.Read.VersionID || err != nil || tm.UTC().Format("2006-01-02T15:04:05.000000Z") != r.Read.LastUpdated {
		t.Errorf("study %s: meta versionId %s lastUpdated %s; newest event in GET /v1/events: %s at %s", r.Read.ID, r.Read.VersionID, r.Read.LastUpdated, lastSeq, lastTime)
	}

	// Scoping: another patient's study is not found, and totals count the
	// token's patient only.
	if code, _, b := fhirGet(t, base+"/ImagingStudy/1.2.826.0.1.3680043.10.1447.1509", scoped); code != 404 || b["resourceType"] != "OperationOutcome" {
		t.Errorf("another patient's study with a scoped token: %d %v", code, b)
	}
	if _, _, b := fhirGet(t, base+"/ImagingStudy", scoped); b["total"] != float64(2) {
		t.Errorf("scoped search without patient: total %v, want 2", b["total"])
	}
	if _, _, b := fhirGet(t, base+"/ImagingStudy", all); b["total"] != float64(3) {
		t.Errorf("unscoped search: total %v, want 3", b["total"])
	}
	if code, _, _ := fhirGet(t, base+"/ImagingStudy", ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
	// Identifier searches: the accession, the Study UID as urn:oid.
	if _, _, b := fhirGet(t, base+"/ImagingStudy?identifier=urn:oid:1.2.826.0.1.3680043.10.1447.1502", all); b["total"] != float64(1) {
		t.Errorf("by Study UID: %v", b["total"])
	}
	if _, _, b := fhirGet(t, base+"/ServiceRequest?identifier=ACC1002&status=revoked", all); b["total"] != float64(1) {
		t.Errorf("by accession and status: %v", b["total"])
	}
	if _, _, b := fhirGet(t, base+"/ImagingStudy?modality=MR&patient=MRN4711", all); b["total"] != float64(0) {
		t.Errorf("modality MR: %v", b["total"])
	}
	// Paging while the RIS sends a new order: the pages of a search begun
	// before it neither show it nor skip or repeat the others.
	_, _, page := fhirGet(t, base+"/ServiceRequest?patient=MRN4711&_count=1", all)
	seen := fhirIDs(page)
	m := risMessages[5]
	newOrder := strings.NewReplacer("PLC1002", "PLC1004", "FIL1002", "FIL1004", "ACC1002", "ACC1004", "{{ctl}}", "ORM-1504").Replace(m.msg)
	if ack := testkit.MLLPSend(t, mllp, d.MLLPAddr(), testkit.WriteHL7(t, "ORM-1504", newOrder)); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("new order: %q", ack.Bytes())
	}
	testkit.Eventually(t, 30*time.Second, "the new order over FHIR", func() bool {
		_, _, b := fhirGet(t, base+"/ServiceRequest?patient=MRN4711&_count=0", all)
		return b["total"] == float64(3)
	})
	for next := fhirLink(page, "next"); next != ""; next = fhirLink(page, "next") {
		_, _, page = fhirGet(t, next, all)
		if page["total"] != float64(2) {
			t.Errorf("a later page of the search begun before the new order: total %v, want 2", page["total"])
		}
		seen = append(seen, fhirIDs(page)...)
	}
	slices.Sort(seen)
	if want := slices.Sorted(slices.Values(r.IDs["ServiceRequest"])); !slices.Equal(seen, want) {
		t.Errorf("paged while an order arrived: %v, want %v", seen, want)
	}

	// Hostile input gets an OperationOutcome.
	for _, q := range []string{"?_count=99999999999999999999", "?patient=", "?_lastUpdated=gt", "?identifier=" + strings.Repeat("x", 10000), "/..%2f..%2fetc", "?_sort=-_lastUpdated&_cursor=%00"} {
		code, _, b := fhirGet(t, base+"/ImagingStudy"+q, all)
		if code < 400 || b["resourceType"] != "OperationOutcome" {
			t.Errorf("ImagingStudy%s: %d %v", q[:min(len(q), 40)], code, b["resourceType"])
		}
	}
}

// TestFHIRMetadataListsTheSubscriptionTopics: the CapabilityStatement an
// EHR reads first names every topic it may subscribe to (the backport's
// capabilitystatement-subscriptiontopic-canonical extension on
// Subscription) and the backport's operations, and is valid R4.
func TestFHIRMetadataListsTheSubscriptionTopics(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	resp, err := http.Get("http://" + d.HTTPAddr() + "/fhir/metadata")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	validFHIR(t, "metadata", b)
	var cs struct {
		Rest []struct {
			Resource []struct {
				Type      string `json:"type"`
				Extension []struct {
					URL            string `json:"url"`
					ValueCanonical string `json:"valueCanonical"`
				} `json:"extension"`
				Operation []struct {
					Name string `json:"name"`
				} `json:"operation"`
			} `json:"resource"`
		} `json:"rest"`
	}
	if err := json.Unmarshal(b, &cs); err != nil || len(cs.Rest) != 1 {
		t.Fatalf("metadata: %v\n%s", err, b)
	}
	var topics, ops []string
	for _, r := range cs.Rest[0].Resource {
		if r.Type != "Subscription" {
			continue
		}
		for _, e := range r.Extension {
			if e.URL == fhir.TopicCanonicalExtension {
				topics = append(topics, e.ValueCanonical)
			}
		}
		for _, o := range r.Operation {
			ops = append(ops, o.Name)
		}
	}
	if want := subscription.Topics(); !slices.Equal(topics, want) || len(want) < 7 {
		t.Errorf("topics on the CapabilityStatement: %v, want %v", topics, want)
	}
	for _, tp := range topics {
		if !strings.HasPrefix(tp, "https://radbridge.dev/fhir/SubscriptionTopic/") {
			t.Errorf("topic %s is not under the project's canonical base", tp)
		}
	}
	if !slices.Equal(ops, []string{"status", "events", "get-ws-binding-token"}) {
		t.Errorf("Subscription operations: %v", ops)
	}
}

// TestFHIROverHTTPS: the FHIR API is on the HTTPS front too, and its links
// start with --public-base-url.
func TestFHIROverHTTPS(t *testing.T) {
	p := newPKI(t)
	d, _ := startTLSDaemon(t, p, append(p.serverFlags(false), "--http-addr", "", "--mllp-addr", "", "--dicom-addr", "", "--grpc-addr", "",
		"--https-addr", "127.0.0.1:0", "--public-base-url", "https://radbridge.example.org/")...)
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientConfig(t, "")}}
	for _, path := range []string{"/fhir/metadata", "/fhir/ServiceRequest?status=active"} {
		resp, err := https.Get("https://" + d.HTTPSAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		validFHIR(t, path, b)
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"https://radbridge.example.org/fhir`) {
			t.Errorf("GET %s over HTTPS: %d %s", path, resp.StatusCode, b)
		}
	}
}

// fhirIDs returns the ids of a searchset Bundle's matches.
func fhirIDs(bundle map[string]any) []string {
	var ids []string
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		e, _ := e.(map[string]any)
		if s, _ := e["search"].(map[string]any); s["mode"] == "match" {
			ids = append(ids, e["resource"].(map[string]any)["id"].(string))
		}
	}
	return ids
}

// fhirLink returns a Bundle's link of relation rel, or "".
func fhirLink(bundle map[string]any, rel string) string {
	links, _ := bundle["link"].([]any)
	for _, l := range links {
		if l, _ := l.(map[string]any); l["relation"] == rel {
			u, _ := l["url"].(string)
			return u
		}
	}
	return ""
}
