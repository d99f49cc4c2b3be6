package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/metadata"

	"radbridge/internal/config"
	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// sendHTTP sends a request with the given headers and returns the status
// and body.
func sendHTTP(t *testing.T, method, url, body string, h http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// crossSiteNotification is a notification of a study for patient, as a
// form-encoded body would carry it.
func crossSiteNotification(t *testing.T, patient, study string) string {
	return mustJSON(t, map[string]any{"complete": true, "study": notifyStudy(patient, "ACC-X"), "instances": []any{notifyInstance(study, 1, 1)}})
}

// waitNotified posts a notification of sentinel's study with the bearer
// token and waits for its event: the ingest log is ordered, so anything
// recorded before it was mapped before it too.
func waitNotified(t *testing.T, base, token, patient, study string) {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	if code, body := sendHTTP(t, "POST", base+"/v1/dicom/notifications", crossSiteNotification(t, patient, study), h); code != 200 {
		t.Fatalf("sentinel notification: %d %s", code, body)
	}
	var code int
	var body string
	if !testkit.Poll(30*time.Second, func() bool {
		code, body = sendHTTP(t, "GET", base+"/v1/events?patient_id="+patient, "", h)
		return code == 200 && strings.Contains(body, study)
	}) {
		t.Fatalf("sentinel study not mapped: %d %s", code, body)
	}
}

// TestCrossSiteWritesRefused: the radbridge_token cookie opens WebSockets
// only (with their Origin check); a cross-site form post (form-encoded or
// text/plain, with the cookie and a foreign Origin) records nothing; every
// REST endpoint refuses the cookie.
func TestCrossSiteWritesRefused(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(fullToken+" reader\n"), 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens, "--study-quiet-period", "1s")
	base := "http://" + d.HTTPAddr()
	cookie := "radbridge_token=" + fullToken
	forged := crossSiteNotification(t, "MRN-VICTIM", "1.2.826.0.1.3680043.10.1447.500")

	for _, tc := range []struct {
		name, method, path, ct, body string
		want                         int
	}{
		{"notification, form-encoded", "POST", "/v1/dicom/notifications", "application/x-www-form-urlencoded", forged + "=", 415},
		{"notification, text/plain", "POST", "/v1/dicom/notifications", "text/plain", forged, 415},
		{"notification, multipart form", "POST", "/v1/dicom/notifications", "multipart/form-data; boundary=x", "--x\r\n\r\n" + forged + "\r\n--x--\r\n", 415},
		{"notification, JSON with the cookie only", "POST", "/v1/dicom/notifications", "application/json", forged, 401},
		{"publish, text/plain", "POST", "/v1/events", "text/plain", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"MRN-VICTIM","study_instance_uid":"1.2.3"}`, 415},
		{"publish, JSON with the cookie only", "POST", "/v1/events", "application/json", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"MRN-VICTIM","study_instance_uid":"1.2.3"}`, 401},
		{"STOW-RS with the cookie only", "POST", "/dicomweb/studies", `multipart/related; type="application/dicom"; boundary=x`, "--x--\r\n", 401},
		{"events", "GET", "/v1/events", "", "", 401},
		{"patient imaging", "GET", "/v1/patients/MRN-VICTIM/imaging", "", "", 401},
		{"metrics", "GET", "/metrics", "", "", 401},
		{"status", "GET", "/v1/status", "", "", 401},
		{"thumbnail", "GET", "/v1/studies/1.2.3/thumbnail", "", "", 401},
	} {
		h := http.Header{"Cookie": {cookie}, "Origin": {"https://evil.example.com"}}
		if tc.ct != "" {
			h.Set("Content-Type", tc.ct)
		}
		if code, body := sendHTTP(t, tc.method, base+tc.path, tc.body, h); code != tc.want {
			t.Errorf("%s with the cookie from a foreign page: %d %s; want %d", tc.name, code, body, tc.want)
		}
	}
	// The same requests with the header work: the refusals above are the
	// cookie's and the type's, not the endpoints'.
	bearer := http.Header{"Authorization": {"Bearer " + fullToken}}
	for _, p := range []string{"/v1/events", "/metrics", "/v1/status"} {
		if code, body := sendHTTP(t, "GET", base+p, "", bearer); code != 200 {
			t.Errorf("GET %s with the header: %d %s", p, code, body)
		}
	}
	h := bearer.Clone()
	h.Set("Content-Type", "text/plain")
	if code, body := sendHTTP(t, "POST", base+"/v1/events", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"MRN-VICTIM","study_instance_uid":"1.2.3"}`, h); code != 415 {
		t.Errorf("publish as text/plain with the header: %d %s; want 415", code, body)
	}

	// The WebSocket still takes the cookie, from its own origin only.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ws, code, err := wsDial(ctx, d.HTTPAddr(), "since=0", http.Header{"Cookie": {cookie}}); err != nil {
		t.Errorf("WebSocket with the cookie: %d %v", code, err)
	} else {
		ws.CloseNow()
	}
	if _, code, err := wsDial(ctx, d.HTTPAddr(), "since=0", http.Header{"Cookie": {cookie}, "Origin": {"https://evil.example.com"}}); err == nil || code != 403 {
		t.Errorf("WebSocket with the cookie from a foreign origin: %d %v; want 403", code, err)
	}

	// Nothing was recorded for the victim.
	waitNotified(t, base, fullToken, "MRN-SENTINEL", "1.2.826.0.1.3680043.10.1447.501")
	if code, body := sendHTTP(t, "GET", base+"/v1/events?patient_id=MRN-VICTIM", "", bearer); code != 200 || !strings.Contains(body, `"events":[]`) {
		t.Errorf("events of the victim: %d %s; want none", code, body)
	}
}

// TestCrossSiteFormWithoutAuth: with --auth none a page on any site could
// post as anyone; the Content-Type rule still refuses a form.
func TestCrossSiteFormWithoutAuth(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s")
	base := "http://" + d.HTTPAddr()
	h := http.Header{"Content-Type": {"text/plain"}, "Origin": {"https://evil.example.com"}}
	if code, body := sendHTTP(t, "POST", base+"/v1/dicom/notifications", crossSiteNotification(t, "MRN-VICTIM", "1.2.826.0.1.3680043.10.1447.502"), h); code != 415 {
		t.Errorf("text/plain notification: %d %s; want 415", code, body)
	}
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	if code, body := sendHTTP(t, "POST", base+"/v1/events", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"MRN-VICTIM","study_instance_uid":"1.2.3"}=`, h); code != 415 {
		t.Errorf("form-encoded publish: %d %s; want 415", code, body)
	}
	waitNotified(t, base, "", "MRN-SENTINEL", "1.2.826.0.1.3680043.10.1447.503")
	if _, m := testkit.GetJSON(t, base+"/v1/events?patient_id=MRN-VICTIM"); len(asSlice(m["events"])) != 0 {
		t.Errorf("events of the victim: %v; want none", m)
	}
}

