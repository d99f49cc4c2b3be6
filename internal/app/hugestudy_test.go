package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
	"radbridge/dicom/scu"
	"radbridge/ingest"
	"radbridge/internal/testkit"
	"radbridge/mapper/rules"
)

// hugeStudyInstances is the size of the huge study (HUGE_STUDY_INSTANCES
// overrides it, e.g. 20000 for a quicker run).
func hugeStudyInstances(t *testing.T) int {
	n := 100000
	if v := os.Getenv("HUGE_STUDY_INSTANCES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20000 {
			t.Fatalf("HUGE_STUDY_INSTANCES=%q: want a number, at least 20000", v)
		}
	}
	return n
}

// TestHugeStudy: an archive announces a 100,000-instance study in JSON
// notifications of 20,000 instances, the last one complete (an IAN too
// large for one record). Every event stays small (the ImagingStudy lists
// series and counts, not 100,000 instances). The quiet period (1 s) runs
// from the last instance recorded, so the study is never complete in the
// middle of a notification, however long recording it takes (it may be
// between two, when the archive pauses longer than the quiet period); the
// last ImagingStudy holds every instance. Another patient's order is
// announced while the study is being recorded, and a restart afterwards is
// ready.
func TestHugeStudy(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	total := hugeStudyInstances(t)
	const per = 20000
	dir := filepath.Join(t.TempDir(), "data")
	flags := []string{"--mllp-addr", "127.0.0.1:0", "--study-quiet-period", "1s", "--hl7-patient-authority", "NORTHWING"}
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), flags...)
	base := "http://" + d.HTTPAddr()
	const study = "1.2.826.0.1.3680043.10.1447.77"
	var bodies []string
	for start := 0; start < total; start += per {
		var insts []any
		for i := start; i < start+per; i++ {
			insts = append(insts, notifyInstance(study, 1+i/25000, i%25000+1))
		}
		n := map[string]any{"study": notifyStudy("MRN-HUGE", "ACC-HUGE"), "instances": insts}
		if start+per >= total {
			n["complete"] = true
		}
		bodies = append(bodies, mustJSON(t, n))
	}
	started := time.Now()
	for i, b := range bodies {
		if code, body := httpDo(t, "POST", base+"/v1/dicom/notifications", "", b); code != 200 || !strings.Contains(body, fmt.Sprintf(`"stored":%d`, per)) {
			t.Fatalf("notification %d: %d %s", i+1, code, body)
		}
		if i == 0 {
			// Everyone else's events keep flowing.
			order := `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20261201100100||ORM^O01|HUGE-2|P|2.3
PID|1||MRN-OTHER^^^NORTHWING^MR||OTHER^PATIENT
ORC|NW|PH2|FH2||SC
OBR|1|PH2|FH2|71250^CT CHEST^C4||||||||||||||ACC-OTHER||||||CT`
			if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "order", order)); ack.Segment("MSA").Field(1) != "AA" {
				t.Fatalf("order: ACK %q", ack.Bytes())
			}
		}
	}
	t.Logf("%d instances recorded in %v", total, time.Since(started).Round(time.Millisecond))
	var last map[string]any
	if !testkit.Poll(60*time.Second, func() bool {
		_, list := testkit.GetJSON(t, base+"/v1/events?resource_type=ImagingStudy&page_size=1000")
		evs, _ := list["events"].([]any)
		for _, e := range evs {
			ev := e.(map[string]any)
			if ev["type"] == "IMAGING_STUDY_PROGRESS" {
				continue
			}
			res, _ := ev["resource"].(map[string]any)
			if n, _ := res["numberOfInstances"].(float64); int(n)%per != 0 {
				t.Fatalf("%v with %v instances: complete in the middle of a notification", ev["type"], n)
			}
			last = res
		}
		n, _ := last["numberOfInstances"].(float64)
		return int(n) == total
	}) {
		t.Fatalf("the study never held every instance: last %v", last)
	}
	ext, _ := json.Marshal(last["extension"])
	if !strings.Contains(string(ext), rules.InstancesOmittedExtension) {
		t.Errorf("no %s extension: %s", rules.InstancesOmittedExtension, ext)
	}
	_, list := testkit.GetJSON(t, base+"/v1/events?page_size=1000")
	evs, _ := list["events"].([]any)
	sawOrder := false
	for _, e := range evs {
		b, _ := json.Marshal(e)
		if len(b) > 256<<10 {
			t.Errorf("a %v event of %d bytes", e.(map[string]any)["type"], len(b))
		}
		sawOrder = sawOrder || e.(map[string]any)["accession_number"] == "ACC-OTHER"
	}
	if !sawOrder {
		t.Error("the other patient's order was not announced")
	}
	if code, img := testkit.GetJSON(t, base+"/v1/patients/MRN-HUGE/imaging"); code != 200 || !strings.Contains(fmt.Sprint(img), "ACC-HUGE") {
		t.Errorf("read model: %d %v", code, img)
	}
	stop()
	restarted := time.Now()
	d, _ = runDaemon(t, dir, slog.New(slog.DiscardHandler), flags...)
	t.Logf("ready %v after the restart", time.Since(restarted).Round(time.Millisecond))
	if code, _ := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/patients/MRN-HUGE/imaging"); code != 200 {
		t.Errorf("read model after the restart: %d", code)
	}
}

