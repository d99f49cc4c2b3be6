package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"radbridge/internal/app"
	"radbridge/internal/config"
	"radbridge/internal/testkit"
	"radbridge/internal/testkit/inproc"
	"radbridge/store"
)

// runDaemon starts a daemon that the test stops itself (stop waits for the
// orderly shutdown).
func runDaemon(t *testing.T, dir string, log *slog.Logger, extra ...string) (*app.Daemon, func()) {
	t.Helper()
	d := inproc.Start(t, dir, log, append([]string{"--mllp-addr", "", "--dicom-addr", ""}, extra...)...)
	return d.Daemon, func() {
		if err := d.Stop(); err != nil {
			t.Errorf("daemon stopped with %v", err)
		}
	}
}

// history is what a client sees: every event and two patients' imaging.
func history(t *testing.T, base string) (events []any, imaging []map[string]any) {
	t.Helper()
	_, list := testkit.GetJSON(t, base+"/v1/events?page_size=1000")
	events, _ = list["events"].([]any)
	for _, p := range []string{"P1", "P2"} {
		_, img := testkit.GetJSON(t, base+"/v1/patients/"+p+"/imaging")
		imaging = append(imaging, img)
	}
	return events, imaging
}

// TestRestartFromSnapshot: a daemon writing snapshots every few
// observations stops; the next start loads the newest snapshot (it says so)
// instead of replaying the whole ingest log, and clients see the same
// events and imaging as before, then new ones as usual.
func TestRestartFromSnapshot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), "--snapshot-every", "4")
	base := "http://" + d.HTTPAddr()
	for i := range 11 {
		publish(t, base, fmt.Sprintf("P%d", 1+i%2), fmt.Sprintf("1.2.3.%d", i))
	}
	evs1, img1 := history(t, base)
	if len(evs1) != 11 {
		t.Fatalf("%d events before the restart, want 11", len(evs1))
	}
	stop()

	var logs testkit.Buffer
	d, _ = runDaemon(t, dir, slog.New(slog.NewTextHandler(&logs, nil)), "--snapshot-every", "4")
	base = "http://" + d.HTTPAddr()
	evs2, img2 := history(t, base)
	if !reflect.DeepEqual(evs1, evs2) || !reflect.DeepEqual(img1, img2) {
		t.Errorf("after a restart from the snapshot clients see other history:\nbefore %v\n%v\nafter  %v\n%v", evs1, img1, evs2, img2)
	}
	if !strings.Contains(logs.String(), "mapper starting from snapshot") || !strings.Contains(logs.String(), "ingest_seq=11") {
		t.Errorf("the restart did not start from the snapshot at ingest sequence 11; log:\n%s", logs.String())
	}
	ev := publish(t, base, "P1", "1.2.3.99")
	if seq := fmt.Sprint(ev["sequence"]); seq != "12" {
		t.Errorf("first event after the restart has sequence %s, want 12", seq)
	}
}

// metric reads one unlabelled sample from GET /metrics.
func opsMetric(t *testing.T, base, name string) float64 {
	t.Helper()
	_, b := testkit.Get(t, base+"/metrics")
	for _, line := range strings.Split(b, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %q", name, line)
			}
			return f
		}
	}
	t.Fatalf("GET /metrics has no %s:\n%s", name, b)
	return 0
}

// waitMetric polls until cond holds for the metric (at most 20 s).
func waitOpsMetric(t *testing.T, base, name string, cond func(float64) bool) float64 {
	t.Helper()
	var v float64
	if !testkit.Poll(20*time.Second, func() bool { v = opsMetric(t, base, name); return cond(v) }) {
		t.Fatalf("%s stayed at %v", name, v)
	}
	return v
}

