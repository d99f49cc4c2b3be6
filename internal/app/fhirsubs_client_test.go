package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// fhirValidatorPackage parses and validates FHIR R4 JSON against the R4
// schema and value sets: written elsewhere, from npm, at an exact version.
const fhirValidatorPackage = "fhir@4.12.0"

// fhirSubsClientScript is a rest-hook receiver and a FHIR client written
// with two npm libraries: fhir-kit-client creates a Subscription, reads it
// back and calls $status and $events; the fhir package validates every
// notification received and every answer. It prints {"ready": id} once the
// handshake arrived, waits for WANT event notifications, then prints the
// result as one JSON line.
const fhirSubsClientScript = `
import http from 'node:http';
import { createRequire } from 'node:module';
const { Client } = await import(process.env.FHIR_KIT);
const { Fhir } = createRequire(import.meta.url)(process.env.FHIR_JS);
const fhir = new Fhir();
const want = Number(process.env.WANT);
const out = { notifications: [], invalid: [], answers: {} };
const check = (what, res) => {
  const v = fhir.validate(res);
  if (!v.valid) out.invalid.push({ what, messages: v.messages });
};
// What a receiver reads from a notification: the history Bundle, its
// first entry's SubscriptionStatus and the event numbers.
const read = (b) => {
  const n = { bundleType: b.type, first: b.entry?.[0]?.resource?.resourceType, events: [], focus: [] };
  for (const p of b.entry?.[0]?.resource?.parameter ?? []) {
    if (p.name === 'type') n.type = p.valueCode;
    if (p.name === 'subscription') n.subscription = p.valueReference?.reference;
    if (p.name === 'events-since-subscription-start') n.since = Number(p.valueString);
    if (p.name === 'notification-event') for (const part of p.part ?? []) {
      if (part.name === 'event-number') n.events.push(Number(part.valueString));
      if (part.name === 'focus') n.focus.push(part.valueReference.reference);
    }
  }
  return n;
};
let handshake, done;
const handshaken = new Promise(r => handshake = r);
const finished = new Promise(r => done = r);
const numbers = new Set();
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', c => body += c);
  req.on('end', () => {
    const b = JSON.parse(body);
    check('notification ' + out.notifications.length, b);
    const n = read(b);
    n.auth = req.headers['authorization'];
    out.notifications.push(n);
    res.writeHead(200).end();
    if (n.type === 'handshake') handshake();
    for (const e of n.events) numbers.add(e);
    if (numbers.size >= want) done();
  });
});
await new Promise(r => server.listen(0, '127.0.0.1', r));
const client = new Client({ baseUrl: process.env.BASE });
const created = await client.create({ resourceType: 'Subscription', body: {
  resourceType: 'Subscription', status: 'requested', reason: 'orders of one patient',
  extension: [{ url: 'https://radbridge.dev/fhir/StructureDefinition/subscription-hmac-secret', valueString: process.env.HMAC_SECRET }],
  criteria: 'https://radbridge.dev/fhir/SubscriptionTopic/imaging-order-placed',
  _criteria: { extension: [{ url: 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria', valueString: 'ServiceRequest?patient=Patient/' + process.env.PATIENT }] },
  channel: { type: 'rest-hook', endpoint: 'http://127.0.0.1:' + server.address().port + '/hook', payload: 'application/fhir+json',
    header: ['Authorization: Bearer ' + process.env.HOOK_SECRET],
    _payload: { extension: [{ url: 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content', valueCode: 'id-only' }] } },
} });
check('created', created);
out.answers.created = created;
const timeout = (what) => new Promise((_, reject) => setTimeout(() => reject(new Error('timed out waiting for ' + what)), 60000).unref());
await Promise.race([handshaken, timeout('the handshake')]);
console.log(JSON.stringify({ ready: created.id }));
await Promise.race([finished, timeout(want + ' events')]);
const status = await client.operation({ resourceType: 'Subscription', id: created.id, name: '$status', method: 'get' });
check('$status', status);
out.answers.status = read({ type: 'history', entry: [{ resource: status.entry?.[0]?.resource ?? status }] });
out.answers.statusBundleType = status.type;
const events = await client.operation({ resourceType: 'Subscription', id: created.id, name: '$events', method: 'get',
  input: { eventsSinceNumber: 1, eventsUntilNumber: want, content: 'id-only' } });
check('$events', events);
out.answers.events = read(events);
const again = await client.read({ resourceType: 'Subscription', id: created.id });
check('read', again);
out.answers.read = again;
const mine = await client.search({ resourceType: 'Subscription', searchParams: { status: 'active' } });
check('search', mine);
out.answers.search = mine;
server.close();
console.log(JSON.stringify(out));
process.exit(0);
`

