package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const (
	nurse1Token     = "fhir-nurse-one-0123456789abcdef"
	nurse2Token     = "fhir-nurse-two-0123456789abcdef"
	fhirReaderToken = "fhir-reader-all-0123456789abcde"
)

// bindingToken asks for a websocket binding token of subscription id.
func bindingToken(t *testing.T, base, token, id string) (tok, wsURL string, exp time.Time) {
	t.Helper()
	code, m := fhirDo(t, "POST", base+"/fhir/Subscription/"+id+"/$get-ws-binding-token", token, "")
	if code != 200 || m["resourceType"] != "Parameters" {
		t.Fatalf("$get-ws-binding-token: %d %v", code, m)
	}
	for _, p := range m["parameter"].([]any) {
		p := p.(map[string]any)
		switch p["name"] {
		case "token":
			tok = p["valueString"].(string)
		case "websocket-url":
			wsURL = p["valueUrl"].(string)
		case "expiration":
			exp, _ = time.Parse(time.RFC3339, p["valueDateTime"].(string))
		}
	}
	if tok == "" || wsURL == "" || exp.IsZero() {
		t.Fatalf("$get-ws-binding-token: %v", m)
	}
	return tok, wsURL, exp
}

// bindWS connects to wsURL and sends msg; it returns the connection and
// the first message the server sends back.
func bindWS(t *testing.T, wsURL, msg string) (*websocket.Conn, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return c, nil, err
	}
	_, b, err := c.Read(ctx)
	return c, b, err
}

// wantClose reads from c until the server closes it and checks the code.
func wantClose(t *testing.T, what string, c *websocket.Conn, code websocket.StatusCode, reason string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code || !strings.Contains(ce.Reason, reason) {
			t.Errorf("%s: %v; want close %d %s", what, err, code, reason)
		}
		return
	}
}

