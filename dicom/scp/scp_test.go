package scp

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"radbridge/ingest"
	"radbridge/ingest/ingesttest"
	"radbridge/internal/testkit"
	"strings"
	"testing"
	"time"
)

type testSCP struct {
	srv  *Server
	h    *ingesttest.Recorder
	host string
	port string
}

// startSCP serves on 127.0.0.1:0 until the test ends; Serve's return is
// awaited in cleanup.
func startSCP(t testing.TB, cfg Config) *testSCP {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	h := &ingesttest.Recorder{}
	srv, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(testkit.ServeLoopback(t, srv.Serve))
	return &testSCP{srv: srv, h: h, host: host, port: port}
}

// run runs a peer with TCP_NODELAY=1 (Debian's DCMTK otherwise waits on
// Nagle) and a timeout; it returns the combined output and the exit error.
func run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	return testkit.DCMTK(t, 120*time.Second, name, args...)
}

func TestEcho(t *testing.T) {
	s := startSCP(t, Config{})
	for i := 0; i < 3; i++ {
		out, err := run(t, "echoscu", "-aec", "RADBRIDGE", "-aet", "ECHOER", s.host, s.port)
		if err != nil {
			t.Fatalf("echoscu: %v\n%s", err, out)
		}
	}
	if got := waitStats(s.srv, func(st Stats) bool { return st.Echoes == 3 && st.AssociationsAccepted == 3 }); got.Echoes != 3 || got.AssociationsAccepted != 3 {
		t.Errorf("stats = %+v, want 3 echoes in 3 associations", got)
	}
}

// waitStats returns the server's counters once ok holds, or after 10 s:
// the server counts an association after its answer is on the wire, so a
// peer that has exited may be a moment ahead of the counters.
func waitStats(srv *Server, ok func(Stats) bool) Stats {
	var st Stats
	testkit.Poll(10*time.Second, func() bool { st = srv.Stats(); return ok(st) })
	return st
}

func TestRejectCalledAE(t *testing.T) {
	s := startSCP(t, Config{})
	out, err := run(t, "echoscu", "-aec", "NOTUS", s.host, s.port)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("echoscu with wrong called AE: err = %v, want non-zero exit\n%s", err, out)
	}
	if !containsAll(out, "Association Rejected", "Called AE Title Not Recognized") {
		t.Errorf("echoscu output does not show the rejection reason:\n%s", out)
	}
	if got := waitStats(s.srv, func(st Stats) bool { return st.AssociationsRejected >= 1 }).AssociationsRejected; got != 1 {
		t.Errorf("rejected = %d, want 1", got)
	}
}

func TestRejectCallingAE(t *testing.T) {
	s := startSCP(t, Config{AllowedCallers: []AllowedCaller{{AETitle: "GOODPACS", Host: "127.0.0.1"}}})
	if out, err := run(t, "echoscu", "-aet", "GOODPACS", "-aec", "RADBRIDGE", s.host, s.port); err != nil {
		t.Fatalf("allowed caller: %v\n%s", err, out)
	}
	out, err := run(t, "echoscu", "-aet", "EVILPACS", "-aec", "RADBRIDGE", s.host, s.port)
	if err == nil || !containsAll(out, "Calling AE Title Not Recognized") {
		t.Errorf("unknown caller: err = %v, output:\n%s", err, out)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// python finds a python3 that can import pydicom (Debian's python3-pydicom).
func python(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(p, "-c", "import pydicom").Run(); err == nil {
			return p
		}
	}
	testkit.Missing(t, "python3 with pydicom not installed (apt-get install python3-pydicom)")
	return ""
}

// pydicomData returns pydicom's data folder (test_files, charset_files).
func pydicomData(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(python(t), "-c", "import pydicom,os;print(os.path.dirname(pydicom.__file__))").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "data")
}

// repoRoot is two levels up from this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..")
}

type expected struct {
	SOPClassUID    string `json:"sop_class_uid"`
	SOPInstanceUID string `json:"sop_instance_uid"`
	StudyUID       string `json:"study_uid"`
	SeriesUID      string `json:"series_uid"`
	PatientID      string `json:"patient_id"`
	PatientName    string `json:"patient_name"`
	Accession      string `json:"accession"`
	Modality       string `json:"modality"`
	Charset        string `json:"charset"`
	TransferSyntax string `json:"transfer_syntax"`
}

// expectedFields reads the files with pydicom (scripts/dicom/fields.py).
func expectedFields(t testing.TB, files []string) map[string]expected {
	t.Helper()
	args := append([]string{filepath.Join(repoRoot(t), "scripts", "dicom", "fields.py")}, files...)
	cmd := exec.Command(python(t), args...)
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fields.py: %v", err)
	}
	m := map[string]expected{}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("fields.py output: %v", err)
	}
	return m
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestLogRedaction: the types carrying patient data log without it.
func TestLogRedaction(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "instance", &ingest.Instance{PatientName: "Secret^Name", PatientID: "PID-SECRET", PatientBirthDate: "19010101", SOPInstanceUID: "1.2.3"},
		"mpps", &ingest.MPPSUpdate{PatientName: "Secret^Name", PatientID: "PID-SECRET"}, "ian", &ingest.IAN{StudyInstanceUID: "1.2"})
	for _, secret := range []string{"Secret", "PID-SECRET", "19010101"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("log holds %q: %s", secret, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "1.2.3") {
		t.Errorf("log lacks the SOP Instance UID: %s", buf.String())
	}
}

// TestNewSweepsCrashLeftovers: a process killed during a C-STORE leaves its
// .incoming-*.dcm temporary file in the store directory (the crash proof
// counted 4 after 26 kills). New removes those untouched for twice the idle
// timeout and keeps a younger one (a reception another process may still be
// writing) and every committed file.
func TestNewSweepsCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, ".incoming-111.dcm")
	young := filepath.Join(dir, ".incoming-222.dcm")
	committed := filepath.Join(dir, "1.2.3", "1.2.3.1", "1.2.3.1.1.dcm")
	os.MkdirAll(filepath.Dir(committed), 0o750)
	for _, f := range []string{old, young, committed} {
		if err := os.WriteFile(f, []byte("DICM"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	os.Chtimes(old, past, past)
	os.Chtimes(committed, past, past)
	if _, err := New(Config{StoreDir: dir, IdleTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler)}, &ingesttest.Recorder{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); err == nil {
		t.Error("an hour-old temporary file survived")
	}
	for _, f := range []string{young, committed} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s removed: %v", f, err)
		}
	}
}