type subsClientNotification struct {
	BundleType, First, Type, Subscription, Auth string
	Since                                       uint64
	Events                                      []uint64
	Focus                                       []string
}

type subsClientResult struct {
	Notifications []subsClientNotification
	Invalid       []json.RawMessage
	Answers       struct {
		Created, Read    map[string]any
		Search           json.RawMessage
		Status, Events   subsClientNotification
		StatusBundleType string
	}
}

// TestFHIRSubscriptionWithAFHIRClient: a node program that
// nobody here wrote the FHIR parts of (fhir-kit-client creates the
// Subscription and calls $status and $events; the fhir package validates
// R4 JSON) receives the rest-hook notifications of orders placed over MLLP:
// every one is a valid R4 history Bundle whose first entry is the
// SubscriptionStatus Parameters, the event numbers run 1..n in order, and
// $status and $events agree. channel.header values and the HMAC secret are
// never returned nor logged.
func TestFHIRSubscriptionWithAFHIRClient(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	kit := fhirClient(t)
	validator := npmPackage(t, fhirValidatorPackage, "fhir")
	dir := t.TempDir()
	logs := &testkit.Buffer{}
	d := startDaemonLog(t, filepath.Join(dir, "data"), slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		"--fhir-rest-hook-allow", "127.0.0.1")
	script := filepath.Join(dir, "subs.mjs")
	if err := os.WriteFile(script, []byte(fhirSubsClientScript), 0o644); err != nil {
		t.Fatal(err)
	}
	const n, patient, hookSecret, hmacSecret = 4, "MRN-NODE1", "hook-credential-0123456789", "hmac-secret-abcdefghijklmnop"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(),
		"FHIR_KIT=file://"+filepath.Join(kit, "node_modules", "fhir-kit-client", "dist", "index.js"),
		"FHIR_JS="+filepath.Join(validator, "node_modules", "fhir"),
		"BASE=http://"+d.HTTPAddr()+"/fhir", "PATIENT="+patient, "WANT="+fmt.Sprint(n), "HOOK_SECRET="+hookSecret, "HMAC_SECRET="+hmacSecret)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 16<<20)
	if !lines.Scan() {
		_ = cmd.Wait()
		t.Fatalf("node: no ready line\n%s", stderr.String())
	}
	var ready struct{ Ready string }
	if err := json.Unmarshal(lines.Bytes(), &ready); err != nil || ready.Ready == "" {
		t.Fatalf("node ready line %q: %v", lines.Bytes(), err)
	}
	for i := 1; i <= n; i++ {
		ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, fmt.Sprint("node", i), orderMessage(700+i, patient)))
		if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AA" {
			t.Fatalf("ACK %s", ack.Bytes())
		}
	}
	testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "node-other", orderMessage(799, "MRN-NODE-OTHER")))
	if !lines.Scan() {
		_ = cmd.Wait()
		t.Fatalf("node: no result\n%s", stderr.String())
	}
	var r subsClientResult
	if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
		t.Fatalf("node result: %v\n%s", err, lines.Bytes())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}

	for _, inv := range r.Invalid {
		t.Errorf("the fhir package finds invalid R4: %s", inv)
	}
	if len(r.Notifications) < 2 || r.Notifications[0].Type != "handshake" {
		t.Fatalf("notifications %+v: want the handshake first", r.Notifications)
	}
	var got []uint64
	for i, nt := range r.Notifications {
		if nt.BundleType != "history" || nt.First != "Parameters" {
			t.Errorf("notification %d: Bundle.type %q, first entry %q; want history, Parameters", i, nt.BundleType, nt.First)
		}
		if !strings.HasSuffix(nt.Subscription, "Subscription/"+ready.Ready) {
			t.Errorf("notification %d names subscription %q, want %s", i, nt.Subscription, ready.Ready)
		}
		if nt.Auth != "Bearer "+hookSecret {
			t.Errorf("notification %d: Authorization %q, want the channel.header", i, nt.Auth)
		}
		if nt.Type != "event-notification" {
			continue
		}
		got = append(got, nt.Events...)
		if len(nt.Focus) != len(nt.Events) || !strings.Contains(nt.Focus[0], "ServiceRequest/") {
			t.Errorf("notification %d: focus %v for events %v", i, nt.Focus, nt.Events)
		}
		if last := nt.Events[len(nt.Events)-1]; nt.Since != last {
			t.Errorf("notification %d: events-since-subscription-start %d, last event %d", i, nt.Since, last)
		}
	}
	checkGapless(t, got, n)
	if s := r.Answers.Status; s.Type != "query-status" || s.Since != n {
		t.Errorf("$status read by fhir-kit-client: %+v, want query-status with %d events", s, n)
	}
	if e := r.Answers.Events; e.Type != "query-event" || fmt.Sprint(e.Events) != "[1 2 3 4]" || len(e.Focus) != n {
		t.Errorf("$events read by fhir-kit-client: %+v, want events 1..%d with their focus", e, n)
	}
	if r.Answers.Created["id"] != ready.Ready || r.Answers.Read["status"] != "active" {
		t.Errorf("created %v, read back %v", r.Answers.Created, r.Answers.Read)
	}

	// channel.header values and the HMAC secret are never returned (the
	// header name is, with the value masked) and never logged.
	for what, ans := range map[string]any{"create": r.Answers.Created, "read": r.Answers.Read, "search": r.Answers.Search} {
		b, _ := json.Marshal(ans)
		if strings.Contains(string(b), hookSecret) || strings.Contains(string(b), hmacSecret) {
			t.Errorf("%s answer shows a secret: %s", what, b)
		}
		if !strings.Contains(string(b), `"header":["Authorization: ***"]`) {
			t.Errorf("%s answer without the masked channel.header: %s", what, b)
		}
	}
	if !strings.Contains(string(r.Answers.Search), ready.Ready) {
		t.Errorf("search does not find the subscription: %s", r.Answers.Search)
	}
	if l := logs.String(); strings.Contains(l, hookSecret) || strings.Contains(l, hmacSecret) {
		t.Errorf("the log shows a secret:\n%s", l)
	} else if !strings.Contains(l, ready.Ready) {
		t.Errorf("the log does not name the subscription (is it captured?):\n%s", l)
	}
}

