package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"radbridge/hl7/mllp"
	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// accRe finds the accession of a bench order in a notification.
var accRe = regexp.MustCompile(`ACCF\d{5}`)

// arrivals records when each accession first arrived on one channel.
type arrivals struct {
	mu   sync.Mutex
	at   map[string]time.Time
	wake chan struct{}
}

func newArrivals() *arrivals {
	return &arrivals{at: map[string]time.Time{}, wake: make(chan struct{}, 1)}
}

func (a *arrivals) saw(body []byte, t time.Time) {
	a.mu.Lock()
	for _, acc := range accRe.FindAll(body, -1) {
		if _, ok := a.at[string(acc)]; !ok {
			a.at[string(acc)] = t
		}
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *arrivals) wait(tb testing.TB, what, acc string) time.Time {
	deadline := time.After(2 * time.Minute)
	for {
		a.mu.Lock()
		t, ok := a.at[acc]
		a.mu.Unlock()
		if ok {
			return t
		}
		select {
		case <-a.wake:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			tb.Fatalf("%s: %s not within 2 min", what, acc)
		}
	}
}

func postSubscription(tb testing.TB, base, body string) string {
	resp, err := http.Post(base+"/fhir/Subscription", "application/fhir+json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m struct{ ID string }
	if resp.StatusCode != 201 || json.Unmarshal(b, &m) != nil {
		tb.Fatalf("POST Subscription: %d %s", resp.StatusCode, b)
	}
	return m.ID
}

func benchSubscription(channel, endpoint string) string {
	return benchSubscriptionFor(channel, endpoint, browserPatient)
}

func benchSubscriptionFor(channel, endpoint, pat string) string {
	ep := ""
	if endpoint != "" {
		ep = `"endpoint":"` + endpoint + `",`
	}
	return `{"resourceType":"Subscription","status":"requested","reason":"bench",
"criteria":"https://radbridge.dev/fhir/SubscriptionTopic/imaging-order-placed",
"_criteria":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria","valueString":"ServiceRequest?patient=Patient/` + pat + `"}]},
"channel":{"type":"` + channel + `",` + ep + `"payload":"application/fhir+json",
"_payload":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content","valueCode":"full-resource"}]}}}`
}

// BenchmarkFHIRSubscriptionLatency: HL7 ACK → rest-hook receipt and →
// FHIR websocket notification, against a gRPC Subscribe stream on the same
// patient (the baseline, same run). subs=1: one rest-hook and one
// websocket subscription; subs=1000/same-patient: 998 more websocket
// subscriptions on the same topic and patient (no client bound), so every
// order is numbered and stored 1,000 times; subs=1000/other-patients: the
// 998 follow 998 other patients (1,000 clinicians, each on a patient).
func BenchmarkFHIRSubscriptionLatency(b *testing.B) {
	b.Run("subs=1", func(b *testing.B) { benchFHIRSubs(b, 1, true) })
	b.Run("subs=1000/other-patients", func(b *testing.B) { benchFHIRSubs(b, 1000, false) })
	b.Run("subs=1000/same-patient", func(b *testing.B) { benchFHIRSubs(b, 1000, true) })
}

func benchFHIRSubs(b *testing.B, n int, same bool) {
	d := startAppDaemon(b, "--hl7-patient-authority", "BENCH", "--fhir-rest-hook-allow", "127.0.0.1", "--fhir-subscriptions-per-subject", "2000")
	base := "http://" + d.HTTPAddr()
	hook := newArrivals()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.Now()
		body, _ := io.ReadAll(r.Body)
		hook.saw(body, t)
	}))
	defer srv.Close()
	restID := postSubscription(b, base, benchSubscription("rest-hook", srv.URL))
	wsID := postSubscription(b, base, benchSubscription("websocket", ""))
	for k := range max(0, n-2) {
		pat := browserPatient
		if !same {
			pat = fmt.Sprintf("OTHER%d", k)
		}
		postSubscription(b, base, benchSubscriptionFor("websocket", "", pat))
	}
	for _, id := range []string{restID, wsID} {
		if !testkit.Poll(time.Minute, func() bool {
			resp, err := http.Get(base + "/fhir/Subscription/" + id)
			if err != nil {
				return false
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return bytes.Contains(body, []byte(`"status":"active"`))
		}) {
			b.Fatalf("Subscription/%s not active", id)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The websocket channel, bound with a token.
	resp, err := http.Post(base+"/fhir/Subscription/"+wsID+"/$get-ws-binding-token", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	var params struct {
		Parameter []struct{ Name, ValueString, ValueUrl string }
	}
	json.NewDecoder(resp.Body).Decode(&params)
	resp.Body.Close()
	var tok, wsURL string
	for _, p := range params.Parameter {
		switch p.Name {
		case "token":
			tok = p.ValueString
		case "websocket-url":
			wsURL = p.ValueUrl
		}
	}
	wsc, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer wsc.CloseNow()
	wsc.SetReadLimit(4 << 20)
	if err := wsc.Write(ctx, websocket.MessageText, []byte("bind-with-token "+tok)); err != nil {
		b.Fatal(err)
	}
	ws := newArrivals()
	go func() {
		for {
			_, m, err := wsc.Read(ctx)
			if err != nil {
				return
			}
			ws.saw(m, time.Now())
		}
	}()
	// The baseline: a gRPC stream on the patient.
	grpcSeen := newArrivals()
	stream, err := rbv1.NewEventServiceClient(grpcConn(b, d.GRPCAddr())).Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{browserPatient}, FromNow: true})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			grpcSeen.saw([]byte(ev.GetAccessionNumber()), time.Now())
		}
	}()

	conn, err := net.DialTimeout("tcp", d.MLLPAddr(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rd := mllp.NewReader(conn, 1<<20)
	var ackLat, grpcLat, hookLat, wsLat []time.Duration
	i := 0
	send := func(record bool) {
		i++
		acc := fmt.Sprintf("ACCF%05d", i)
		msg := fmt.Appendf(nil, benchORM, fmt.Sprintf("FHIR-ORM-%d-%d", n, i), 20000+i, acc)
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		t0 := time.Now()
		if err := mllp.WriteMessage(conn, msg); err != nil {
			b.Fatal(err)
		}
		ack, err := rd.ReadMessage()
		if err != nil || !bytes.Contains(ack, []byte("MSA|AA|")) {
			b.Fatalf("order %d: ACK %q %v", i, ack, err)
		}
		tAck := time.Now()
		g := grpcSeen.wait(b, "gRPC", acc)
		h := hook.wait(b, "rest-hook", acc)
		w := ws.wait(b, "websocket", acc)
		if record {
			ackLat = append(ackLat, tAck.Sub(t0))
			grpcLat = append(grpcLat, g.Sub(tAck))
			hookLat = append(hookLat, h.Sub(tAck))
			wsLat = append(wsLat, w.Sub(tAck))
		}
	}
	for range 3 { // warm-up
		send(false)
	}
	for b.Loop() {
		send(true)
	}
	g50 := percentile(grpcLat, 50)
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"grpc", grpcLat}, {"resthook", hookLat}, {"ws", wsLat}, {"ack", ackLat}} {
		b.ReportMetric(ms(percentile(m.d, 50)), m.name+"-p50-ms")
		b.ReportMetric(ms(percentile(m.d, 99)), m.name+"-p99-ms")
		if m.name == "resthook" || m.name == "ws" {
			b.ReportMetric(float64(percentile(m.d, 50))/float64(max(g50, 1)), m.name+"-p50-x-grpc")
		}
	}
}
