package cli_test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/opsapi"
	"radbridge/internal/testkit"
	"radbridge/internal/testkit/inproc"
	rbv1 "radbridge/proto/radbridge/v1"
)

// TestStatusCommand: radbridge status asks a running daemon (auth on) for
// its state after a real mllp_send order and with one gRPC subscriber: it
// needs an unrestricted token, prints the listeners, the store, the
// mapper's position and the counters, --json gives the same as JSON
// without patient data, and an unreachable daemon exits 1.
func TestStatusCommand(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("ops-token-0123456789 ops\nnurse-token-0123456789 nurse patient=MRN4711\n"), 0o600)
	opsFile, nurseFile := filepath.Join(dir, "ops"), filepath.Join(dir, "nurse")
	os.WriteFile(opsFile, []byte("ops-token-0123456789\n"), 0o600)
	os.WriteFile(nurseFile, []byte("nurse-token-0123456789\n"), 0o600)
	data := filepath.Join(dir, "data")
	d := startDaemon(t, data, "--auth", "tokens", "--auth-tokens-file", tokens, "--metrics-addr", "127.0.0.1:0", "--hl7-patient-authority", "NORTHWING")

	ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "order", strings.ReplaceAll(testkit.RISOrder, "{{ctl}}", "ST-1")))
	if msa := ack.Segment("MSA"); msa == nil || msa.Field(1) != "AA" {
		t.Fatalf("order: ACK %q, want AA", ack.Bytes())
	}
	client, _ := inproc.EventClient(t, d.GRPCAddr())
	ctx := bearerCtx(t.Context(), "ops-token-0123456789")
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := sub.Recv(); err != nil || ev.Type != rbv1.EventType_ORDER_PLACED {
		t.Fatalf("subscriber: %v %v, want ORDER_PLACED", ev.GetType(), err)
	}

	if code, _, stderr := runApp(t, "status", "--addr", d.HTTPAddr()); code != 1 || !strings.Contains(stderr, "401") {
		t.Errorf("status without a token: exit %d, %q; want 1 and 401", code, stderr)
	}
	if code, _, stderr := runApp(t, "status", "--addr", d.HTTPAddr(), "--token-file", nurseFile); code != 1 || !strings.Contains(stderr, "403") {
		t.Errorf("status with a patient-limited token: exit %d, %q; want 1 and 403", code, stderr)
	}

	// The subscription reaches the hub once the first event is out, and
	// the mapper has applied the order: both are settled now.
	var s opsapi.Status
	var out string
	testkit.Poll(10*time.Second, func() bool {
		code, stdout, stderr := runApp(t, "status", "--addr", "http://"+d.HTTPAddr(), "--token-file", opsFile, "--json")
		if code != 0 {
			t.Fatalf("status --json: exit %d: %s", code, stderr)
		}
		s = opsapi.Status{}
		if err := json.Unmarshal([]byte(stdout), &s); err != nil {
			t.Fatalf("status --json: %v\n%s", err, stdout)
		}
		out = stdout
		return s.Subscribers["grpc"] == 1 && s.Mapper.Lag == 0
	})
	if !s.Ready || s.State != "ready" {
		t.Errorf("ready %v, state %q", s.Ready, s.State)
	}
	if s.Subscribers["grpc"] != 1 {
		t.Errorf("subscribers %v, want grpc 1", s.Subscribers)
	}
	m := s.Mapper
	if m.Role != "leader" || m.Clustered || !m.Running || !m.Ready || m.AppliedSequence != 1 || m.IngestHead != 1 || m.Lag != 0 || m.EventsLastSequence != 1 {
		t.Errorf("mapper %+v; want the single leader, live, applied 1 of 1, lag 0, 1 event", m)
	}
	if !s.Store.Embedded || s.Store.Location != data || !s.Store.Connected || len(s.Store.Streams) != 2 {
		t.Errorf("store %+v; want embedded at %s, connected, two streams", s.Store, data)
	} else if in := s.Store.Streams[0]; in.Name != "RADBRIDGE_INGEST" || in.Messages != 1 || in.LastSequence != 1 || in.Bytes == 0 {
		t.Errorf("ingest stream %+v; want 1 message", in)
	}
	want := map[string]string{"grpc": d.GRPCAddr(), "http": d.HTTPAddr(), "mllp": d.MLLPAddr(), "dicom": d.DICOMAddr(), "metrics": d.MetricsAddr()}
	for _, l := range s.Listeners {
		if want[l.Name] != l.Address || l.TLS {
			t.Errorf("listener %+v; want %s without TLS", l, want[l.Name])
		}
		delete(want, l.Name)
	}
	if len(want) > 0 {
		t.Errorf("listeners missing: %v", want)
	}
	if s.HL7 == nil || s.HL7.Messages != 1 || s.HL7.Acks["AA"] != 1 {
		t.Errorf("hl7 %+v; want 1 message answered AA", s.HL7)
	}
	if s.DICOM == nil || s.DICOM.AssociationsAccepted != 0 {
		t.Errorf("dicom %+v; want no associations", s.DICOM)
	}
	if s.Version == "" || s.UptimeSeconds < 0 || s.Started.IsZero() {
		t.Errorf("version %q uptime %v started %v", s.Version, s.UptimeSeconds, s.Started)
	}
	for _, secret := range []string{"MRN4711", "998877665", "ACC1001", "MÜLLER", "ops-token"} {
		if strings.Contains(out, secret) {
			t.Errorf("status JSON contains %q", secret)
		}
	}

	code, stdout, stderr := runApp(t, "status", "--addr", d.HTTPAddr(), "--token-file", opsFile)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	t.Logf("radbridge status:\n%s", stdout)
	for _, want := range []string{"READY", "listeners:", "mllp", d.MLLPAddr(), "store: embedded at " + data + ", connected", "RADBRIDGE_INGEST", "RADBRIDGE_EVENTS",
		"mapper: leader, live, applied 1 of 1 (lag 0), 0 studies in their quiet period, 1 events", "subscribers: grpc 1, internal 1, room 0, websocket 0", "hl7: 1 messages (AA 1)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status output lacks %q:\n%s", want, stdout)
		}
	}

	// Nobody listening: exit 1, said plainly.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if code, _, stderr := runApp(t, "status", "--addr", closed); code != 1 || !strings.Contains(stderr, "unreachable") {
		t.Errorf("status of nothing: exit %d, %q; want 1 and unreachable", code, stderr)
	}
}
