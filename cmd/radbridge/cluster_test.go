package main_test

// The failover proof: three nats-server processes in a JetStream cluster
// (streams replicated 3 ways), two radbridge processes on it, real
// mllp_send and storescu loading both. One nats-server and the process
// running the mapper are killed with SIGKILL during the load. Ingestion
// continues on the survivors; every message that got AA and every instance
// that got success status becomes an event; a subscriber that resumes by
// sequence on the surviving process sees every event once, without a gap.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"radbridge/internal/testkit"
	"radbridge/internal/tlsconf/tlstest"
	rbv1 "radbridge/proto/radbridge/v1"
)

type natsNode struct {
	cmd  *exec.Cmd
	url  string
	logs *testkit.Buffer
	done chan struct{}
}

// startNATSCluster starts n clustered JetStream servers on loopback and
// waits until they elected a metadata leader.
func startNATSCluster(t *testing.T, n int) []*natsNode {
	t.Helper()
	client := make([]int, n)
	route := make([]int, n)
	var routes []string
	for i := range n {
		client[i], route[i] = testkit.FreePort(t), testkit.FreePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", route[i]))
	}
	var nodes []*natsNode
	for i := range n {
		// The configuration file we ship (docs/deployment.md).
		cmd := exec.Command(natsServer, "-c", "../../packaging/cluster/nats-server.conf")
		cmd.Env = append(os.Environ(), "NATS_NAME="+fmt.Sprintf("n%d", i+1), fmt.Sprintf("NATS_LISTEN=127.0.0.1:%d", client[i]),
			"NATS_STORE_DIR="+t.TempDir(), fmt.Sprintf("NATS_CLUSTER_LISTEN=127.0.0.1:%d", route[i]),
			"NATS_ROUTE_1="+routes[0], "NATS_ROUTE_2="+routes[1], "NATS_ROUTE_3="+routes[2])
		nd := &natsNode{cmd: cmd, url: fmt.Sprintf("nats://127.0.0.1:%d", client[i]), logs: &testkit.Buffer{}, done: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = nd.logs, nd.logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { cmd.Wait(); close(nd.done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-nd.done
			if t.Failed() {
				t.Logf("nats-server n%d log (tail):\n%s", i+1, tail(nd.logs.String(), 3000))
			}
		})
		nodes = append(nodes, nd)
	}
	testkit.Eventually(t, 60*time.Second, "a JetStream metadata leader", func() bool {
		for _, nd := range nodes {
			if strings.Contains(nd.logs.String(), "JetStream cluster new metadata leader") || strings.Contains(nd.logs.String(), "Self is new JetStream cluster metadata leader") {
				return true
			}
		}
		return false
	})
	return nodes
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ackRE finds MSA-1 and MSA-2 in mllp_send's output.
var ackRE = regexp.MustCompile(`MSA\|([A-Z]{2})\|([^|\r\n]*)`)

// storeOK counts the instances storescu -v reports stored with success.
var storeOK = regexp.MustCompile(`Received Store Response \(Success\)`)

func TestClusterFailover(t *testing.T) {
	mllp, storescu := testkit.Peer(t, "mllp_send"), testkit.Peer(t, "storescu")
	testkit.Peer(t, "/usr/bin/python3")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	nodes := startNATSCluster(t, 3)
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, nd.url)
	}
	common := []string{"--nats-url", strings.Join(urls, ","), "--nats-replicas", "3", "--leader-lease", "3s", "--study-quiet-period", "2s"}
	a := serve(t, append([]string{"--node-id", "rb-a"}, common...)...)
	waitLog(t, a, `"msg":"became leader","component":"leader","lease":"mapper"`)
	b := serve(t, append([]string{"--node-id", "rb-b"}, common...)...)
	procs := []*daemon{a, b}
	if role, leader := statusRole(t, b); role != "follower" || leader != "rb-a" {
		t.Errorf("radbridge status on rb-b: role %q, leader %q; want follower of rb-a", role, leader)
	}
	// A follower answers POST /v1/events with the event the leader derived.
	if ev := publish(t, b, "FO-P1", 1); !strings.HasPrefix(ev, "1 ") {
		t.Errorf("event published on the follower: %q, want sequence 1", ev)
	}

	// Studies to send, made before the load starts.
	const studies, perStudy = 8, 3
	dir := t.TempDir()
	for i := range studies {
		sd := filepath.Join(dir, fmt.Sprint(i))
		if out, err := exec.Command("/usr/bin/python3", "../../scripts/dicom/study.py", sd, fmt.Sprintf("1.2.826.0.1.3680043.10.1447.77.%d", i),
			fmt.Sprintf("FO-P%d", i%3), fmt.Sprintf("FO-ST%d", i), "1", fmt.Sprint(perStudy)).CombinedOutput(); err != nil {
			t.Fatalf("study.py: %v\n%s", err, out)
		}
	}

	// A subscriber on the leader, resuming on the other process when its
	// stream breaks.
	subCtx, stopSub := context.WithCancel(context.Background())
	defer stopSub()
	var subMu sync.Mutex
	var got []*rbv1.Event
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		var last uint64
		for i := 0; subCtx.Err() == nil; i++ {
			d := procs[i%2]
			conn, err := grpc.NewClient(d.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				continue
			}
			stream, err := rbv1.NewEventServiceClient(conn).Subscribe(subCtx, &rbv1.SubscribeRequest{SinceSequence: last, HeartbeatSeconds: 1})
			for err == nil {
				var ev *rbv1.Event
				ev, err = stream.Recv()
				if err == nil && !ev.GetHeartbeat() {
					subMu.Lock()
					got = append(got, ev)
					subMu.Unlock()
					last = ev.GetSequence()
				}
			}
			conn.Close()
			time.Sleep(100 * time.Millisecond) // the client's pause before it resubscribes, not a wait
		}
	}()

	// Load both processes; remember what was acknowledged.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var mu sync.Mutex
	acked := map[string]string{} // MSH-10 → accession
	stored := map[string]int{}   // study UID → instances stored with success
	var sent, storeRuns, ackedAfterFaults, storedAfterFaults int
	var faultsDone bool
	notAA := 0
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; loadCtx.Err() == nil; i++ {
			d := procs[i%2]
			ctl, acc := fmt.Sprintf("FO-%d", i), fmt.Sprintf("FOACC%d", i)
			msg := fmt.Sprintf("MSH|^~\\&|RIS|H|RADBRIDGE|H|20260310083000||ORM^O01|%s|P|2.3\rPID|1||FO-P%d^^^H^MR||DOE^J\rORC|NW|PL%d|FI%d||SC\rOBR|1|PL%d|FI%d|71250^CT CHEST^C4||||||||||||||%s||||||CT\r",
				ctl, i%3, i, i, i, i, acc)
			f := filepath.Join(dir, ctl+".hl7")
			os.WriteFile(f, []byte(msg), 0o644)
			host, port, _ := strings.Cut(d.mllp, ":")
			out, _ := exec.Command("timeout", "10", mllp, "--loose", "-f", f, "-p", port, host).Output()
			mu.Lock()
			sent++
			if m := ackRE.FindStringSubmatch(string(out)); m == nil || m[1] != "AA" {
				if notAA++; notAA <= 3 {
					t.Logf("%s to %s not AA: %q", ctl, d.mllp, out)
				}
			}
			if m := ackRE.FindStringSubmatch(string(out)); m != nil && m[1] == "AA" && m[2] == ctl {
				acked[ctl] = acc
				if faultsDone {
					ackedAfterFaults++
				}
			}
			mu.Unlock()
		}
	}()
	pauses := make([]time.Duration, studies)
	for i := range pauses {
		pauses[i] = time.Duration(500+rng.IntN(700)) * time.Millisecond
	}
	go func() {
		defer wg.Done()
		for i := 0; i < studies && loadCtx.Err() == nil; i++ {
			d := procs[(i+1)%2]
			host, port, _ := strings.Cut(d.dicom, ":")
			cmd := exec.Command("timeout", "20", storescu, "-v", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", host, port, filepath.Join(dir, fmt.Sprint(i)))
			cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
			out, _ := cmd.CombinedOutput()
			mu.Lock()
			storeRuns++
			n := len(storeOK.FindAllString(string(out), -1))
			stored[fmt.Sprintf("1.2.826.0.1.3680043.10.1447.77.%d", i)] = n
			if faultsDone {
				storedAfterFaults += n
			}
			mu.Unlock()
			time.Sleep(pauses[i]) // the PACS's pace between studies, not a wait
		}
	}()

	// Faults: a JetStream server, then the process running the mapper, at
	// random points of the load (the sleeps are the schedule, not waits).
	time.Sleep(time.Duration(1500+rng.IntN(1500)) * time.Millisecond)
	victim := nodes[rng.IntN(len(nodes))]
	victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.done
	t.Logf("killed nats-server %s", victim.url)
	time.Sleep(time.Duration(1000+rng.IntN(1500)) * time.Millisecond)
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	t.Log("killed the mapper leader rb-a")
	mu.Lock()
	faultsDone = true
	mu.Unlock()
	waitLog(t, b, `"msg":"became leader","component":"leader","lease":"mapper"`)
	if role, leader := statusRole(t, b); role != "leader" || leader != "rb-b" {
		t.Errorf("radbridge status on rb-b after the failover: role %q, leader %q", role, leader)
	}
	if m := scrape(t, b); !strings.Contains(m, "\nradbridge_mapper_leader 1\n") {
		t.Errorf("the survivor's /metrics does not say it leads:\n%s", testkit.GrepLines(m, "radbridge_mapper_leader"))
	}
	time.Sleep(3 * time.Second) // load on the survivor alone for a while: the scenario, not a wait
	stopLoad()
	wg.Wait()

	mu.Lock()
	instances := 0
	for _, n := range stored {
		instances += n
	}
	t.Logf("HL7: %d sent, %d acknowledged AA (%d after the faults); DICOM: %d storescu runs, %d instances stored (%d after the faults)",
		sent, len(acked), ackedAfterFaults, storeRuns, instances, storedAfterFaults)
	mu.Unlock()
	if ackedAfterFaults == 0 {
		t.Fatal("no HL7 message was acknowledged after the faults: ingestion did not continue on the survivors")
	}
	if instances == 0 {
		t.Fatal("no instance was stored")
	}

	// Every acknowledged order and instance becomes an event on the
	// survivor.
	var missingOrders, missingInst []string
	if !testkit.Poll(90*time.Second, func() bool {
		missingOrders, missingInst = checkAcknowledged(t, b, acked, stored)
		return len(missingOrders) == 0 && len(missingInst) == 0
	}) {
		t.Fatalf("after failover: orders acknowledged AA without ORDER_PLACED: %v; studies with fewer instances than acknowledged: %v", missingOrders, missingInst)
	}

	// The subscriber resumed on the survivor: every event once, in order,
	// without a gap, up to the log's end.
	_, last := logBounds(t, b)
	var n int
	if !testkit.Poll(30*time.Second, func() bool {
		subMu.Lock()
		defer subMu.Unlock()
		n = len(got)
		return n > 0 && got[n-1].GetSequence() >= last
	}) {
		t.Fatalf("subscriber at %d events, log ends at %d", n, last)
	}
	stopSub()
	<-subDone
	ids := map[string]bool{}
	for i, ev := range got {
		if ids[ev.GetId()] {
			t.Errorf("event %s delivered twice", ev.GetId())
		}
		ids[ev.GetId()] = true
		if want := uint64(i + 1); ev.GetSequence() != want {
			t.Fatalf("subscriber event %d has sequence %d: a gap or a duplicate", want, ev.GetSequence())
		}
	}
	t.Logf("subscriber: %d events, sequences 1..%d, no duplicate", len(got), last)
}

