package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/app"
	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

const studyUID = "1.2.826.0.1.3680043.10.1447.77"

// dcmtk runs a DCMTK tool against the daemon with Nagle off.
func dcmtk(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	return testkit.DCMTK(t, 60*time.Second, tool, args...)
}

// makeStudy writes synthetic instances of patient MRN4711, accession
// ACC1001 (see testkit.MakeStudy).
func makeStudy(t *testing.T, dir, study string, series, instances, first int) {
	t.Helper()
	testkit.MakeStudy(t, dir, study, series, instances, first)
}

// makeLosslessStudy writes what makeStudy writes, each instance in JPEG
// Lossless (DCMTK dcmcjpeg), a transfer syntax storescu sends with -xs.
func makeLosslessStudy(t *testing.T, dir, study string, series, instances, first int) {
	t.Helper()
	src := t.TempDir()
	makeStudy(t, src, study, series, instances, first)
	files, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if out, err := dcmtk(t, "dcmcjpeg", filepath.Join(src, f.Name()), filepath.Join(dir, f.Name())); err != nil {
			t.Fatalf("dcmcjpeg: %v\n%s", err, out)
		}
	}
}

// subscribeStudies subscribes, with ctx, to the ImagingStudy events of
// patient MRN4711 (whom makeStudy writes) and returns once the daemon has
// answered: the subscription is live.
func subscribeStudies(ctx context.Context, t *testing.T, d *app.Daemon) rbv1.EventService_SubscribeClient {
	t.Helper()
	client, _ := grpcClient(t, d.GRPCAddr())
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"MRN4711"}, ResourceType: []string{"ImagingStudy"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Header(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// awaitAvailable returns the next IMAGING_STUDY_AVAILABLE event of sub,
// or an error if anything but progress comes first.
func awaitAvailable(sub rbv1.EventService_SubscribeClient) (*rbv1.Event, error) {
	for {
		ev, err := sub.Recv()
		if err != nil {
			return nil, err
		}
		switch {
		case ev.Heartbeat, ev.Type == rbv1.EventType_IMAGING_STUDY_PROGRESS:
		case ev.Type == rbv1.EventType_IMAGING_STUDY_AVAILABLE:
			return ev, nil
		default:
			return nil, fmt.Errorf("unexpected %v before IMAGING_STUDY_AVAILABLE", ev.Type)
		}
	}
}

// storeAndAwait sends the study in dir to the daemon as a PACS (DCMTK
// storescu) and returns its IMAGING_STUDY_AVAILABLE event.
func storeAndAwait(t *testing.T, d *app.Daemon, dir string) *rbv1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub := subscribeStudies(ctx, t, d)
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, dir); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	ev, err := awaitAvailable(sub)
	if err != nil {
		t.Fatalf("waiting for IMAGING_STUDY_AVAILABLE: %v", err)
	}
	return ev
}

// runStudyScript runs scripts/dicom/study.py with args (dir, study, patient,
// accession, series, instances[, first]).
func runStudyScript(t *testing.T, args ...string) {
	t.Helper()
	testkit.StudyScript(t, args...)
}

// nextEvent returns the next event of sub that is not a heartbeat.
func nextEvent(t *testing.T, sub rbv1.EventService_SubscribeClient) *rbv1.Event {
	t.Helper()
	for {
		ev, err := sub.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Heartbeat {
			return ev
		}
	}
}

// studyCounts returns an ImagingStudy event's numberOfSeries and
// numberOfInstances.
func studyCounts(ev *rbv1.Event) (series, instances float64) {
	r := ev.Resource.AsMap()
	s, _ := r["numberOfSeries"].(float64)
	i, _ := r["numberOfInstances"].(float64)
	return s, i
}

func hostPort(addr string) (string, string) {
	h, p, _ := strings.Cut(addr, ":")
	return h, p
}

