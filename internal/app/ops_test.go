package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"radbridge/internal/app"
	"radbridge/internal/config"
)

// runDaemon starts a daemon that the test stops itself (stop waits for the
// orderly shutdown).
func runDaemon(t *testing.T, dir string, log *slog.Logger, extra ...string) (*app.Daemon, func()) {
	t.Helper()
	args := append([]string{"--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", ""}, extra...)
	cfg, err := config.Load("test", args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := app.Start(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := d.Wait(); err != nil {
			t.Errorf("daemon stopped with %v", err)
		}
	}
	t.Cleanup(stop)
	waitReady(t, "http://"+d.HTTPAddr())
	return d, stop
}

// history is what a client sees: every event and two patients' imaging.
func history(t *testing.T, base string) (events []any, imaging []map[string]any) {
	t.Helper()
	_, list := getJSON(t, base+"/v1/events?page_size=1000")
	events, _ = list["events"].([]any)
	for _, p := range []string{"P1", "P2"} {
		_, img := getJSON(t, base+"/v1/patients/"+p+"/imaging")
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

	var logs lockedBuf
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
