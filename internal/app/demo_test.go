package app_test

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"radbridge/demo"
	"radbridge/internal/app"
)

// TestDemo runs `radbridge demo` at 20x speed: the simulated RIS and PACS
// make orders, a cancellation, results, reports and studies for the
// synthetic patients, each study with the series and instances the PACS
// sent, and the log names no patient.
func TestDemo(t *testing.T) {
	const patients = 4
	var stdout, stderr lockedBuf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- app.Run(ctx, []string{"demo", "--speed", "20", "--patients", fmt.Sprint(patients),
			"--data-dir", filepath.Join(t.TempDir(), "data"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0", "--study-quiet-period", "500ms"}, &stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("demo exited %d\n%s", code, stderr.String())
		}
	})

	banner := regexp.MustCompile(`radbridge demo: open http://localhost:(\d+)/\?patient=(\S+) — simulated RIS and PACS are sending to this daemon`)
	deadline := time.Now().Add(30 * time.Second)
	var m []string
	for m = banner.FindStringSubmatch(stdout.String()); m == nil; m = banner.FindStringSubmatch(stdout.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no banner on stdout %q\nlog:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	base := "http://127.0.0.1:" + m[1]
	plan := demo.Plan(patients, 0)
	if m[2] != plan[0].Patient.ID {
		t.Errorf("banner patient %s, want %s", m[2], plan[0].Patient.ID)
	}

	wantTypes := []string{"ORDER_PLACED", "ORDER_CANCELLED", "RESULT_RECEIVED", "IMAGING_REPORT_READY", "IMAGING_STUDY_PROGRESS", "IMAGING_STUDY_AVAILABLE"}
	var missing []string
	deadline = time.Now().Add(60 * time.Second)
	for {
		seen := map[string]bool{} // type + " " + accession
		available := map[string]map[string]any{}
		for _, e := range plan {
			_, list := getJSON(t, base+"/v1/events?page_size=1000&patient_id="+url.QueryEscape(e.Patient.ID))
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
		if x := demo.CancelledExam(patients, 0); !seen["ORDER_CANCELLED "+x.Accession] {
			missing = append(missing, "ORDER_CANCELLED "+x.Accession)
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s still missing: %s\nlog:\n%s", strings.Join(missing, ", "), stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if log := stderr.String(); strings.Contains(log, "SYNTHETIC") {
		t.Errorf("a patient name is in the log:\n%s", log)
	}
}