// TestPACSStoresAStudy: a PACS (DCMTK) verifies and sends a multi-series
// study (explicit and implicit VR, a JPEG lossless series, a non-ASCII
// patient name) to the running daemon: every C-STORE succeeds, a subscriber
// sees progress, then one IMAGING_STUDY_AVAILABLE with the right counts
// after the quiet period, and one more instance later gives
// IMAGING_STUDY_UPDATED.
func TestPACSStoresAStudy(t *testing.T) {
	storeDir := t.TempDir()
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "4s", "--store-dir", storeDir)
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "echoscu", "-aet", "PACS", "-aec", "RADBRIDGE", host, port); err != nil {
		t.Fatalf("echoscu: %v\n%s", err, out)
	}
	if out, err := dcmtk(t, "echoscu", "-aet", "PACS", "-aec", "SOMEONE", host, port); err == nil || !strings.Contains(out, "Called AE Title Not Recognized") {
		t.Errorf("echoscu to a wrong called AE: %v\n%s", err, out)
	}

	plain, jpeg := t.TempDir(), t.TempDir()
	makeStudy(t, plain, studyUID, 2, 4, 1)
	makeLosslessStudy(t, jpeg, studyUID, 1, 4, 3)

	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"MRN4711"}, ResourceType: []string{"ImagingStudy"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, plain); err != nil {
		t.Fatalf("storescu (native): %v\n%s", err, out)
	}
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "-xs", "+sd", "+r", host, port, jpeg); err != nil {
		t.Fatalf("storescu (JPEG lossless): %v\n%s", err, out)
	}

	next := func() *rbv1.Event { t.Helper(); return nextEvent(t, sub) }
	counts := studyCounts
	progress := 0
	var avail *rbv1.Event
	for avail == nil {
		switch ev := next(); ev.Type {
		case rbv1.EventType_IMAGING_STUDY_PROGRESS:
			progress++
		case rbv1.EventType_IMAGING_STUDY_AVAILABLE:
			avail = ev
		default:
			t.Fatalf("unexpected %v before available", ev.Type)
		}
	}
	if progress == 0 {
		t.Error("no IMAGING_STUDY_PROGRESS while instances arrived")
	}
	if s, i := counts(avail); s != 3 || i != 12 {
		t.Errorf("AVAILABLE counts series %v instances %v; want 3 and 12", s, i)
	}
	r := avail.Resource.AsMap()
	if avail.StudyInstanceUid != studyUID || avail.AccessionNumber != "ACC1001" || r["status"] != "available" || r["resourceType"] != "ImagingStudy" {
		t.Errorf("AVAILABLE event %v", avail)
	}
	if avail.Source.GetCallingAeTitle() != "PACS" || avail.Source.GetCalledAeTitle() != "RADBRIDGE" {
		t.Errorf("source %v", avail.Source)
	}
	// Why it counts as complete: the quiet period, after 12 instances (no
	// IAN or MPPS said how many to expect).
	if c := avail.GetCompletion(); c.GetReason() != "quiet-period" || c.GetInstancesReceived() != 12 || c.GetInstancesExpected() != 0 || c.GetIngestSequence() == 0 {
		t.Errorf("AVAILABLE completion %v, want quiet-period with 12 instances received", c)
	}

	// A late instance: one UPDATED after the quiet period.
	late := t.TempDir()
	makeStudy(t, late, studyUID, 1, 1, 4)
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, late); err != nil {
		t.Fatalf("storescu (late): %v\n%s", err, out)
	}
	upd := next()
	if upd.Type != rbv1.EventType_IMAGING_STUDY_UPDATED {
		t.Fatalf("after a late instance got %v, want IMAGING_STUDY_UPDATED", upd.Type)
	}
	if s, i := counts(upd); s != 4 || i != 13 {
		t.Errorf("UPDATED counts series %v instances %v; want 4 and 13", s, i)
	}
	// Resending the whole study changes nothing.
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, plain); err != nil {
		t.Fatalf("storescu (resend): %v\n%s", err, out)
	}
	code, snap := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/patients/MRN4711/imaging")
	if studies, _ := snap["studies"].([]any); code != 200 || len(studies) != 1 {
		t.Errorf("GetPatientImaging studies %v (%d)", snap["studies"], code)
	}
	if regions := fmt.Sprint(snap["body_region_counts"]); !strings.Contains(regions, "CHEST") {
		t.Errorf("body_region_counts %s", regions)
	}
	// Not a wait for a condition: an event the resend wrongly caused would
	// come after a quiet period, so the test lets one pass to see none.
	time.Sleep(5 * time.Second)
	code, list := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events?type=IMAGING_STUDY_AVAILABLE&type=IMAGING_STUDY_UPDATED")
	if evs, _ := list["events"].([]any); code != 200 || len(evs) != 2 {
		t.Errorf("AVAILABLE+UPDATED events after a resend: %d, want 2", len(evs))
	}
	files, _ := filepath.Glob(filepath.Join(storeDir, studyUID, "*", "*.dcm"))
	if len(files) != 13 {
		t.Errorf("--store-dir holds %d Part-10 files, want 13", len(files))
	}
}