// TestIngestRetentionKeepsWhatSnapshotsNeed: with --ingest-max-age the
// ingest log is trimmed, but never past the oldest kept snapshot, so a
// restart works; without the snapshots the start fails precisely instead of
// mapping from a hole.
func TestIngestRetentionKeepsWhatSnapshotsNeed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	flags := []string{"--snapshot-every", "2", "--ingest-max-age", "1ms", "--retention-interval", "100ms"}
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), flags...)
	base := "http://" + d.HTTPAddr()
	for i := range 9 {
		publish(t, base, "P1", fmt.Sprintf("1.2.3.%d", i))
	}
	// Snapshots about every 2 records (3 kept): the records the oldest
	// kept one covers may go, no more (checked below).
	first := waitOpsMetric(t, base, "radbridge_ingest_log_first_sequence", func(v float64) bool { return v >= 3 })
	// Not a wait for a condition: a few more trims may run meanwhile, and
	// none of them may pass the snapshots.
	time.Sleep(300 * time.Millisecond)
	first = opsMetric(t, base, "radbridge_ingest_log_first_sequence")
	if n := opsMetric(t, base, "radbridge_ingest_records_trimmed_total"); n != first-1 {
		t.Errorf("radbridge_ingest_records_trimmed_total %v, want %v", n, first-1)
	}
	evs1, img1 := history(t, base)
	stop()

	d, stop = runDaemon(t, dir, slog.New(slog.DiscardHandler), "--retention-interval", "1h")
	evs2, img2 := history(t, "http://"+d.HTTPAddr())
	if !reflect.DeepEqual(evs1, evs2) || !reflect.DeepEqual(img1, img2) {
		t.Errorf("history changed across a restart on a trimmed ingest log")
	}
	stop()

	// Without the snapshots the trimmed records are needed and missing.
	st, err := store.Open(context.Background(), store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	seqs, _ := st.Snapshots().Snapshots(context.Background())
	inFirst, _ := st.Ingest().First(context.Background())
	// A snapshot falling due while the previous one is written is skipped,
	// so how many were taken depends on the machine's pace; at most 3 are
	// kept, and the trim must stop at the oldest of them.
	if len(seqs) == 0 || len(seqs) > 3 || inFirst > slices.Min(seqs)+1 || inFirst < uint64(first) {
		t.Errorf("ingest log starts at %d (metric %v) with snapshots %v: trimmed past the oldest snapshot, or not at all", inFirst, first, seqs)
	}
	for _, s := range seqs {
		if err := st.Snapshots().Delete(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	cfg, _ := config.Load("test", []string{"--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", ""}, func(string) string { return "" }, io.Discard)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err = app.Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = d.Wait()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("ingest log starts at record %d", inFirst)) || !strings.Contains(err.Error(), "purged") {
		t.Errorf("start without the snapshots the trimmed log needs: %v; want a precise error", err)
	}
}

// TestEventRetentionAndTooOldCursor: events older than --events-max-age
// are removed; the metrics show the edge; a client resuming from a removed
// sequence gets OUT_OF_RANGE saying so; the daemon restarts and numbers
// new events on.
func TestEventRetentionAndTooOldCursor(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	flags := []string{"--duplicate-window", "1s", "--events-max-age", "2s", "--retention-interval", "100ms"}
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), flags...)
	base := "http://" + d.HTTPAddr()
	for i := range 3 {
		publish(t, base, "P1", fmt.Sprintf("1.2.3.%d", i))
	}
	if age := opsMetric(t, base, "radbridge_event_log_oldest_event_age_seconds"); age > 2 {
		t.Errorf("oldest event age %v s right after publishing", age)
	}
	waitOpsMetric(t, base, "radbridge_event_log_first_sequence", func(v float64) bool { return v == 4 })
	code, body := testkit.GetJSON(t, base+"/v1/events?since=1")
	if code != 400 || !strings.Contains(fmt.Sprint(body["message"]), "no longer retained") {
		t.Errorf("resume from a removed sequence: %d %v; want 400 OUT_OF_RANGE 'no longer retained'", code, body)
	}
	if code, _ := testkit.GetJSON(t, base+"/v1/events?since=3"); code != 200 {
		t.Errorf("resume from the newest sequence: %d, want 200", code)
	}
	stop()
	d, _ = runDaemon(t, dir, slog.New(slog.DiscardHandler), flags...)
	if ev := publish(t, "http://"+d.HTTPAddr(), "P1", "1.2.3.9"); fmt.Sprint(ev["sequence"]) != "4" {
		t.Errorf("first event after a restart on an emptied event log: sequence %v, want 4", ev["sequence"])
	}
}

