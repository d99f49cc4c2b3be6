package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/jpeg"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"radbridge/demo"
	"radbridge/internal/app"
	"radbridge/internal/testkit"
)

// TestDemo runs `radbridge demo` at 20x speed: the simulated RIS and PACS
// make orders, a cancellation, results, reports and studies for the
// synthetic patients, each study with the series and instances the PACS
// sent, and the log names no patient.
func TestDemo(t *testing.T) {
	const patients = 4
	// Serve flags with values before and after the demo's own.
	dm := startDemo(t, "--data-dir", filepath.Join(t.TempDir(), "data"), "--speed", "20", "--grpc-addr", "127.0.0.1:0", "--patients", fmt.Sprint(patients),
		"--http-addr", "127.0.0.1:0", "--mllp-addr", "127.0.0.1:0", "--loop=false", "--dicom-addr", "127.0.0.1:0", "--study-quiet-period", "500ms")
	base, stderr := dm.base, dm.stderr
	plan := demo.PlanRun(dm.run, patients, 0)
	if dm.patient != plan[0].Patient.ID {
		t.Errorf("banner patient %s, want %s", dm.patient, plan[0].Patient.ID)
	}

	wantTypes := []string{"ORDER_PLACED", "ORDER_CANCELLED", "RESULT_RECEIVED", "IMAGING_REPORT_READY", "IMAGING_STUDY_PROGRESS", "IMAGING_STUDY_AVAILABLE"}
	var missing []string
	if !testkit.Poll(60*time.Second, func() bool {
		seen := map[string]bool{} // type + " " + accession
		available := map[string]map[string]any{}
		for _, e := range plan {
			_, list := testkit.GetJSON(t, base+"/v1/events?page_size=1000&patient_id="+url.QueryEscape(e.Patient.ID))
			evs, _ := list["events"].([]any)
			for _, x := range evs {
				ev := x.(map[string]any)
				typ, _ := ev["type"].(string)
				acc, _ := ev["accession_number"].(string)
				seen[typ] = true
				seen[typ+" "+acc] = true
				if typ == "IMAGING_STUDY_AVAILABLE" {
					r, _ := ev["resource"].(map[string]any)
					available[acc] = r
				}
			}
		}
		missing = missing[:0]
		for _, typ := range wantTypes {
			if !seen[typ] {
				missing = append(missing, typ)
			}
		}
		for _, e := range plan {
			for _, typ := range []string{"ORDER_PLACED", "IMAGING_STUDY_AVAILABLE", "IMAGING_REPORT_READY"} {
				if !seen[typ+" "+e.Accession] {
					missing = append(missing, typ+" "+e.Accession)
				}
			}
			if r := available[e.Accession]; r != nil {
				s, _ := r["numberOfSeries"].(float64)
				i, _ := r["numberOfInstances"].(float64)
				if int(s) != len(e.Series) || int(i) != e.Instances() {
					missing = append(missing, fmt.Sprintf("%s study with %v series and %v instances (has %v and %v)", e.Accession, len(e.Series), e.Instances(), s, i))
				}
			}
		}
		if x := demo.CancelledExamRun(dm.run, patients, 0); !seen["ORDER_CANCELLED "+x.Accession] {
			missing = append(missing, "ORDER_CANCELLED "+x.Accession)
		}
		return len(missing) == 0
	}) {
		t.Fatalf("after 60s still missing: %s\nlog:\n%s", strings.Join(missing, ", "), stderr.String())
	}
	if log := stderr.String(); strings.Contains(log, "SYNTHETIC") {
		t.Errorf("a patient name is in the log:\n%s", log)
	}
}

// runningDemo is a radbridge demo started by startDemo.
type runningDemo struct {
	base, patient, run, dataDir string
	stdout, stderr              *testkit.Buffer
	// stop ends the demo and returns its exit code.
	stop func() int
}

var (
	demoBanner = regexp.MustCompile(`radbridge demo: open http://localhost:(\d+)/\?patient=(\S+) — simulated RIS and PACS are sending to this daemon`)
	demoRun    = regexp.MustCompile(`radbridge demo: run ([0-9A-Z]{4}) \(control ids DEMO[0-9A-Z]{4}…, accessions DA[0-9A-Z]{4}…\); data in (\S+) \((removed at exit; --data-dir keeps it|kept)\)`)
)

