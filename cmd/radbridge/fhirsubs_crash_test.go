package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// crashHook records the event notifications it receives: per event number
// the focus references it came with, in arrival order.
type crashHook struct {
	mu      sync.Mutex
	order   []uint64
	focus   map[uint64][]string
	arrived chan struct{}
}

func (h *crashHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	// A slow receiver (the scenario, not a wait): deliveries are in flight
	// when the daemon is killed.
	time.Sleep(15 * time.Millisecond)
	var bundle struct {
		Entry []struct {
			Resource struct {
				Parameter []struct {
					Name      string
					ValueCode string
					Part      []struct {
						Name           string
						ValueString    string
						ValueReference struct{ Reference string }
					}
				}
			}
		}
	}
	if json.Unmarshal(b, &bundle) != nil || len(bundle.Entry) == 0 {
		w.WriteHeader(400)
		return
	}
	h.mu.Lock()
	for _, p := range bundle.Entry[0].Resource.Parameter {
		if p.Name != "notification-event" {
			continue
		}
		var n uint64
		var focus string
		for _, part := range p.Part {
			switch part.Name {
			case "event-number":
				n, _ = strconv.ParseUint(part.ValueString, 10, 64)
			case "focus":
				focus = part.ValueReference.Reference
			}
		}
		h.order = append(h.order, n)
		h.focus[n] = append(h.focus[n], focus)
	}
	h.mu.Unlock()
	select {
	case h.arrived <- struct{}{}:
	default:
	}
	w.WriteHeader(200)
}

// distinct is the number of distinct event numbers received.
func (h *crashHook) distinct() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.focus)
}

func (h *crashHook) waitDistinct(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for h.distinct() < n {
		select {
		case <-h.arrived:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("rest-hook got %d distinct event numbers, want %d", h.distinct(), n)
		}
	}
}

// TestFHIRSubscriptionKillDashNine: a rest-hook subscription on placed
// orders; the RIS sends 40 orders; the daemon is killed with SIGKILL twice
// while notifications are being delivered and restarted on its data
// directory. The receiver gets every number 1..40, first arrivals in
// order, one order per number, and a number delivered again carries the
// same order.
func TestFHIRSubscriptionKillDashNine(t *testing.T) {
	mllp := testkit.Peer(t, "mllp_send")
	hook := &crashHook{focus: map[uint64][]string{}, arrived: make(chan struct{}, 1)}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	addrs := freePorts(t, 4)
	flags := []string{"--data-dir", filepath.Join(t.TempDir(), "data"), "--grpc-addr", addrs[0], "--http-addr", addrs[1], "--mllp-addr", addrs[2], "--dicom-addr", addrs[3],
		"--fhir-rest-hook-allow", "127.0.0.1", "--fhir-rest-hook-retry-base", "10ms"}
	d := serve(t, flags...)

	postHookSubscription(t, d, srv.URL)

	const orders = 40
	sendOrders(t, mllp, d.mllp, orders)

	for _, at := range []int{8, 22} {
		hook.waitDistinct(t, at, 2*time.Minute)
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
		t.Logf("killed with SIGKILL after %d distinct numbers", hook.distinct())
		d = serve(t, flags...)
	}
	hook.waitDistinct(t, orders, 2*time.Minute)
	hook.check(t, orders)
}