func waitLog(t *testing.T, d *daemon, s string) {
	t.Helper()
	if !testkit.Poll(60*time.Second, func() bool { return strings.Contains(d.logs.String(), s) }) {
		t.Fatalf("no %s in the log:\n%s", s, d.logs.String())
	}
}

// checkAcknowledged lists the acknowledged orders without an ORDER_PLACED
// event and the studies whose newest event counts fewer instances than
// storescu saw stored.
func checkAcknowledged(t *testing.T, d *daemon, acked map[string]string, stored map[string]int) (orders []string, studies []string) {
	t.Helper()
	events := allEvents(t, d)
	placed := map[string]bool{}
	count := map[string]int{}
	for _, ev := range events {
		switch ev.Type {
		case "ORDER_PLACED":
			placed[ev.AccessionNumber] = true
		case "IMAGING_STUDY_AVAILABLE", "IMAGING_STUDY_UPDATED":
			count[ev.StudyInstanceUID] = ev.Resource.NumberOfInstances
		}
	}
	for ctl, acc := range acked {
		if !placed[acc] {
			orders = append(orders, ctl)
		}
	}
	for uid, n := range stored {
		if n > 0 && count[uid] < n {
			studies = append(studies, fmt.Sprintf("%s: %d of %d", uid, count[uid], n))
		}
	}
	return orders, studies
}

