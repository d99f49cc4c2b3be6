package app_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"radbridge/hl7/mllp"
	"radbridge/internal/app"
	"radbridge/internal/cli"
	"radbridge/internal/config"
	"radbridge/internal/testkit"
	"radbridge/internal/testkit/inproc"
	"radbridge/internal/tlsconf/tlstest"
	rbv1 "radbridge/proto/radbridge/v1"
)

// pki is a test CA with a server certificate (RSA, for the ECDHE-RSA
// suites DCMTK's BCP 195 profiles offer; SANs localhost and 127.0.0.1),
// a client certificate with CN modality1 and one with CN stranger, all as
// PEM files in dir.
type pki struct {
	dir    string
	ca     *tlstest.CA
	server tlstest.Pair
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

func newPKI(t *testing.T) pki {
	t.Helper()
	p := pki{dir: t.TempDir(), ca: tlstest.NewCA(t, "radbridge test CA")}
	p.ca.WriteCert(t, p.path("ca.crt"))
	p.server = p.ca.Issue(t, tlstest.Leaf{CN: "radbridge", O: "Hospital", DNS: []string{"localhost"}, IP: []string{"127.0.0.1"}, RSA: true})
	p.server.Write(t, p.dir, "server")
	p.ca.Issue(t, tlstest.Leaf{CN: "modality1", O: "Hospital", Client: true, RSA: true}).Write(t, p.dir, "client")
	p.ca.Issue(t, tlstest.Leaf{CN: "stranger", O: "Hospital", Client: true, RSA: true}).Write(t, p.dir, "stranger")
	return p
}

// serverFlags are the daemon's certificate flags.
func (p pki) serverFlags(mutual bool) []string {
	f := []string{"--tls-cert-file", p.path("server.crt"), "--tls-key-file", p.path("server.key")}
	if mutual {
		f = append(f, "--tls-client-ca-file", p.path("ca.crt"))
	}
	return f
}

// clientConfig trusts the CA and presents the named client certificate
// ("" for none).
func (p pki) clientConfig(t *testing.T, cert string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost"}
	if cert != "" {
		c, err := tls.LoadX509KeyPair(p.path(cert+".crt"), p.path(cert+".key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg
}

// startTLSDaemon runs the daemon with exactly the given listener flags
// (plus a data dir) and waits until it is ready, over HTTPS when the plain
// HTTP listener is off.
func startTLSDaemon(t *testing.T, p pki, args ...string) (*app.Daemon, *testkit.Buffer) {
	t.Helper()
	logs := &testkit.Buffer{}
	t.Cleanup(func() { // runs after the daemon stopped
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	args = append([]string{"--data-dir", filepath.Join(t.TempDir(), "data")}, args...)
	cfg, err := config.Load("test", args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := inproc.StartConfig(t, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))).Daemon
	if d.HTTPAddr() != "" {
		return d, logs
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientConfig(t, "client")}}
	testkit.Eventually(t, 30*time.Second, "daemon ready over HTTPS", func() bool {
		resp, err := client.Get("https://" + d.HTTPSAddr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return d, logs
}

// grpcTLSClient connects to the gRPC TLS listener.
func grpcTLSClient(t *testing.T, addr string, cfg *tls.Config) (rbv1.EventServiceClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rbv1.NewEventServiceClient(conn), conn
}

// waitEvent reads sub until an event of type typ arrives.
func waitEvent(t *testing.T, sub rbv1.EventService_SubscribeClient, typ rbv1.EventType) *rbv1.Event {
	t.Helper()
	for {
		ev, err := sub.Recv()
		if err != nil {
			t.Fatalf("waiting for %v: %v", typ, err)
		}
		if ev.Type == typ {
			return ev
		}
	}
}

// TestDICOMOverTLS: DCMTK's echoscu and storescu (OpenSSL, the default
// "Non-downgrading BCP 195" profile) with a client certificate on the
// allow-list associate over --dicom-tls-addr; the instance is stored and
// its study's event arrives. Plain DICOM on the TLS port, a client
// certificate off the allow-list and no client certificate are refused.
// radbridge echo and store --tls work too.
func TestDICOMOverTLS(t *testing.T) {
	testkit.Peer(t, "storescu")
	p := newPKI(t)
	storeDir := t.TempDir()
	d, logs := startTLSDaemon(t, p, append(p.serverFlags(true),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", "",
		"--dicom-tls-addr", "127.0.0.1:0", "--dicom-tls-allowed-subjects", "modality1",
		"--store-dir", storeDir, "--study-quiet-period", "1s")...)
	if d.DICOMAddr() != "" || d.MLLPAddr() != "" {
		t.Fatalf("plain DICOM %q and MLLP %q listeners should be off", d.DICOMAddr(), d.MLLPAddr())
	}
	host, port := hostPort(d.DICOMTLSAddr())
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{ResourceType: []string{"ImagingStudy"}})
	if err != nil {
		t.Fatal(err)
	}

	tlsArgs := []string{"+tls", p.path("client.key"), p.path("client.crt"), "+cf", p.path("ca.crt")}
	if out, err := dcmtk(t, "echoscu", append(tlsArgs, "-aet", "MODALITY", "-aec", "RADBRIDGE", host, port)...); err != nil {
		t.Fatalf("echoscu +tls: %v\n%s", err, out)
	}
	src := t.TempDir()
	makeStudy(t, src, studyUID, 1, 2, 1)
	if out, err := dcmtk(t, "storescu", append(tlsArgs, "-aet", "MODALITY", "-aec", "RADBRIDGE", "+sd", host, port, src)...); err != nil {
		t.Fatalf("storescu +tls: %v\n%s", err, out)
	}
	ev := waitEvent(t, sub, rbv1.EventType_IMAGING_STUDY_AVAILABLE)
	if r := ev.Resource.AsMap(); ev.StudyInstanceUid != studyUID || r["numberOfInstances"] != 2.0 {
		t.Errorf("AVAILABLE: study %s resource %v", ev.StudyInstanceUid, r)
	}
	if n := countDCM(t, storeDir); n != 2 {
		t.Errorf("%d instances in --store-dir, want 2", n)
	}

	// Refusals: none of these stores anything.
	other := t.TempDir()
	makeStudy(t, other, "1.2.826.0.1.3680043.10.1447.78", 1, 1, 1)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"plain DICOM on the TLS port", nil},
		{"client certificate not on the allow-list", []string{"+tls", p.path("stranger.key"), p.path("stranger.crt"), "+cf", p.path("ca.crt")}},
		{"no client certificate", []string{"+tla", "+cf", p.path("ca.crt")}},
	} {
		out, err := dcmtk(t, "storescu", append(tc.args, "-aet", "MODALITY", "-aec", "RADBRIDGE", "+sd", host, port, other)...)
		if err == nil {
			t.Errorf("%s: storescu succeeded:\n%s", tc.name, out)
		}
	}
	if n := countDCM(t, storeDir); n != 2 {
		t.Errorf("%d instances in --store-dir after the refusals, want still 2", n)
	}
	for _, want := range []string{
		`msg=listening component=dicom addr=` + d.DICOMTLSAddr() + ` ae_title=RADBRIDGE tls="mtls (allow-list modality1)"`,
		`msg="TLS client refused: certificate subject not on the allow-list" component=dicom`,
		`subject="CN=stranger,O=Hospital"`,
		`msg="TLS handshake failed" component=dicom`,
	} {
		// A handshake failure is logged just after the server closed.
		if !testkit.Poll(10*time.Second, func() bool { return strings.Contains(logs.String(), want) }) {
			t.Errorf("log lacks %s", want)
		}
	}

	// Our own client commands.
	ours := []string{"--addr", d.DICOMTLSAddr(), "--tls-ca-file", p.path("ca.crt"), "--tls-cert-file", p.path("client.crt"), "--tls-key-file", p.path("client.key")}
	if code, out, errOut := runApp(t, append([]string{"echo"}, ours...)...); code != 0 || !strings.Contains(out, "succeeded") {
		t.Errorf("radbridge echo --tls: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runApp(t, append(append([]string{"store"}, ours...), other)...); code != 0 || !strings.Contains(out, "stored 1, failed 0") {
		t.Errorf("radbridge store --tls: exit %d\n%s%s", code, out, errOut)
	}
	stranger := []string{"echo", "--addr", d.DICOMTLSAddr(), "--tls-ca-file", p.path("ca.crt"), "--tls-cert-file", p.path("stranger.crt"), "--tls-key-file", p.path("stranger.key")}
	if code, out, errOut := runApp(t, stranger...); code != 1 {
		t.Errorf("radbridge echo with a certificate off the allow-list: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runApp(t, "echo", "--addr", d.DICOMTLSAddr(), "--tls", "--tls-cert-file", p.path("client.crt"), "--tls-key-file", p.path("client.key")); code != 1 || !strings.Contains(errOut, "certificate") {
		t.Errorf("radbridge echo not trusting the test CA: exit %d\n%s%s", code, out, errOut)
	}
}

func countDCM(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && strings.HasSuffix(fi.Name(), ".dcm") {
			n++
		}
		return nil
	})
	return n
}

// opensslMLLP sends one MLLP-framed message with `openssl s_client` (an
// independent TLS client) and returns what the server answered up to the
// end of the first frame, and s_client's diagnostics.
func opensslMLLP(t *testing.T, p pki, addr string, msg []byte, extra ...string) (answer, diag string, err error) {
	t.Helper()
	bin := testkit.Peer(t, "openssl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"s_client", "-quiet", "-connect", addr, "-CAfile", p.path("ca.crt"), "-verify_return_error", "-servername", "localhost"}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var framed bytes.Buffer
	if msg != nil {
		_ = mllp.WriteMessage(&framed, msg)
	}
	cmd.Stdin = &framed
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// -quiet keeps the connection open after stdin ends: read one frame,
	// then stop the client.
	got, rerr := bufio.NewReader(out).ReadString('\x1c')
	_ = cmd.Process.Kill()
	werr := cmd.Wait()
	if rerr != nil {
		return got, stderr.String(), fmt.Errorf("no MLLP answer (%v; exit %v)", rerr, werr)
	}
	return got, stderr.String(), nil
}

// TestMLLPOverTLS: `openssl s_client` and radbridge send-hl7 --tls send
// an HL7 order over --mllp-tls-addr and get AA; TLS 1.1 and non-BCP 195
// suites are refused by the server, ECDHE-RSA-AES128-GCM-SHA256 works.
func TestMLLPOverTLS(t *testing.T) {
	p := newPKI(t)
	d, _ := startTLSDaemon(t, p, append(p.serverFlags(false),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "127.0.0.1:0", "--dicom-addr", "",
		"--mllp-tls-addr", "127.0.0.1:0")...)
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	order := []byte(strings.ReplaceAll(strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "TLS-1"), "\n", "\r") + "\r")
	ack, diag, err := opensslMLLP(t, p, d.MLLPTLSAddr(), order)
	if err != nil || !strings.Contains(ack, "MSA|AA|TLS-1") {
		t.Fatalf("openssl s_client: %v\nanswer %q\n%s", err, ack, diag)
	}
	if ev := waitEvent(t, sub, rbv1.EventType_ORDER_PLACED); ev.AccessionNumber != "ACC1001" {
		t.Errorf("ORDER_PLACED accession %q, want ACC1001", ev.AccessionNumber)
	}

	file := testkit.WriteHL7(t, "order", strings.ReplaceAll(risMessages[1].msg, "{{ctl}}", "TLS-2"))
	if code, out, errOut := runApp(t, "send-hl7", "--addr", d.MLLPTLSAddr(), "--tls-ca-file", p.path("ca.crt"), "--tls-server-name", "localhost", file); code != 0 || !strings.Contains(out, "MSA|AA|TLS-2") {
		t.Errorf("send-hl7 --tls: exit %d\n%s%s", code, out, errOut)
	}
	// The plain listener still works next to the TLS one.
	if code, out, errOut := runApp(t, "send-hl7", "--addr", d.MLLPAddr(), file); code != 0 || !strings.Contains(out, "MSA|AA|TLS-2") {
		t.Errorf("send-hl7 plain: exit %d\n%s%s", code, out, errOut)
	}
	// Plain MLLP on the TLS port gets no ACK.
	if code, out, errOut := runApp(t, "send-hl7", "--addr", d.MLLPTLSAddr(), "--timeout", "10s", file); code != 1 || strings.Contains(out, "MSA|") {
		t.Errorf("plain send-hl7 to the TLS port: exit %d\n%s%s", code, out, errOut)
	}

	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		// SECLEVEL=0 makes the client willing, so a refusal is the server's.
		{"TLS 1.1", []string{"-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"}, false},
		{"TLS 1.2 AES128-SHA (RSA key transport, CBC)", []string{"-tls1_2", "-cipher", "AES128-SHA@SECLEVEL=0"}, false},
		{"TLS 1.2 ECDHE-RSA-AES128-SHA (CBC)", []string{"-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA@SECLEVEL=0"}, false},
		{"TLS 1.2 AES256-GCM-SHA384 (RSA key transport)", []string{"-tls1_2", "-cipher", "AES256-GCM-SHA384"}, false},
		{"TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256", []string{"-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"}, true},
		{"TLS 1.2 ECDHE-RSA-CHACHA20-POLY1305", []string{"-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"}, true},
		{"TLS 1.3", []string{"-tls1_3"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ack, diag, err := opensslMLLP(t, p, d.MLLPTLSAddr(), order, tc.args...)
			if tc.ok && (err != nil || !strings.Contains(ack, "MSA|AA|TLS-1")) {
				t.Fatalf("refused: %v\n%q\n%s", err, ack, diag)
			}
			if !tc.ok {
				if err == nil {
					t.Fatalf("accepted: %q", ack)
				}
				// The server said no (an alert), not the client.
				if !strings.Contains(diag, "alert") {
					t.Errorf("no alert from the server:\n%s", diag)
				}
			}
		})
	}
}

// TestGRPCAndHTTPSOverTLS runs with the plain gRPC and HTTP listeners off
// and mutual TLS: a gRPC client, grpcurl, an HTTPS client, curl and a WSS
// client with an allowed certificate are served; one without a certificate
// or with one off the allow-list is refused.
func TestGRPCAndHTTPSOverTLS(t *testing.T) {
	p := newPKI(t)
	d, _ := startTLSDaemon(t, p, append(p.serverFlags(true),
		"--grpc-addr", "", "--http-addr", "", "--mllp-addr", "", "--dicom-addr", "",
		"--grpc-tls-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0",
		"--grpc-tls-allowed-subjects", "modality1", "--https-allowed-subjects", "CN=modality1,O=Hospital")...)
	if d.GRPCAddr() != "" || d.HTTPAddr() != "" {
		t.Fatalf("plain gRPC %q and HTTP %q should be off", d.GRPCAddr(), d.HTTPAddr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	client, conn := grpcTLSClient(t, d.GRPCTLSAddr(), p.clientConfig(t, "client"))
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health over TLS: %v %v", hc, err)
	}
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + d.HTTPSAddr()
	ws, _, err := websocket.Dial(ctx, "wss://"+d.HTTPSAddr()+"/v1/events:stream?since=0", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientConfig(t, "client")}},
	})
	if err != nil {
		t.Fatalf("WSS: %v", err)
	}
	defer ws.CloseNow()

	https := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientConfig(t, "client")}}
	resp, err := https.Post(base+"/v1/events", "application/json", strings.NewReader(`{"type":"IMAGING_STUDY_VIEWED","patient_id":"P-TLS","study_instance_uid":"1.2.3.4","viewer_name":"Dr Test"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("POST over HTTPS: %d %s", resp.StatusCode, b)
	}
	if ev := waitEvent(t, sub, rbv1.EventType_IMAGING_STUDY_VIEWED); ev.PatientId != "P-TLS" {
		t.Errorf("gRPC over TLS got patient %q", ev.PatientId)
	}
	for {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("WSS read: %v", err)
		}
		var m map[string]any
		_ = json.Unmarshal(msg, &m)
		if strings.Contains(string(msg), "P-TLS") {
			break
		}
	}

	// Refused: no client certificate, and a certificate off the allow-list.
	for _, cert := range []string{"", "stranger"} {
		_, conn := grpcTLSClient(t, d.GRPCTLSAddr(), p.clientConfig(t, cert))
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
			t.Errorf("gRPC with client certificate %q: served", cert)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientConfig(t, cert)}}
		if resp, err := c.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			t.Errorf("HTTPS with client certificate %q: %s", cert, resp.Status)
		}
	}

	// Independent clients: grpcurl and curl.
	out, err := exec.CommandContext(ctx, "go", "tool", "-modfile=../../tools/go.mod", "grpcurl", "-cacert", p.path("ca.crt"), "-cert", p.path("client.crt"), "-key", p.path("client.key"), d.GRPCTLSAddr(), "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "radbridge.v1.EventService") {
		t.Errorf("grpcurl list over TLS: %v\n%s", err, out)
	}
	curl, err := exec.LookPath("curl")
	if err != nil && os.Getenv("CI") == "true" {
		t.Error("curl not installed (CI=true: the test command installs it)")
	}
	if err == nil {
		out, err := exec.CommandContext(ctx, curl, "-sS", "--cacert", p.path("ca.crt"), "--cert", p.path("client.crt"), "--key", p.path("client.key"), base+"/readyz").CombinedOutput()
		if err != nil {
			t.Errorf("curl over HTTPS: %v\n%s", err, out)
		}
		if out, err := exec.CommandContext(ctx, curl, "-sS", "--cacert", p.path("ca.crt"), base+"/readyz").CombinedOutput(); err == nil {
			t.Errorf("curl without a client certificate: served\n%s", out)
		}
	}
	if code, out, errOut := runApp(t, "healthcheck", "--addr", d.HTTPSAddr(), "--tls-ca-file", p.path("ca.crt"), "--tls-cert-file", p.path("client.crt"), "--tls-key-file", p.path("client.key")); code != 0 || !strings.Contains(out, "ready") {
		t.Errorf("healthcheck --tls: exit %d\n%s%s", code, out, errOut)
	}

	// radbridge tail --tls prints the event.
	pr, pw := io.Pipe()
	tailCtx, stopTail := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(tailCtx, []string{"tail", "--since", "0", "--addr", d.GRPCTLSAddr(), "--tls-ca-file", p.path("ca.crt"), "--tls-cert-file", p.path("client.crt"), "--tls-key-file", p.path("client.key")}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	stopTail()
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if code := <-done; err != nil || code != 0 || !strings.Contains(line, "IMAGING_STUDY_VIEWED") || !strings.Contains(line, "patient=P-TLS") {
		t.Errorf("tail --tls: exit %d, %v, line %q", code, err, line)
	}
}

// TestTLSCertificateReload replaces the certificate files of a running
// daemon: new connections get the new certificate, without a restart.
func TestTLSCertificateReload(t *testing.T) {
	p := newPKI(t)
	d, _ := startTLSDaemon(t, p, append(p.serverFlags(false),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", "",
		"--mllp-tls-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--dicom-tls-addr", "127.0.0.1:0", "--grpc-tls-addr", "127.0.0.1:0")...)
	fronts := []string{d.MLLPTLSAddr(), d.HTTPSAddr(), d.DICOMTLSAddr(), d.GRPCTLSAddr()}
	serial := func(addr string) string {
		c, err := tls.Dial("tcp", addr, p.clientConfig(t, ""))
		if err != nil {
			t.Fatalf("TLS to %s: %v", addr, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	for _, addr := range fronts {
		if got, want := serial(addr), p.server.Cert.SerialNumber.String(); got != want {
			t.Fatalf("%s: serial %s, want %s", addr, got, want)
		}
	}
	renewed := p.ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}, IP: []string{"127.0.0.1"}, RSA: true})
	renewed.Write(t, p.dir, "server")
	want := renewed.Cert.SerialNumber.String()
	// The files are checked at most once a second: poll, bounded.
	for _, addr := range fronts {
		got := ""
		if !testkit.Poll(10*time.Second, func() bool { got = serial(addr); return got == want }) {
			t.Errorf("%s: still serial %s after replacing the files, want %s", addr, got, want)
		}
	}
	// The MLLP front serves with the new certificate.
	order := []byte(strings.ReplaceAll(strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "TLS-R"), "\n", "\r") + "\r")
	if ack, diag, err := opensslMLLP(t, p, d.MLLPTLSAddr(), order); err != nil || !strings.Contains(ack, "MSA|AA|TLS-R") {
		t.Errorf("after reload: %v %q\n%s", err, ack, diag)
	}
	// A reload on demand (SIGHUP) of broken files fails and keeps the pair.
	if err := os.WriteFile(p.path("server.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.ReloadTLS(); err == nil {
		t.Error("ReloadTLS with a broken key succeeded")
	}
	if got := serial(d.HTTPSAddr()); got != want {
		t.Errorf("after a broken key: serial %s, want the previous %s", got, want)
	}
}

// TestTLSConfigErrors: a TLS listener without a certificate, an allow-list
// without a client CA, and every listener for clients off are configuration
// errors with a precise message.
func TestTLSConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dicom-tls-addr", ":2762"}, "--dicom-tls-addr: a TLS listener needs --tls-cert-file and --tls-key-file"},
		{[]string{"--https-addr", ":8443", "--tls-cert-file", "/nonexistent.crt", "--tls-key-file", "/nonexistent.key"}, "--tls-cert-file /nonexistent.crt: not an existing file"},
		{[]string{"--tls-cert-file", "x"}, "no TLS listener is"},
		{[]string{"--mllp-tls-allowed-subjects", "a"}, "--mllp-tls-allowed-subjects needs --tls-client-ca-file"},
		{[]string{"--grpc-addr", "", "--http-addr", ""}, "no client could read events"},
		{[]string{"--grpc-tls-addr", "nonsense"}, `--grpc-tls-addr "nonsense": want host:port`},
	} {
		_, err := config.Load("test", tc.args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to say %q", tc.args, err, tc.want)
		}
	}
}

// TestTLSSilentPeerIsClosed: a peer that connects to a TLS port and never
// sends a ClientHello is closed after --tls-handshake-timeout, well before
// the fronts' own idle timeouts (MLLP 5 min, DICOM ARTIM 60 s here).
func TestTLSSilentPeerIsClosed(t *testing.T) {
	p := newPKI(t)
	d, logs := startTLSDaemon(t, p, append(p.serverFlags(false),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", "",
		"--mllp-tls-addr", "127.0.0.1:0", "--dicom-tls-addr", "127.0.0.1:0", "--grpc-tls-addr", "127.0.0.1:0",
		"--tls-handshake-timeout", "1s", "--dicom-artim-timeout", "60s")...)
	for name, addr := range map[string]string{"mllp": d.MLLPTLSAddr(), "dicom": d.DICOMTLSAddr(), "grpc": d.GRPCTLSAddr()} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if ne, ok := err.(net.Error); err == nil || ok && ne.Timeout() {
			t.Errorf("%s: a silent peer was not closed by the server (read: %v)", name, err)
		}
	}
	// The server logs right after it closed: wait for the lines, bounded.
	failures := func() int { return strings.Count(logs.String(), `msg="TLS handshake failed"`) }
	testkit.Poll(10*time.Second, func() bool { return failures() >= 2 })
	if n := failures(); n < 2 {
		t.Errorf("%d handshake failures logged, want one each for MLLP and DICOM", n)
	}
}

// TestLivePageOverHTTPS: Chromium opens the live page on --https-addr (the
// plain HTTP listener off), trusting exactly the server's key; its WSS
// connection goes live and an order sent with send-hl7 over MLLP/TLS shows
// up on the page.
func TestLivePageOverHTTPS(t *testing.T) {
	p := newPKI(t)
	d, _ := startTLSDaemon(t, p, append(p.serverFlags(false),
		"--grpc-addr", "", "--http-addr", "", "--mllp-addr", "", "--dicom-addr", "",
		"--https-addr", "127.0.0.1:0", "--mllp-tls-addr", "127.0.0.1:0", "--hl7-patient-authority", "NORTHWING")...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	spki := sha256.Sum256(p.server.Cert.RawSubjectPublicKeyInfo)
	browser := testkit.Chromium(t, ctx, chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	_, port, _ := net.SplitHostPort(d.HTTPSAddr())
	tb := openTab(t, browser, "https tab", "https://localhost:"+port+"/?patient=MRN4711")
	tb.waitFor(t, "connection live over WSS", `location.protocol === "https:" && document.querySelector('[data-testid="connection"]').textContent === "live"`)
	m := risMessages[0]
	f := testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl))
	if code, out, errOut := runApp(t, "send-hl7", "--addr", d.MLLPTLSAddr(), "--tls-ca-file", p.path("ca.crt"), "--tls-server-name", "localhost", f); code != 0 || !strings.Contains(out, "MSA|AA|") {
		t.Fatalf("send-hl7 --tls: exit %d\n%s%s", code, out, errOut)
	}
	tb.waitFor(t, "order ACC1001 on the page", `!!document.querySelector('[data-testid="order"][data-accession="ACC1001"]')`)
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.errors) > 0 {
		t.Errorf("page errors: %q", tb.errors)
	}
}