// sendOrders sends n new orders (ORM^O01 NW, accessions ACC-FS1…) to the
// MLLP address in one mllp_send run and checks every ACK is AA.
func sendOrders(t *testing.T, mllp, addr string, orders int) {
	t.Helper()
	var msgs []string
	for i := 1; i <= orders; i++ {
		msgs = append(msgs, strings.Join([]string{
			fmt.Sprintf(`MSH|^~\&|CRASHRIS|NORTHWING|RADBRIDGE|IMAGING|20260310083000||ORM^O01|FS%d|P|2.3`, i),
			fmt.Sprintf("PID|1||MRN-FS%d^^^NORTHWING^MR||CRASH^SUB||19700101|F", i%3),
			fmt.Sprintf("ORC|NW|PLCFS%d|FILFS%d||SC", i, i),
			fmt.Sprintf("OBR|1|PLCFS%d|FILFS%d|71250^CT CHEST^C4||||||||||||||ACC-FS%d||||||CT", i, i, i),
		}, "\r"))
	}
	file := filepath.Join(t.TempDir(), "orders.hl7")
	if err := os.WriteFile(file, []byte(strings.Join(msgs, "\r\n")+"\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("timeout", "60", mllp, "--loose", "-f", file, "-p", port, host).Output()
	if err != nil || strings.Count(string(out), "MSA|AA|") != orders {
		t.Fatalf("mllp_send: %v, %d AA\n%s", err, strings.Count(string(out), "MSA|AA|"), out)
	}
}

// check: numbers 1..orders, first arrivals in order, one order per
// number, a number delivered again with the same order.
func (hook *crashHook) check(t *testing.T, orders int) {
	t.Helper()
	hook.mu.Lock()
	defer hook.mu.Unlock()
	var next uint64 = 1
	dups := 0
	for _, n := range hook.order {
		switch {
		case n == next:
			next++
		case n < next:
			dups++
		default:
			t.Fatalf("event numbers %v: %d arrived before %d (a gap)", hook.order, n, next)
		}
	}
	if next != uint64(orders)+1 || len(hook.focus) != orders {
		t.Fatalf("event numbers %v: want 1..%d", hook.order, orders)
	}
	seen := map[string]uint64{}
	for n, fs := range hook.focus {
		for _, f := range fs[1:] {
			if f != fs[0] {
				t.Errorf("event %d delivered again with another focus: %v", n, fs)
			}
		}
		if !strings.HasPrefix(fs[0], "ServiceRequest/") {
			t.Errorf("event %d focus %q", n, fs[0])
		}
		if m, ok := seen[fs[0]]; ok {
			t.Errorf("%s has two numbers, %d and %d", fs[0], m, n)
		}
		seen[fs[0]] = n
	}
	t.Logf("%d notifications for %d events (%d redelivered after the kills)", len(hook.order), orders, dups)
}

// postHookSubscription creates a rest-hook subscription on placed orders
// (id-only) through d, delivering to hook.
func postHookSubscription(t *testing.T, d *daemon, hook string) {
	t.Helper()
	sub := `{"resourceType":"Subscription","status":"requested","reason":"crash test",
"criteria":"https://radbridge.dev/fhir/SubscriptionTopic/imaging-order-placed",
"channel":{"type":"rest-hook","endpoint":"` + hook + `/hook","payload":"application/fhir+json",
 "_payload":{"extension":[{"url":"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content","valueCode":"id-only"}]}}}`
	resp, err := http.Post("http://"+d.http+"/fhir/Subscription", "application/fhir+json", strings.NewReader(sub))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("POST Subscription: %d %s", resp.StatusCode, b)
	}
}

// TestFHIRSubscriptionFailover: two radbridge processes on a 3-node
// JetStream cluster; the subscription is created on the follower, the
// holder of the fhir-subscriptions lease delivers; it is killed with
// SIGKILL during delivery and the survivor takes the lease and continues:
// every number 1..40 arrives, in order, no gaps, a redelivery with its
// number.
func TestFHIRSubscriptionFailover(t *testing.T) {
	mllp := testkit.Peer(t, "mllp_send")
	hook := &crashHook{focus: map[uint64][]string{}, arrived: make(chan struct{}, 1)}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	nodes := startNATSCluster(t, 3)
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, nd.url)
	}
	common := []string{"--nats-url", strings.Join(urls, ","), "--nats-replicas", "3", "--leader-lease", "3s",
		"--fhir-rest-hook-allow", "127.0.0.1", "--fhir-rest-hook-retry-base", "10ms"}
	a := serve(t, append([]string{"--node-id", "rb-a"}, common...)...)
	waitLog(t, a, `"msg":"became leader","component":"leader","lease":"fhir-subscriptions","id":"rb-a"`)
	b := serve(t, append([]string{"--node-id", "rb-b"}, common...)...)
	postHookSubscription(t, b, srv.URL)
	const orders = 40
	sendOrders(t, mllp, b.mllp, orders)
	hook.waitDistinct(t, 10, 2*time.Minute)
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	t.Logf("delivering process killed after %d distinct numbers", hook.distinct())
	waitLog(t, b, `"msg":"became leader","component":"leader","lease":"fhir-subscriptions","id":"rb-b"`)
	hook.waitDistinct(t, orders, 2*time.Minute)
	hook.check(t, orders)
}
