package main_test

// End-to-end tests of the built binary, as a user runs it: serve on a data
// directory, tail, grpcurl, kill -9 and restart, and an external
// nats-server.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"radbridge/internal/testkit"
	"radbridge/internal/tlsconf/tlstest"
)

var binary, natsServer string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "radbridge-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "radbridge")
	if err := testkit.Build("", binary, ".", "-race"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	natsServer = filepath.Join(dir, "nats-server")
	if err := testkit.Build("", natsServer, "github.com/nats-io/nats-server/v2"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is the binary serving, as serve started it.
type daemon struct {
	cmd         *exec.Cmd
	grpc, http  string
	mllp, dicom string
	logs        *testkit.Buffer
	done        chan struct{}
}

// readyTimeout bounds how long serve waits for /readyz (the replay of the
// ingest log at start). TestCrashUnderLoad's long runs raise it.
var readyTimeout = 60 * time.Second

// serve starts the binary with every listener on a loopback port 0 and
// waits until /readyz answers; it is killed when the test ends.
func serve(t *testing.T, args ...string) *daemon {
	t.Helper()
	args = append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	p := testkit.Serve(t, binary, testkit.ServeOptions{ReadyTimeout: readyTimeout}, args...)
	return &daemon{cmd: p.Cmd, grpc: p.GRPC, http: p.HTTP, mllp: p.MLLP, dicom: p.DICOM, logs: p.Logs, done: p.Done}
}

func publish(t *testing.T, d *daemon, patient string, i int) string {
	t.Helper()
	body := fmt.Sprintf(`{"type":"IMAGING_STUDY_VIEWED","patient_id":%q,"study_instance_uid":"1.2.826.0.1.%d","viewer_name":"Dr E2E"}`, patient, i)
	resp, err := http.Post("http://"+d.http+"/v1/events", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ev struct{ Sequence, Id string }
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || json.Unmarshal(b, &ev) != nil {
		t.Fatalf("publish: %d %s", resp.StatusCode, b)
	}
	return ev.Sequence + " " + ev.Id
}

func listAll(t *testing.T, d *daemon, since int) []string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/events?since=%d&page_size=1000", d.http, since))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l struct {
		Events []struct{ Sequence, Id string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range l.Events {
		out = append(out, e.Sequence+" "+e.Id)
	}
	return out
}

// TestKillDashNineKeepsEveryAcknowledgedEvent: publish, kill -9, restart on
// the same data directory: every acknowledged event is there with the same
// sequence and id, and a subscriber resuming with since gets exactly the
// events it missed.
func TestKillDashNineKeepsEveryAcknowledgedEvent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d := serve(t, "--data-dir", dir)
	tail := exec.Command(binary, "tail", "--addr", d.grpc, "--json", "--since", "0")
	tailOut := &testkit.Buffer{}
	tail.Stdout = tailOut
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tail.Process.Kill(); tail.Wait() }()
	testkit.Eventually(t, 30*time.Second, "tail subscribed", func() bool { // it reads from sequence 0 anyway
		_, st := testkit.GetJSON(t, "http://"+d.http+"/v1/status")
		subs, _ := st["subscribers"].(map[string]any)
		n, _ := subs["grpc"].(float64)
		return n >= 1
	})
	var acked []string
	for i := 1; i <= 20; i++ {
		acked = append(acked, publish(t, d, "P-KILL", i))
	}
	// tail, started before the events, prints each as one JSON line.
	testkit.Poll(30*time.Second, func() bool { return strings.Count(tailOut.String(), "\n") >= 20 })
	if n := strings.Count(tailOut.String(), "\n"); n != 20 || !strings.Contains(tailOut.String(), `"type":"IMAGING_STUDY_VIEWED"`) {
		t.Fatalf("tail printed %d lines:\n%s", n, tailOut.String())
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done

	// Same gRPC address, so the running tail finds the daemon again.
	d2 := serve(t, "--data-dir", dir, "--grpc-addr", d.grpc)
	if got := listAll(t, d2, 0); strings.Join(got, ",") != strings.Join(acked, ",") {
		t.Fatalf("after kill -9 the log holds\n%v\nwant\n%v", got, acked)
	}
	var more []string
	for i := 21; i <= 25; i++ {
		more = append(more, publish(t, d2, "P-KILL", i))
	}
	if !strings.HasPrefix(more[0], "21 ") {
		t.Errorf("first event after restart has sequence %s, want 21", more[0])
	}
	// A subscriber that saw up to 20 resumes and gets exactly 21..25.
	if got := listAll(t, d2, 20); strings.Join(got, ",") != strings.Join(more, ",") {
		t.Errorf("resume since 20 = %v, want %v", got, more)
	}
	// tail reconnects by itself and resumes after the last sequence it
	// printed, so it ends with 25 lines and no duplicates.
	testkit.Poll(30*time.Second, func() bool { return strings.Count(tailOut.String(), "\n") >= 25 })
	_ = tail
	lines := strings.Split(strings.TrimSpace(tailOut.String()), "\n")
	seen := map[string]bool{}
	re := regexp.MustCompile(`"sequence":"(\d+)"`)
	for _, l := range lines {
		m := re.FindStringSubmatch(l)
		if m == nil || seen[m[1]] {
			t.Errorf("tail line without sequence or repeated: %s", l)
			continue
		}
		seen[m[1]] = true
	}
	if len(seen) != 25 {
		t.Errorf("tail printed %d distinct events across the restart, want 25", len(seen))
	}
}

func TestGrpcurlSeesTheService(t *testing.T) {
	d := serve(t, "--data-dir", filepath.Join(t.TempDir(), "data"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "-modfile=../../tools/go.mod", "grpcurl", "-plaintext", d.grpc, "list").CombinedOutput()
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	for _, want := range []string{"radbridge.v1.EventService", "grpc.health.v1.Health"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("grpcurl list lacks %s:\n%s", want, out)
		}
	}
	publish(t, d, "P-G", 1)
	out, err = exec.CommandContext(ctx, "go", "tool", "-modfile=../../tools/go.mod", "grpcurl", "-plaintext", "-d", `{"patient_id":["P-G"]}`, d.grpc, "radbridge.v1.EventService/ListEvents").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"IMAGING_STUDY_VIEWED"`) {
		t.Errorf("grpcurl ListEvents: %v\n%s", err, out)
	}
}

func TestCorruptDataDirIsAClearError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "radbridge.json"), []byte("garbage"), 0o644)
	out, err := exec.Command(binary, "serve", "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), dir) || !strings.Contains(string(out), "corrupt") {
		t.Errorf("serve on a corrupt data dir: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "serve", "--grpc-addr", "nonsense").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--grpc-addr") {
		t.Errorf("serve with a bad address: %v\n%s", err, out)
	}
}

// TestExternalNATSServer points radbridge at a separate nats-server
// (the nats-server module pinned in go.mod) instead of the embedded one.
func TestExternalNATSServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := exec.CommandContext(ctx, natsServer, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-sd", t.TempDir())
	nsLog := &testkit.Buffer{}
	ns.Stderr = nsLog
	ns.Stdout = nsLog
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); ns.Wait() }()
	if !testkit.Poll(time.Minute, func() bool { return strings.Contains(nsLog.String(), "Server is ready") }) {
		t.Fatalf("nats-server not ready:\n%s", nsLog.String())
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	d := serve(t, "--nats-url", url)
	a := publish(t, d, "P-N", 1)
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done
	if code := d.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(d.logs.String(), `"msg":"stopped"`) {
		t.Errorf("SIGTERM: exit code %d; want an orderly stop with 0:\n%s", code, d.logs.String())
	}
	// A second radbridge process on the same JetStream sees the same log.
	d2 := serve(t, "--nats-url", url)
	if got := listAll(t, d2, 0); len(got) != 1 || got[0] != a {
		t.Errorf("second process sees %v, want [%s]", got, a)
	}
	if b := publish(t, d2, "P-N", 2); !strings.HasPrefix(b, "2 ") {
		t.Errorf("next event %s, want sequence 2", b)
	}
	// radbridge replay on a shared store: refused while a daemon holds the
	// mapper lease; after the stop it takes the lease and checks.
	if out, err := exec.Command(binary, "replay", "--check", "--nats-url", url).CombinedOutput(); err == nil || !strings.Contains(string(out), "mapper lease is held") {
		t.Errorf("replay while a daemon maps: %v\n%s", err, out)
	}
	d2.cmd.Process.Signal(syscall.SIGTERM)
	<-d2.done
	if out, err := exec.Command(binary, "replay", "--check", "--nats-url", url).CombinedOutput(); err != nil || !strings.Contains(string(out), "match a clean replay") {
		t.Errorf("replay --check on the external store: %v\n%s", err, out)
	}
}

// TestKillDashNineMidStudy: a PACS sends part of a study, radbridge is
// killed before the quiet period ends and restarted: the study still
// becomes available, once, with every acknowledged instance counted.
func TestKillDashNineMidStudy(t *testing.T) {
	for _, bin := range []string{"storescu", "/usr/bin/python3"} {
		testkit.Peer(t, bin)
	}
	files := t.TempDir()
	study := "1.2.826.0.1.3680043.10.1447.88"
	if out, err := exec.Command("/usr/bin/python3", "../../scripts/dicom/study.py", files, study, "MRN-K9", "ACC-K9", "2", "3").CombinedOutput(); err != nil {
		t.Fatalf("study.py: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "data")
	d := serve(t, "--data-dir", dir, "--study-quiet-period", "2s")
	host, port, _ := strings.Cut(d.dicom, ":")
	cmd := exec.Command("storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, files)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	d.cmd.Process.Signal(syscall.SIGKILL) // every instance was acknowledged; the study is not yet complete
	<-d.done
	d2 := serve(t, "--data-dir", dir, "--study-quiet-period", "2s")
	if !testkit.Poll(30*time.Second, func() bool {
		resp, err := http.Get("http://" + d2.http + "/v1/events?type=IMAGING_STUDY_AVAILABLE")
		if err != nil {
			t.Fatal(err)
		}
		var l struct {
			Events []struct {
				StudyInstanceUID string `json:"study_instance_uid"`
				Resource         struct {
					NumberOfInstances int `json:"numberOfInstances"`
				} `json:"resource"`
			} `json:"events"`
		}
		json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if len(l.Events) > 0 {
			if len(l.Events) != 1 || l.Events[0].StudyInstanceUID != study || l.Events[0].Resource.NumberOfInstances != 6 {
				t.Fatalf("after kill -9 and restart: %+v; want one AVAILABLE with 6 instances", l.Events)
			}
			return true
		}
		return false
	}) {
		t.Fatal("the study never became available after the restart")
	}
}

// TestSIGHUPReloadsTLS: the real binary re-reads replaced certificate files
// on SIGHUP, before any handshake would have made it look, and serves the
// new certificate afterwards.
func TestSIGHUPReloadsTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}}).Write(t, dir, "server")
	d := serve(t, "--data-dir", filepath.Join(t.TempDir(), "data"), "--mllp-tls-addr", "127.0.0.1:0",
		"--tls-cert-file", filepath.Join(dir, "server.crt"), "--tls-key-file", filepath.Join(dir, "server.key"))
	var tlsAddr string
	for _, line := range strings.Split(d.logs.String(), "\n") {
		var l struct{ Msg, Component, Addr, TLS string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "listening" && l.Component == "hl7" && l.TLS == "tls" {
			tlsAddr = l.Addr
		}
	}
	if tlsAddr == "" {
		t.Fatalf("no TLS MLLP listener in the log:\n%s", d.logs.String())
	}
	renewed := ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}})
	renewed.Write(t, dir, "server")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	want := `"msg":"TLS certificate reloaded"`
	serial := `"serial":"` + renewed.Cert.SerialNumber.Text(16) + `"`
	testkit.Poll(30*time.Second, func() bool {
		return strings.Contains(d.logs.String(), want) && strings.Contains(d.logs.String(), serial)
	})
	if !strings.Contains(d.logs.String(), want) || !strings.Contains(d.logs.String(), serial) {
		t.Fatalf("no reload with serial %s after SIGHUP:\n%s", renewed.Cert.SerialNumber.Text(16), d.logs.String())
	}
	c, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Errorf("serial %s after SIGHUP, want %s", got, renewed.Cert.SerialNumber)
	}
}

// imagingOf returns GET /v1/patients/{id}/imaging as text.
func imagingOf(t *testing.T, d *daemon, patient string) string {
	t.Helper()
	resp, err := http.Get("http://" + d.http + "/v1/patients/" + patient + "/imaging")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("imaging of %s: %d %s", patient, resp.StatusCode, b)
	}
	return string(b)
}

// TestKillDashNineRestartsFromSnapshot: a daemon writing a snapshot every
// 3 observations is killed with SIGKILL (no snapshot at stop); the restart
// loads a periodic snapshot (it says so), replays only the rest, and shows
// the same events and imaging; radbridge replay refuses the data directory
// while the daemon runs, and after an orderly stop its --check confirms the
// stored snapshots and events equal a clean replay of the ingest log.
func TestKillDashNineRestartsFromSnapshot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d := serve(t, "--data-dir", dir, "--snapshot-every", "3")
	var acked []string
	for i := 1; i <= 10; i++ {
		acked = append(acked, publish(t, d, fmt.Sprintf("P-SNAP-%d", i%2), i))
	}
	img0, img1 := imagingOf(t, d, "P-SNAP-0"), imagingOf(t, d, "P-SNAP-1")
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done

	d2 := serve(t, "--data-dir", dir, "--snapshot-every", "3")
	re := regexp.MustCompile(`"msg":"mapper starting from snapshot".*"ingest_seq":(\d+)`)
	m := re.FindStringSubmatch(d2.logs.String())
	if m == nil || m[1] == "0" {
		t.Fatalf("the restart after kill -9 did not start from a snapshot:\n%s", d2.logs.String())
	}
	if got := listAll(t, d2, 0); strings.Join(got, ",") != strings.Join(acked, ",") {
		t.Fatalf("after kill -9 and a start from the snapshot at %s the log holds\n%v\nwant\n%v", m[1], got, acked)
	}
	if a, b := imagingOf(t, d2, "P-SNAP-0"), imagingOf(t, d2, "P-SNAP-1"); a != img0 || b != img1 {
		t.Errorf("imaging changed across kill -9:\n%s\n%s\nwant\n%s\n%s", a, b, img0, img1)
	}
	if next := publish(t, d2, "P-SNAP-0", 11); !strings.HasPrefix(next, "11 ") {
		t.Errorf("first event after the restart: %s, want sequence 11", next)
	}

	out, err := exec.Command(binary, "replay", "--check", "--data-dir", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another radbridge process") {
		t.Errorf("replay while the daemon runs: %v\n%s", err, out)
	}
	d2.cmd.Process.Signal(syscall.SIGTERM)
	<-d2.done
	out, err = exec.Command(binary, "replay", "--check", "--data-dir", dir, "--snapshot-every", "3").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "match a clean replay") || strings.Contains(string(out), "stored snapshots compared: 0") {
		t.Errorf("replay --check after the restarts: %v\n%s", err, out)
	}
}