// TestHugeIANOverDIMSE: an archive sends the Instance Availability
// Notification of a 100,000-instance study (about 14 MB) with N-CREATE.
// It is answered success (recorded in parts of 10,000), and the study,
// known only from the IAN, is available with every instance counted in an
// ImagingStudy that lists none of them.
func TestHugeIANOverDIMSE(t *testing.T) {
	total := hugeStudyInstances(t)
	d, _ := runDaemon(t, filepath.Join(t.TempDir(), "data"), slog.New(slog.DiscardHandler), "--dicom-addr", "127.0.0.1:0")
	base := "http://" + d.HTTPAddr()
	const study = "1.2.826.0.1.3680043.10.1447.78"
	ian := scu.IAN{StudyInstanceUID: study}
	for i := range total {
		s := i / 25000
		if i%25000 == 0 {
			ian.Series = append(ian.Series, scu.IANSeries{SeriesInstanceUID: fmt.Sprintf("%s.%d", study, s+1)})
		}
		ian.Series[s].Instances = append(ian.Series[s].Instances, scu.IANInstance{SOPClassUID: "1.2.840.10008.5.1.4.1.1.4", SOPInstanceUID: fmt.Sprintf("%s.%d.%d", study, s+1, i%25000+1)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := scu.Dial(ctx, d.DICOMAddr(), scu.Config{CallingAE: "PACS", Contexts: []scu.Context{{AbstractSyntax: scu.IANSOPClass, TransferSyntaxes: []string{dataset.ImplicitVRLittleEndian}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st, err := c.NCreateIAN(ctx, ian); err != nil || st != dimse.StatusSuccess {
		t.Fatalf("N-CREATE of a %d-instance IAN: status %v, %v", total, st, err)
	}
	var available []any
	testkit.Eventually(t, 60*time.Second, "the study available", func() bool {
		_, list := testkit.GetJSON(t, base+"/v1/events?type=IMAGING_STUDY_AVAILABLE")
		available, _ = list["events"].([]any)
		return len(available) > 0
	})
	evs := available
	res, _ := evs[0].(map[string]any)["resource"].(map[string]any)
	if n, _ := res["numberOfInstances"].(float64); int(n) != total {
		t.Errorf("AVAILABLE with %v instances, want %d", res["numberOfInstances"], total)
	}
	// Complete because of the IAN (every part of it), nothing received.
	if c, _ := evs[0].(map[string]any)["completion"].(map[string]any); c["reason"] != "ian" || c["instances_expected"] != float64(total) || c["instances_received"] != nil {
		t.Errorf("AVAILABLE completion %v, want ian with %d expected and none received", c, total)
	}
	if b, _ := json.Marshal(evs[0]); len(b) > 256<<10 {
		t.Errorf("AVAILABLE event of %d bytes", len(b))
	}
	if s := scrape(t, base+"/metrics", ""); s.value("radbridge_ingest_observations_total", "kind", "dicom.ian", "result", "recorded") != float64((total+ingest.MaxIANInstances-1)/ingest.MaxIANInstances) {
		t.Errorf("IAN records: %v, want one per %d instances", s.value("radbridge_ingest_observations_total", "kind", "dicom.ian", "result", "recorded"), ingest.MaxIANInstances)
	}
}
