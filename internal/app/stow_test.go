package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// stowBody builds a multipart/related STOW-RS body of the files in dirs
// (sorted) followed by the extra raw parts.
func stowBody(t *testing.T, dirs []string, extra ...[]byte) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	add := func(b []byte) {
		w, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/dicom"}})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.dcm"))
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			add(b)
		}
	}
	for _, b := range extra {
		add(b)
	}
	mw.Close()
	return `multipart/related; type="application/dicom"; boundary=` + mw.Boundary(), buf.Bytes()
}

// stow POSTs a body and returns the status and, per SOP Instance UID (or
// "?"), "ok" or the failure reason in decimal.
// stowPublicBase is the --public-base-url the STOW-RS tests give.
const stowPublicBase = "https://radbridge.example.org"

func stow(t *testing.T, url, ct string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, ct, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if resp.StatusCode < 400 || resp.StatusCode == http.StatusConflict {
		if ct := resp.Header.Get("Content-Type"); ct != "application/dicom+json" {
			t.Errorf("response Content-Type %q", ct)
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("response %q: %v", b, err)
		}
	}
	got := map[string]any{}
	for _, in := range testkit.STOWInstances(out) {
		if in.FailureReason != 0 {
			got[in.SOPInstanceUID] = float64(in.FailureReason)
			continue
		}
		got[in.SOPInstanceUID] = "ok"
		if !strings.HasPrefix(in.RetrieveURL, stowPublicBase+"/dicomweb/studies/") {
			t.Errorf("%s: RetrieveURL %q, want one under --public-base-url %s", in.SOPInstanceUID, in.RetrieveURL, stowPublicBase)
		}
	}
	return resp.StatusCode, got
}

// TestSTOWRSStoresAStudy: a study sent over STOW-RS gives what storescu
// gives: every instance stored, IMAGING_STUDY_AVAILABLE with the right
// counts (at the end of the first request, completion reason stow-rs, then
// IMAGING_STUDY_UPDATED at the end of the second), Part-10 files in
// --store-dir. A non-DICOM part fails alone (202),
// a study UID that differs from the URL fails with A900, a wrong content
// type is 415.
func TestSTOWRSStoresAStudy(t *testing.T) {
	storeDir := t.TempDir()
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "2s", "--store-dir", storeDir, "--public-base-url", stowPublicBase)
	base := "http://" + d.HTTPAddr() + "/dicomweb/studies"
	a, b := t.TempDir(), t.TempDir()
	makeStudy(t, a, studyUID, 2, 3, 1)
	makeStudy(t, b, studyUID, 1, 2, 3)

	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"MRN4711"}, Type: []rbv1.EventType{rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.EventType_IMAGING_STUDY_UPDATED}})
	if err != nil {
		t.Fatal(err)
	}

	ct, body := stowBody(t, []string{a})
	code, got := stow(t, base, ct, body)
	want := map[string]any{}
	for _, uid := range []string{".1.1", ".1.2", ".1.3", ".2.1", ".2.2", ".2.3"} {
		want[studyUID+uid] = "ok"
	}
	if diff := cmp.Diff(got, want); code != 200 || diff != "" {
		t.Errorf("STOW-RS status %d, instances (-got +want):\n%s", code, diff)
	}

	// A non-DICOM part: 202, the good parts stored.
	ct, body = stowBody(t, []string{b}, []byte("this is not DICOM"))
	code, got = stow(t, base+"/"+studyUID, ct, body)
	want = map[string]any{studyUID + ".3.1": "ok", studyUID + ".3.2": "ok", "?": float64(0xC000)}
	if diff := cmp.Diff(got, want); code != 202 || diff != "" {
		t.Errorf("with a non-DICOM part: status %d, instances (-got +want):\n%s", code, diff)
	}

	for _, w := range []struct {
		typ               rbv1.EventType
		series, instances float64
	}{{rbv1.EventType_IMAGING_STUDY_AVAILABLE, 2, 6}, {rbv1.EventType_IMAGING_STUDY_UPDATED, 3, 8}} {
		var ev *rbv1.Event
		for ev == nil || ev.Heartbeat {
			if ev, err = sub.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		r := ev.Resource.AsMap()
		if ev.Type != w.typ || r["numberOfSeries"] != w.series || r["numberOfInstances"] != w.instances || ev.StudyInstanceUid != studyUID || ev.AccessionNumber != "ACC1001" {
			t.Errorf("%v: series %v instances %v study %s accession %s; want %v, %v, %v", ev.Type, r["numberOfSeries"], r["numberOfInstances"], ev.StudyInstanceUid, ev.AccessionNumber, w.typ, w.series, w.instances)
		}
		if ev.Source.GetCallingAeTitle() != "STOW-RS" {
			t.Errorf("source %v", ev.Source)
		}
		if c := ev.GetCompletion(); w.typ == rbv1.EventType_IMAGING_STUDY_AVAILABLE &&
			(c.GetReason() != "stow-rs" || c.GetInstancesReceived() != 6 || c.GetInstancesExpected() != 6 || strings.Join(c.GetExpectedFrom(), ",") != "stow-rs") {
			t.Errorf("AVAILABLE completion %v, want stow-rs with 6 of 6 expected from stow-rs", c)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(storeDir, studyUID, "*", "*.dcm")); len(files) != 8 {
		t.Errorf("--store-dir holds %d Part-10 files, want 8", len(files))
	}

	// The URL names another study: A900 for each, 409 as none was stored.
	ct, body = stowBody(t, []string{b})
	code, got = stow(t, base+"/1.2.3.4", ct, body)
	want = map[string]any{studyUID + ".3.1": float64(0xA900), studyUID + ".3.2": float64(0xA900)}
	if diff := cmp.Diff(got, want); code != 409 || diff != "" {
		t.Errorf("study mismatch: status %d (want 409), instances (-got +want):\n%s", code, diff)
	}
	if code, _ := stow(t, base, "application/dicom", body); code != 415 {
		t.Errorf("Content-Type application/dicom: %d, want 415", code)
	}
}