// startDemo runs radbridge demo with args in-process and waits for its
// banner.
func startDemo(t *testing.T, args ...string) *runningDemo {
	t.Helper()
	dm := &runningDemo{stdout: &testkit.Buffer{}, stderr: &testkit.Buffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- app.Demo(ctx, args, dm.stdout, dm.stderr) }()
	code, stopped := 0, false
	dm.stop = func() int {
		if !stopped {
			cancel()
			code, stopped = <-done, true
		}
		return code
	}
	t.Cleanup(func() {
		if code := dm.stop(); code != 0 {
			t.Errorf("demo exited %d\n%s", code, dm.stderr.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := dm.stdout.String()
		m, r := demoBanner.FindStringSubmatch(out), demoRun.FindStringSubmatch(out)
		if m != nil && r != nil {
			dm.base, dm.patient, dm.run, dm.dataDir = "http://127.0.0.1:"+m[1], m[2], r[1], r[2]
			return dm
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("demo exited %d before its banner; stdout %q\nlog:\n%s", code, out, dm.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner on stdout %q\nlog:\n%s", out, dm.stderr.String())
		}
	}
}

// readmeDemoCommands are the radbridge demo commands of the README's sh
// blocks, as argument lists after "radbridge".
func readmeDemoCommands(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	inSh := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "```sh"):
			inSh = true
		case strings.HasPrefix(l, "```"):
			inSh = false
		case inSh:
			cmd, _, _ := strings.Cut(l, "#")
			f := strings.Fields(cmd)
			for i := range f {
				if f[i] == "radbridge" || f[i] == "./cmd/radbridge" {
					if i+1 < len(f) && f[i+1] == "demo" {
						out = append(out, f[i+1:])
					}
					break
				}
			}
		}
	}
	if len(out) < 2 {
		t.Fatalf("README: found %d radbridge demo commands in its sh blocks, want the two (%q)", len(out), out)
	}
	return out
}

// TestREADMEDemoCommands runs each radbridge demo command of the README
// exactly as written (the environment moves the four listeners to free
// loopback ports, so the test cannot collide with a daemon on 8080), twice:
// each run names itself anew (fresh control ids and accessions), works in a
// temporary data directory that is gone after it stops, shows a study's
// images counted against the MPPS total ("k of 11 instances") and a real
// thumbnail.
func TestREADMEDemoCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo at its real speed")
	}
	for _, a := range []string{"HTTP", "GRPC", "MLLP", "DICOM"} {
		t.Setenv("RADBRIDGE_"+a+"_ADDR", "127.0.0.1:0")
	}
	for _, args := range readmeDemoCommands(t) {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			runs := map[string]bool{}
			for range 2 {
				dm := startDemo(t, args[1:]...)
				if runs[dm.run] {
					t.Errorf("run %s named twice", dm.run)
				}
				runs[dm.run] = true
				if !strings.HasPrefix(dm.dataDir, os.TempDir()) {
					t.Errorf("data directory %s is not a temporary one", dm.dataDir)
				}
				plan := demo.PlanRun(dm.run, 4, 0)
				waitDemoProgress(t, dm, plan[1])
				waitThumbnail(t, dm, plan[0])
				if code := dm.stop(); code != 0 {
					t.Fatalf("demo exited %d\n%s", code, dm.stderr.String())
				}
				if _, err := os.Stat(dm.dataDir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("data directory %s still there after the demo stopped: %v", dm.dataDir, err)
				}
			}
		})
	}
}

// waitDemoProgress waits (bounded) for a progress event of exam's study
// that counts its instances against the total its MPPS announced.
func waitDemoProgress(t *testing.T, dm *runningDemo, exam demo.Exam) {
	t.Helper()
	want := regexp.MustCompile(fmt.Sprintf(`: \d+ of %d instances$`, exam.Instances()))
	var msgs []string
	if !testkit.Poll(90*time.Second, func() bool {
		_, list := testkit.GetJSON(t, dm.base+"/v1/events?page_size=1000&type=IMAGING_STUDY_PROGRESS&patient_id="+url.QueryEscape(exam.Patient.ID))
		evs, _ := list["events"].([]any)
		msgs = msgs[:0]
		for _, x := range evs {
			ev := x.(map[string]any)
			msg, _ := ev["message"].(string)
			if ev["accession_number"] == exam.Accession && want.MatchString(msg) {
				return true
			}
			msgs = append(msgs, msg)
		}
		return false
	}) {
		t.Fatalf("no progress event of %s counting against %d instances within 90s; progress messages %q\nlog:\n%s", exam.Accession, exam.Instances(), msgs, dm.stderr.String())
	}
}

// waitThumbnail waits (bounded) for exam's study to be available and its
// thumbnail to be a JPEG rendered from its images.
func waitThumbnail(t *testing.T, dm *runningDemo, exam demo.Exam) {
	t.Helper()
	if !testkit.Poll(90*time.Second, func() bool {
		_, list := testkit.GetJSON(t, dm.base+"/v1/events?page_size=1000&type=IMAGING_STUDY_AVAILABLE&patient_id="+url.QueryEscape(exam.Patient.ID))
		evs, _ := list["events"].([]any)
		for _, x := range evs {
			ev := x.(map[string]any)
			uid, _ := ev["study_instance_uid"].(string)
			if ev["accession_number"] != exam.Accession || uid == "" {
				continue
			}
			resp, err := http.Get(dm.base + "/v1/studies/" + uid + "/thumbnail")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "image/jpeg" {
				if _, err := jpeg.Decode(bytes.NewReader(b)); err != nil {
					t.Fatalf("thumbnail of %s is not a JPEG: %v", exam.Accession, err)
				}
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no JPEG thumbnail of %s within 90s\nlog:\n%s", exam.Accession, dm.stderr.String())
	}
}