type listedEvent struct {
	Sequence         string `json:"sequence"`
	Type             string `json:"type"`
	AccessionNumber  string `json:"accession_number"`
	StudyInstanceUID string `json:"study_instance_uid"`
	Resource         struct {
		NumberOfInstances int `json:"numberOfInstances"`
	} `json:"resource"`
}

func allEvents(t *testing.T, d *daemon) []listedEvent {
	t.Helper()
	var out []listedEvent
	since := "0"
	for {
		resp, err := http.Get(fmt.Sprintf("http://%s/v1/events?since=%s&page_size=1000", d.http, since))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var page struct {
			Events []listedEvent `json:"events"`
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			// The store is electing a stream leader: retryable, as the
			// status says (the client's pause before it retries).
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if resp.StatusCode != 200 {
			t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Events) == 0 {
			return out
		}
		out = append(out, page.Events...)
		since = page.Events[len(page.Events)-1].Sequence
	}
}

func logBounds(t *testing.T, d *daemon) (first, last uint64) {
	t.Helper()
	evs := allEvents(t, d)
	if len(evs) == 0 {
		return 0, 0
	}
	var f, l uint64
	fmt.Sscan(evs[0].Sequence, &f)
	fmt.Sscan(evs[len(evs)-1].Sequence, &l)
	return f, l
}

func scrape(t *testing.T, d *daemon) string {
	t.Helper()
	_, b := testkit.Get(t, "http://"+d.http+"/metrics")
	return b
}

// statusRole runs radbridge status --json against d, as an operator would.
func statusRole(t *testing.T, d *daemon) (role, leader string) {
	t.Helper()
	out, err := exec.Command(binary, "status", "--addr", d.http, "--json").Output()
	if err != nil {
		t.Fatalf("radbridge status: %v\n%s", err, out)
	}
	var st struct {
		Mapper struct{ Role, Leader string }
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("radbridge status --json: %v\n%s", err, out)
	}
	return st.Mapper.Role, st.Mapper.Leader
}

// TestNATSOverTLS: radbridge reaches a nats-server that requires TLS with a
// client certificate (mutual TLS), given the CA and its own certificate;
// without a client certificate it refuses to start with a precise error;
// a password in the URL never reaches the log.
func TestNATSOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "radbridge test NATS CA")
	ca.WriteCert(t, filepath.Join(dir, "ca.crt"))
	ca.Issue(t, tlstest.Leaf{CN: "nats", IP: []string{"127.0.0.1"}}).Write(t, dir, "server")
	ca.Issue(t, tlstest.Leaf{CN: "radbridge", Client: true}).Write(t, dir, "client")
	port := testkit.FreePort(t)
	ns := exec.Command(natsServer, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-sd", t.TempDir(),
		"--tlsverify", "--tlscert", filepath.Join(dir, "server.crt"), "--tlskey", filepath.Join(dir, "server.key"),
		"--tlscacert", filepath.Join(dir, "ca.crt"), "--user", "rb", "--pass", "s3cret-pass")
	logs := &testkit.Buffer{}
	ns.Stdout, ns.Stderr = logs, logs
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Process.Kill(); ns.Wait() })
	if !testkit.Poll(30*time.Second, func() bool { return strings.Contains(logs.String(), "Server is ready") }) {
		t.Fatalf("nats-server not ready:\n%s", logs.String())
	}
	url := fmt.Sprintf("tls://rb:s3cret-pass@127.0.0.1:%d", port)

	// Without a client certificate the handshake fails: a clear error, no start.
	out, err := exec.Command(binary, "serve", "--nats-url", url, "--nats-tls-ca-file", filepath.Join(dir, "ca.crt"),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connect to NATS tls://127.0.0.1:") {
		t.Errorf("without a client certificate: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "s3cret-pass") {
		t.Errorf("the NATS password is in the output:\n%s", out)
	}

	d := serve(t, "--nats-url", url, "--nats-tls-ca-file", filepath.Join(dir, "ca.crt"),
		"--nats-tls-cert-file", filepath.Join(dir, "client.crt"), "--nats-tls-key-file", filepath.Join(dir, "client.key"))
	if ev := publish(t, d, "P-TLS", 1); !strings.HasPrefix(ev, "1 ") {
		t.Errorf("first event over TLS: %q", ev)
	}
	if strings.Contains(d.logs.String(), "s3cret-pass") {
		t.Errorf("the NATS password is in the log:\n%s", d.logs.String())
	}
	if role, _ := statusRole(t, d); role != "leader" {
		t.Errorf("role %q, want leader", role)
	}
}