// TestReplayCommand: radbridge replay refuses a data directory a daemon
// holds; --check passes on an untouched store and fails (exit 1) after a
// mapping option changes; a real replay with a changed option reports the
// differing events, appends none, and the read models show the rebuilt
// state.
func TestReplayCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	flags := []string{"--study-quiet-period", "1s", "--snapshot-every", "3"}
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), append([]string{"--mllp-addr", "127.0.0.1:0"}, flags...)...)
	base := "http://" + d.HTTPAddr()
	for _, m := range risMessages {
		f := testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl))
		if code, out, errOut := runApp(t, "send-hl7", "--addr", d.MLLPAddr(), f); code != 0 {
			t.Fatalf("send-hl7 %s: %d %s %s", m.name, code, out, errOut)
		}
	}
	const study = "1.2.826.0.1.3680043.10.1447.77"
	n := map[string]any{"study": notifyStudy("MRN-R1", "ACC-R1"), "instances": []any{notifyInstance(study, 1, 1), notifyInstance(study, 1, 2)}}
	if code, body := httpDo(t, "POST", base+"/v1/dicom/notifications", "", mustJSON(t, n)); code != 200 {
		t.Fatalf("notification: %d %s", code, body)
	}
	testkit.Eventually(t, 15*time.Second, "study available (the quiet period ends)", func() bool {
		_, list := testkit.GetJSON(t, base+"/v1/events?type=IMAGING_STUDY_AVAILABLE")
		evs, _ := list["events"].([]any)
		return len(evs) == 1
	})
	_, list := testkit.GetJSON(t, base+"/v1/events?page_size=1000")
	before, _ := list["events"].([]any)

	replay := func(args ...string) (int, string) {
		t.Helper()
		code, out, errOut := runApp(t, append([]string{"replay", "--data-dir", dir, "--log-level", "error"}, args...)...)
		return code, out + errOut
	}
	if code, out := replay("--check"); code != 1 || !strings.Contains(out, "in use by another radbridge process") {
		t.Errorf("replay while the daemon runs: %d %s; want a refusal", code, out)
	}
	stop()

	if code, out := replay(append([]string{"--check"}, flags...)...); code != 0 || !strings.Contains(out, "match a clean replay") {
		t.Errorf("check of an untouched store: exit %d\n%s", code, out)
	}
	// Snapshots are taken every 3 records unless one is still being
	// written, so the newest before record 10 is at 3 to 9.
	code, out := replay(append([]string{"--check", "--from", "10"}, flags...)...)
	m := regexp.MustCompile(`from the snapshot at ingest record (\d+): (\d+) ingest records`).FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] < "3" || m[1] > "9" || len(m[1]) != 1 {
		t.Errorf("check from record 10: exit %d\n%s", code, out)
	}
	if code, out := replay(append([]string{"--check", "--hl7-imaging-sections", "MR"}, flags...)...); code != 1 || !strings.Contains(out, "differ from a clean replay") {
		t.Errorf("check after --hl7-imaging-sections changed: exit %d\n%s", code, out)
	}
	if code, out := replay("--check", "--study-quiet-period", "1m", "--snapshot-every", "3"); code != 1 || !strings.Contains(out, "logged events no longer derived: 1") {
		t.Errorf("check after --study-quiet-period changed: exit %d\n%s", code, out)
	}

	viewer := "https://viewer.example/v?study={{study}}"
	code, out = replay(append([]string{"--viewer-url", viewer}, flags...)...)
	if code != 0 || !strings.Contains(out, "IMAGING_STUDY_AVAILABLE=1") || !strings.Contains(out, "ImagingStudy=") || !strings.Contains(out, "appended: 0") {
		t.Errorf("replay with a viewer link: exit %d\n%s", code, out)
	}
	d, _ = runDaemon(t, dir, slog.New(slog.DiscardHandler), append([]string{"--viewer-url", viewer}, flags...)...)
	base = "http://" + d.HTTPAddr()
	_, list = testkit.GetJSON(t, base+"/v1/events?page_size=1000")
	if after, _ := list["events"].([]any); !reflect.DeepEqual(before, after) {
		t.Errorf("replay changed the event log: %d events before, %d after", len(before), len(after))
	}
	_, img := testkit.GetJSON(t, base+"/v1/patients/MRN-R1/imaging")
	if !strings.Contains(mustJSON(t, img), "viewer.example") {
		t.Errorf("GetPatientImaging after the replay lacks the viewer link: %v", img)
	}
}