// TestFHIRSubscriptionScopeAndHostileInput: a patient-scoped token may
// subscribe only to its patient and cannot read, bind or delete another
// client's subscription; malformed resources, unknown topics and filters
// get a 400 OperationOutcome; a reused, expired or garbage bind gets an
// error and a close code.
func TestFHIRSubscriptionScopeAndHostileInput(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(nurse1Token+" nurse1 patient=P1\n"+nurse2Token+" nurse2 patient=P2\n"+fhirReaderToken+" reader\n"), 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens, "--fhir-ws-binding-token-ttl", "1s")
	base := "http://" + d.HTTPAddr()

	ws := func(filters ...string) string {
		return subscriptionJSON("imaging-study-available", "websocket", "", "id-only", filters...)
	}
	outcome := func(what string, code int, m map[string]any, wantCode int, wantText string) {
		t.Helper()
		b, _ := json.Marshal(m)
		if code != wantCode || m["resourceType"] != "OperationOutcome" || !strings.Contains(string(b), wantText) {
			t.Errorf("%s: %d %s; want %d OperationOutcome %q", what, code, b, wantCode, wantText)
		}
		if _, err := fhirR4.Unmarshal(b); err != nil {
			t.Errorf("%s: not a valid R4 OperationOutcome: %v", what, err)
		}
	}

	// Scope.
	code, m := fhirDo(t, "POST", base+"/fhir/Subscription", "", ws())
	outcome("no token", code, m, 401, "AUTH_FAILED")
	code, m = fhirDo(t, "POST", base+"/fhir/Subscription", nurse1Token, ws())
	outcome("patient token, no patient filter", code, m, 403, "forbidden")
	code, m = fhirDo(t, "POST", base+"/fhir/Subscription", nurse1Token, ws("ImagingStudy?patient=Patient/P2"))
	outcome("patient token, another patient", code, m, 403, "forbidden")
	code, m = fhirDo(t, "POST", base+"/fhir/Subscription", nurse1Token, ws("ImagingStudy?patient=Patient/P1,Patient/P2"))
	outcome("patient token, its and another patient", code, m, 403, "forbidden")
	id := createSubscription(t, base, nurse1Token, ws("ImagingStudy?patient=Patient/P1"))
	waitStatus(t, base, nurse1Token, id, "active")
	for _, tok := range []string{nurse2Token, fhirReaderToken} {
		code, m = fhirDo(t, "GET", base+"/fhir/Subscription/"+id, tok, "")
		outcome("read another's subscription", code, m, 404, "not-found")
		code, m = fhirDo(t, "GET", base+"/fhir/Subscription/"+id+"/$status", tok, "")
		outcome("$status of another's subscription", code, m, 404, "not-found")
		code, m = fhirDo(t, "GET", base+"/fhir/Subscription/"+id+"/$events", tok, "")
		outcome("$events of another's subscription", code, m, 404, "not-found")
		code, m = fhirDo(t, "POST", base+"/fhir/Subscription/"+id+"/$get-ws-binding-token", tok, "")
		outcome("binding token of another's subscription", code, m, 404, "not-found")
		code, m = fhirDo(t, "DELETE", base+"/fhir/Subscription/"+id, tok, "")
		outcome("delete another's subscription", code, m, 404, "not-found")
		code, m = fhirDo(t, "GET", base+"/fhir/Subscription", tok, "")
		if code != 200 || m["total"].(float64) != 0 {
			t.Errorf("search by another client: %d %v", code, m)
		}
	}
	code, m = fhirDo(t, "GET", base+"/fhir/Subscription", nurse1Token, "")
	if code != 200 || m["total"].(float64) != 1 {
		t.Errorf("search by the owner: %d %v", code, m)
	}

	// Hostile resources.
	for _, c := range []struct{ name, body, want string }{
		{"not JSON", `{"resourceType":"Subscription",`, "not a Subscription"},
		{"wrong resource type", `{"resourceType":"Patient"}`, "resourceType"},
		{"unknown element", strings.Replace(ws("ImagingStudy?patient=P1"), `"reason"`, `"bogus":1,"reason"`, 1), "bogus"},
		{"unknown topic", strings.Replace(ws("ImagingStudy?patient=P1"), "imaging-study-available", "no-such-topic", 1), "unknown topic"},
		{"unknown filter", ws("ImagingStudy?patient=P1&color=red"), "no filter \\\"color\\\""},
		{"bad modality", ws("ImagingStudy?patient=P1&modality=ct;drop"), "modality"},
		{"bad status", ws("ImagingStudy?patient=P1&status=final"), "status"},
		{"bad priority", ws("ImagingStudy?patient=P1&priority=urgent"), "priority"},
		{"other resource type", ws("DiagnosticReport?patient=P1"), "not DiagnosticReport"},
		{"unknown channel", strings.Replace(ws("ImagingStudy?patient=P1"), `"websocket"`, `"email"`, 1), "channel.type"},
		{"rest-hook to the metadata service", subscriptionJSON("imaging-study-available", "rest-hook", "http://169.254.169.254/latest", "empty", "ImagingStudy?patient=P1"), "internal address"},
		{"bad content", strings.Replace(ws("ImagingStudy?patient=P1"), `"id-only"`, `"everything"`, 1), "payload-content"},
		{"feed without patient", subscriptionJSON("patient-imaging-feed", "websocket", "", "empty"), "needs a patient filter"},
	} {
		code, m = fhirDo(t, "POST", base+"/fhir/Subscription", fhirReaderToken, c.body)
		outcome(c.name, code, m, 400, c.want)
	}
	req, _ := http.NewRequest("POST", base+"/fhir/Subscription", strings.NewReader(ws("ImagingStudy?patient=P1")))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Authorization", "Bearer "+fhirReaderToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 415 {
		t.Errorf("text/plain body: %v %v; want 415", resp, err)
	} else {
		resp.Body.Close()
	}

	// Binding: once per token; not after it expired; a garbage message.
	tok, wsURL, _ := bindingToken(t, base, nurse1Token, id)
	c, first, err := bindWS(t, wsURL, "bind-with-token "+tok)
	if err != nil {
		t.Fatalf("bind: %v", err)
	}
	if n := readNotification(t, first); n.Type != "handshake" {
		t.Errorf("first message after bind: %s", first)
	}
	c.Close(websocket.StatusNormalClosure, "")
	c, first, _ = bindWS(t, wsURL, `{"type":"bind-with-token","payload":{"token":"`+tok+`"}}`)
	if !strings.Contains(string(first), "TOKEN_INVALID") {
		t.Errorf("reused token: first message %s", first)
	}
	wantClose(t, "reused token", c, 4001, "TOKEN_INVALID")
	c, _, _ = bindWS(t, wsURL, "bind-with-token never-issued-token")
	wantClose(t, "unknown token", c, 4001, "TOKEN_INVALID")
	c, _, _ = bindWS(t, wsURL, "hello")
	wantClose(t, "garbage bind", c, websocket.StatusPolicyViolation, "BAD_MESSAGE")
	tok, wsURL, exp := bindingToken(t, base, nurse1Token, id)
	// Not a wait for a state: the token expires by the clock alone.
	for time.Now().Before(exp.Add(50 * time.Millisecond)) {
		time.Sleep(exp.Add(50*time.Millisecond).Sub(time.Now()) / 2)
	}
	c, first, _ = bindWS(t, wsURL, "bind-with-token "+tok)
	if !strings.Contains(string(first), "TOKEN_EXPIRED") {
		t.Errorf("expired token: first message %s", first)
	}
	wantClose(t, "expired token", c, 4001, "TOKEN_EXPIRED")

	// The owner deletes it.
	code, _ = fhirDo(t, "DELETE", base+"/fhir/Subscription/"+id, nurse1Token, "")
	if code != 204 {
		t.Errorf("delete: %d", code)
	}
	code, m = fhirDo(t, "GET", base+"/fhir/Subscription/"+id, nurse1Token, "")
	outcome("read after delete", code, m, 404, "not-found")
}