// TestFHIRSubscriptionCaps: one token subject owns at most
// --fhir-subscriptions-per-subject subscriptions and radbridge holds at
// most --fhir-subscriptions-max; one more is a 429 OperationOutcome saying
// which cap, until one is deleted. A search returns only the caller's,
// at most _count of them, with the total.
func TestFHIRSubscriptionCaps(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	const a, b = "caps-a-0123456789abcdef", "caps-b-0123456789abcdef"
	if err := os.WriteFile(tokens, []byte(a+" ward-a\n"+b+" ward-b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens,
		"--fhir-subscriptions-per-subject", "2", "--fhir-subscriptions-max", "3")
	base := "http://" + d.HTTPAddr()
	sub := subscriptionJSON("imaging-order-placed", "websocket", "", "id-only", "ServiceRequest?patient=Patient/MRN-CAPS")
	refused := func(token, want string) {
		t.Helper()
		code, oo := fhirDo(t, "POST", base+"/fhir/Subscription", token, sub)
		msg, _ := json.Marshal(oo)
		if code != 429 || oo["resourceType"] != "OperationOutcome" || !strings.Contains(string(msg), want) {
			t.Errorf("create over the cap: %d %s, want 429 naming %s", code, msg, want)
		}
	}
	a1 := createSubscription(t, base, a, sub)
	a2 := createSubscription(t, base, a, sub)
	refused(a, "--fhir-subscriptions-per-subject")
	createSubscription(t, base, b, sub)
	refused(b, "--fhir-subscriptions-max")

	code, m := fhirDo(t, "GET", base+"/fhir/Subscription?_count=1", a, "")
	if ids := fhirIDs(m); code != 200 || m["total"] != float64(2) || len(ids) != 1 || (ids[0] != a1 && ids[0] != a2) {
		t.Errorf("search _count=1: %d total %v ids %v", code, m["total"], ids)
	}
	code, m = fhirDo(t, "GET", base+"/fhir/Subscription", b, "")
	if ids := fhirIDs(m); code != 200 || m["total"] != float64(1) || len(ids) != 1 || ids[0] == a1 || ids[0] == a2 {
		t.Errorf("search by the other subject: %d total %v ids %v", code, m["total"], ids)
	}
	if code, _ := fhirDo(t, "GET", base+"/fhir/Subscription?_count=x", a, ""); code != 400 {
		t.Errorf("_count=x: %d, want 400", code)
	}

	if code, _ := fhirDo(t, "DELETE", base+"/fhir/Subscription/"+a1, a, ""); code != 204 {
		t.Fatalf("DELETE: %d", code)
	}
	// The delete frees a place (the bucket watch may take a moment).
	if !testkit.Poll(10*time.Second, func() bool {
		code, m = fhirDo(t, "POST", base+"/fhir/Subscription", a, sub)
		if code != 201 && code != 429 {
			t.Fatalf("create after a delete: %d %v", code, m)
		}
		return code == 201
	}) {
		t.Fatalf("create after a delete: %d %v", code, m)
	}
}
