package app_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"radbridge/internal/testkit"
)

// TestFHIRSubscriptionWebSocketInChromium: a page in headless Chromium
// creates a websocket Subscription on the study-available topic, gets a
// binding token, binds, and receives the handshake and then, after DCMTK
// storescu sends a study, an event-notification with event number 1 whose
// focus is the ImagingStudy.
func TestFHIRSubscriptionWebSocketInChromium(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s")
	base := "http://" + d.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 2*browserWait)
	defer cancel()
	browser := testkit.Chromium(t, ctx)
	tb := openTab(t, browser, "fhir-ws", base+"/healthz")
	body, _ := json.Marshal(subscriptionJSON("imaging-study-available", "websocket", "", "id-only"))
	evalIn[bool](t, tb, `(() => {
		window.__fhir = {messages: [], error: null, closed: null};
		(async () => {
			const sub = await (await fetch("/fhir/Subscription", {method: "POST", headers: {"Content-Type": "application/fhir+json"}, body: `+string(body)+`})).json();
			const params = await (await fetch("/fhir/Subscription/" + sub.id + "/$get-ws-binding-token", {method: "POST"})).json();
			const get = (n) => params.parameter.find(p => p.name === n);
			const ws = new WebSocket(get("websocket-url").valueUrl);
			ws.onopen = () => ws.send("bind-with-token " + get("token").valueString);
			ws.onmessage = (m) => window.__fhir.messages.push(m.data);
			ws.onclose = (e) => { window.__fhir.closed = e.code + " " + e.reason; };
		})().catch(e => { window.__fhir.error = String(e); });
		return true;
	})()`)
	tb.waitFor(t, "the handshake", `window.__fhir.error !== null || window.__fhir.messages.some(m => m.includes('"handshake"'))`)
	if e := evalIn[any](t, tb, `window.__fhir.error`); e != nil {
		t.Fatalf("page: %v", e)
	}

	dir := t.TempDir()
	makeStudy(t, dir, studyUID, 1, 3, 1)
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, dir); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	tb.waitFor(t, "an event-notification", `window.__fhir.messages.some(m => m.includes('"event-notification"'))`)
	msgs := evalIn[[]string](t, tb, `window.__fhir.messages`)
	var n notification
	for _, m := range msgs {
		if strings.Contains(m, `"event-notification"`) {
			n = readNotification(t, []byte(m))
			break
		}
	}
	if len(n.Events) != 1 || n.Events[0] != 1 || n.Since != 1 {
		t.Errorf("first event-notification %+v: want event number 1", n)
	}
	if len(n.Focus) != 1 || n.Focus[0] != "ImagingStudy/"+studyUID {
		t.Errorf("focus %v: want ImagingStudy/%s", n.Focus, studyUID)
	}
	if c := evalIn[any](t, tb, `window.__fhir.closed`); c != nil {
		t.Errorf("socket closed: %v", c)
	}
}