// viewedAs publishes IMAGING_STUDY_VIEWED with token and returns the event.
func viewedAs(t *testing.T, base, token, body string, h http.Header) map[string]any {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "application/json")
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	code, b := sendHTTP(t, "POST", base+"/v1/events", body, h)
	if code != 200 {
		t.Fatalf("publish %s: %d %s", body, code, b)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(b), &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// agentOf returns the AuditEvent's agent: who's identifier value, name.
func agentOf(ev map[string]any) (subject, name string) {
	res, _ := ev["resource"].(map[string]any)
	agents, _ := res["agent"].([]any)
	if len(agents) != 1 {
		return "", ""
	}
	a, _ := agents[0].(map[string]any)
	who, _ := a["who"].(map[string]any)
	id, _ := who["identifier"].(map[string]any)
	subject, _ = id["value"].(string)
	name, _ = a["name"].(string)
	return subject, name
}

// TestAuditCannotBeForged: two tokens reusing one client_event_id each get
// their own AuditEvent, whose agent is their subject (the viewer name they
// give is extra information); a resend by the same token is the same
// event; the client address is the peer's unless it is a trusted proxy.
func TestAuditCannotBeForged(t *testing.T) {
	const (
		nurseP1 = "nurse-token-P1-0123456789"
		nurseP2 = "nurse-token-P2-0123456789"
	)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(fullToken+" reader\n"+nurseP1+" nurse-1 patient=P1\n"+nurseP2+" nurse-2 patient=P2\n"), 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens)
	base := "http://" + d.HTTPAddr()
	view := func(patient, viewer string) string {
		return fmt.Sprintf(`{"type":"IMAGING_STUDY_VIEWED","patient_id":%q,"study_instance_uid":"1.2.3","viewer_name":%q,"viewer_id":"u-1","client_event_id":"evt-1"}`, patient, viewer)
	}

	first := viewedAs(t, base, nurseP2, view("P2", "Nurse Two"), nil)
	// Another patient's token reuses the id: its own event, its patient.
	second := viewedAs(t, base, nurseP1, view("P1", "Nurse Two"), nil)
	// An unrestricted token reuses it for the same patient and content.
	third := viewedAs(t, base, fullToken, view("P2", "Nurse Two"), nil)
	ids := map[any]bool{first["id"]: true, second["id"]: true, third["id"]: true}
	if len(ids) != 3 {
		t.Errorf("event ids %v %v %v: want three events", first["id"], second["id"], third["id"])
	}
	for _, c := range []struct {
		ev                     map[string]any
		patient, subject, name string
	}{{first, "P2", "nurse-2", "Nurse Two"}, {second, "P1", "nurse-1", "Nurse Two"}, {third, "P2", "reader", "Nurse Two"}} {
		sub, name := agentOf(c.ev)
		if c.ev["patient_id"] != c.patient || sub != c.subject || name != c.name {
			t.Errorf("event %v: patient %v, agent %q named %q; want %s, %s, %s\n%v", c.ev["id"], c.ev["patient_id"], sub, name, c.patient, c.subject, c.name, c.ev["resource"])
		}
	}
	// A resend by the same token is the same event.
	if again := viewedAs(t, base, nurseP1, view("P1", "Nurse Two"), nil); again["id"] != second["id"] {
		t.Errorf("resend: event %v, want %v", again["id"], second["id"])
	}
	code, body := sendHTTP(t, "GET", base+"/v1/events?type=IMAGING_STUDY_VIEWED", "", http.Header{"Authorization": {"Bearer " + fullToken}})
	if code != 200 || strings.Count(body, `"resourceType":"AuditEvent"`) != 3 {
		t.Errorf("viewed events: %d %s; want 3", code, body)
	}

	// X-Forwarded-For from a client that is no trusted proxy is ignored,
	// and so is a client's attempt to set the gateway's own metadata.
	spoof := http.Header{"X-Forwarded-For": {"203.0.113.9"}, "Grpc-Metadata-X-Radbridge-Client-Addr": {"198.51.100.7"}}
	ev := viewedAs(t, base, fullToken, `{"type":"IMAGING_STUDY_VIEWED","patient_id":"P1","study_instance_uid":"1.2.3"}`, spoof)
	if c := clientOf(ev); !strings.HasPrefix(c, "127.0.0.1:") {
		t.Errorf("REST with X-Forwarded-For: client %q; want the peer 127.0.0.1:port", c)
	}
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gctx := metadata.AppendToOutgoingContext(bearerCtx(ctx, fullToken), "x-forwarded-for", "203.0.113.9", "x-radbridge-client-addr", "198.51.100.7")
	gev, err := client.PublishEvent(gctx, &rbv1.PublishEventRequest{Type: rbv1.EventType_IMAGING_STUDY_VIEWED, PatientId: "P1", StudyInstanceUid: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if c := gev.GetSource().GetClient(); !strings.HasPrefix(c, "127.0.0.1:") {
		t.Errorf("gRPC with x-forwarded-for: client %q; want the peer 127.0.0.1:port", c)
	}
	if sub := gev.GetResource().AsMap()["agent"].([]any)[0].(map[string]any)["who"].(map[string]any)["display"]; sub != "reader" {
		t.Errorf("gRPC agent %v, want reader", sub)
	}

	// Behind a trusted proxy: the first address from the right that is not
	// a trusted proxy.
	d2 := startDaemon(t, filepath.Join(dir, "data2"), "--trusted-proxies", "127.0.0.1/32, 10.0.0.0/8")
	base2 := "http://" + d2.HTTPAddr()
	ev = viewedAs(t, base2, "", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"P1","study_instance_uid":"1.2.3"}`,
		http.Header{"X-Forwarded-For": {"198.51.100.1, 203.0.113.9", "10.1.2.3"}})
	if c := clientOf(ev); c != "203.0.113.9" {
		t.Errorf("REST behind trusted proxies: client %q; want 203.0.113.9", c)
	}
	client2, _ := grpcClient(t, d2.GRPCAddr())
	gev, err = client2.PublishEvent(metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", "203.0.113.10"),
		&rbv1.PublishEventRequest{Type: rbv1.EventType_IMAGING_STUDY_VIEWED, PatientId: "P1", StudyInstanceUid: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if c := gev.GetSource().GetClient(); c != "203.0.113.10" {
		t.Errorf("gRPC behind a trusted proxy: client %q; want 203.0.113.10", c)
	}
	if sub, _ := agentOf(viewedAs(t, base2, "", `{"type":"IMAGING_STUDY_VIEWED","patient_id":"P1","study_instance_uid":"1.2.3"}`, nil)); sub != "anonymous" {
		t.Errorf("--auth none agent %q, want anonymous", sub)
	}
}

func clientOf(ev map[string]any) string {
	src, _ := ev["source"].(map[string]any)
	c, _ := src["client"].(string)
	return c
}

// TestJWTClaimsThroughDaemon: with --auth-jwt-audience a token without aud
// is refused; so are a crit header and a duplicate or odd-case patient
// claim that would lift the patient restriction.
func TestJWTClaimsThroughDaemon(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("0123456789abcdef0123456789abcdef-test-secret")
	keyFile := filepath.Join(dir, "jwt.key")
	os.WriteFile(keyFile, secret, 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "jwt", "--auth-jwt-key-file", keyFile, "--auth-jwt-audience", "radbridge")
	base := "http://" + d.HTTPAddr()
	exp := time.Now().Add(time.Hour).Unix()
	raw := func(header, payload string) string {
		in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
		sig, err := jwt.SigningMethodHS256.Sign(in, secret)
		if err != nil {
			t.Fatal(err)
		}
		return in + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	claims := func(more string) string { return fmt.Sprintf(`{"sub":"dr-who","exp":%d%s}`, exp, more) }
	hdr := `{"alg":"HS256","typ":"JWT"}`
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"aud and patient P2", raw(hdr, claims(`,"aud":"radbridge","patient":"P2"`)), 200},
		{"no aud", raw(hdr, claims(`,"patient":"P2"`)), 401},
		{"another aud", raw(hdr, claims(`,"aud":"other","patient":"P2"`)), 401},
		{"crit", raw(`{"alg":"HS256","crit":["exp-ext"],"exp-ext":1}`, claims(`,"aud":"radbridge","patient":"P2"`)), 401},
		{"P1 then Patient null", raw(hdr, claims(`,"aud":"radbridge","patient":"P1","Patient":null`)), 401},
		{"P1 then patient null", raw(hdr, claims(`,"aud":"radbridge","patient":"P1","patient":null`)), 401},
		{"P1 only", raw(hdr, claims(`,"aud":"radbridge","patient":"P1"`)), 403},
	} {
		if code, body := httpDo(t, "GET", base+"/v1/patients/P2/imaging", tc.token, ""); code != tc.want && !(tc.want == 200 && code == 404) {
			t.Errorf("%s: imaging of P2: %d %s; want %d", tc.name, code, body, tc.want)
		}
	}
}

// TestSecurityFlagsValidated: malformed --trusted-proxies and
// --public-base-url stop the daemon at start.
func TestSecurityFlagsValidated(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--trusted-proxies", "10.0.0.0/33"},
		{"--trusted-proxies", "proxy.example.org"},
		{"--public-base-url", "radbridge.example.org"},
		{"--public-base-url", "ftp://radbridge.example.org"},
		{"--public-base-url", "https://radbridge.example.org/?x=1"},
	} {
		if _, err := config.Load("test", append([]string{"--data-dir", dir}, args...), func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	cfg, err := config.Load("test", []string{"--data-dir", dir, "--trusted-proxies", "10.0.0.0/8, 192.0.2.1,::1", "--public-base-url", "https://radbridge.example.org/pacs"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := cfg.TrustedProxyPrefixes(); err != nil || fmt.Sprint(p) != "[10.0.0.0/8 192.0.2.1/32 ::1/128]" {
		t.Errorf("TrustedProxyPrefixes() = %v, %v", p, err)
	}
}

// TestSTOWRetrieveURLNotFromHost: the RetrieveURLs of a STOW-RS answer
// start with --public-base-url whatever Host the client sends; without
// it there are none.
func TestSTOWRetrieveURLNotFromHost(t *testing.T) {
	src := t.TempDir()
	makeStudy(t, src, studyUID, 1, 1, 1)
	ct, body := stowBody(t, []string{src})
	for _, c := range []struct{ flag, want string }{{stowPublicBase, stowPublicBase + "/dicomweb/studies/" + studyUID + "/series/"}, {"", ""}} {
		args := []string{}
		if c.flag != "" {
			args = append(args, "--public-base-url", c.flag+"/")
		}
		d := startDaemon(t, filepath.Join(t.TempDir(), "data"), args...)
		req, err := http.NewRequest("POST", "http://"+d.HTTPAddr()+"/dicomweb/studies", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "evil.example.com"
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(b), "evil.example.com") {
			t.Errorf("--public-base-url %q: %d %s", c.flag, resp.StatusCode, b)
		}
		if got := strings.Contains(string(b), `"00081190"`); got != (c.want != "") || !strings.Contains(string(b), c.want) {
			t.Errorf("--public-base-url %q: RetrieveURL present %v, want %q in %s", c.flag, got, c.want, b)
		}
	}
}
