package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// notifyInstance is one instance in DICOM JSON (PS3.18 F.2).
func notifyInstance(study string, series, inst int) map[string]any {
	ui := func(v string) map[string]any { return map[string]any{"vr": "UI", "Value": []string{v}} }
	return map[string]any{
		"00080016": ui("1.2.840.10008.5.1.4.1.1.2"),
		"00080018": ui(fmt.Sprintf("%s.%d.%d", study, series, inst)),
		"0020000D": ui(study),
		"0020000E": ui(fmt.Sprintf("%s.%d", study, series)),
		"00080060": map[string]any{"vr": "CS", "Value": []string{"CT"}},
		"00200011": map[string]any{"vr": "IS", "Value": []int{series}},
		"00200013": map[string]any{"vr": "IS", "Value": []int{inst}},
	}
}

// notifyStudy is the study-level part: patient, accession, description.
func notifyStudy(patient, accession string) map[string]any {
	return map[string]any{
		"00100020": map[string]any{"vr": "LO", "Value": []string{patient}},
		"00100010": map[string]any{"vr": "PN", "Value": []map[string]string{{"Alphabetic": "Notify^Nora"}}},
		"00080050": map[string]any{"vr": "SH", "Value": []string{accession}},
		"00081030": map[string]any{"vr": "LO", "Value": []string{"CT CHEST"}},
		"00180015": map[string]any{"vr": "CS", "Value": []string{"CHEST"}},
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestJSONNotifications: an archive without DICOM forwarding POSTs DICOM
// JSON to /v1/dicom/notifications. A complete study is available at once;
// a plain instance list gives progress, then available after the quiet
// period; a malformed notification is refused with 400 and records nothing.
func TestJSONNotifications(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s")
	url := "http://" + d.HTTPAddr() + "/v1/dicom/notifications"
	client, _ := grpcClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"MRN-N1", "MRN-N2", "MRN-BAD"}, ResourceType: []string{"ImagingStudy"}})
	if err != nil {
		t.Fatal(err)
	}
	next := func() *rbv1.Event { t.Helper(); return nextEvent(t, sub) }
	counts := studyCounts

	// Malformed: the second instance's SOP Instance UID has a letter.
	const badStudy = "1.2.826.0.1.3680043.10.1447.90"
	bad := []map[string]any{notifyInstance(badStudy, 1, 1), notifyInstance(badStudy, 1, 2)}
	for k, v := range notifyStudy("MRN-BAD", "ACC-BAD") {
		bad[0][k] = v
	}
	bad[1]["00080018"] = map[string]any{"vr": "UI", "Value": []string{badStudy + ".1.x"}}
	code, body := httpDo(t, "POST", url, "", mustJSON(t, bad))
	if code != 400 || !strings.Contains(body, `instance 1: (0008,0018) SOPInstanceUID`) || !strings.Contains(body, `character 'x'`) {
		t.Errorf("malformed notification: %d %s", code, body)
	}
	if code, body := httpDo(t, "POST", url, "", `{"instances": [`); code != 400 || !strings.Contains(body, "JSON") {
		t.Errorf("truncated JSON: %d %s", code, body)
	}

	// A complete study: AVAILABLE with 2 series, 3 instances.
	const study1 = "1.2.826.0.1.3680043.10.1447.91"
	complete := map[string]any{
		"study":               notifyStudy("MRN-N1", "ACC-N1"),
		"instances":           []any{notifyInstance(study1, 1, 1), notifyInstance(study1, 1, 2), notifyInstance(study1, 2, 1)},
		"number_of_instances": 3,
		"complete":            true,
	}
	code, body = httpDo(t, "POST", url, "", mustJSON(t, complete))
	if code != 200 || body != `{"stored":3,"study_instance_uids":["`+study1+`"]}`+"\n" {
		t.Fatalf("complete notification: %d %s", code, body)
	}
	var avail *rbv1.Event
	for avail == nil {
		switch ev := next(); ev.Type {
		case rbv1.EventType_IMAGING_STUDY_PROGRESS:
		case rbv1.EventType_IMAGING_STUDY_AVAILABLE:
			avail = ev
		default:
			t.Fatalf("unexpected %v before available", ev.Type)
		}
	}
	if s, i := counts(avail); s != 2 || i != 3 {
		t.Errorf("AVAILABLE counts series %v instances %v; want 2 and 3", s, i)
	}
	if avail.StudyInstanceUid != study1 || avail.AccessionNumber != "ACC-N1" || avail.PatientId != "MRN-N1" {
		t.Errorf("AVAILABLE event %v", avail)
	}
	if avail.Source.GetCallingAeTitle() != "JSON-NOTIFY" {
		t.Errorf("source %v", avail.Source)
	}
	// The same notification again records nothing new.
	if code, _ := httpDo(t, "POST", url, "", mustJSON(t, complete)); code != 200 {
		t.Errorf("resend: %d", code)
	}

	// Without complete: progress, then AVAILABLE after the quiet period.
	const study2 = "1.2.826.0.1.3680043.10.1447.92"
	list := []map[string]any{notifyInstance(study2, 1, 1), notifyInstance(study2, 1, 2)}
	for _, inst := range list {
		for k, v := range notifyStudy("MRN-N2", "ACC-N2") {
			inst[k] = v
		}
	}
	code, body = httpDo(t, "POST", url, "", mustJSON(t, list))
	if code != 200 || !strings.Contains(body, `"stored":2`) {
		t.Fatalf("instance list: %d %s", code, body)
	}
	posted := time.Now()
	progress := 0
	avail = nil
	for avail == nil {
		switch ev := next(); ev.Type {
		case rbv1.EventType_IMAGING_STUDY_PROGRESS:
			if ev.StudyInstanceUid == study2 {
				progress++
			}
		case rbv1.EventType_IMAGING_STUDY_AVAILABLE:
			avail = ev
		default:
			t.Fatalf("unexpected %v %s", ev.Type, ev.StudyInstanceUid)
		}
	}
	if progress == 0 {
		t.Error("no IMAGING_STUDY_PROGRESS for the instance list")
	}
	if avail.StudyInstanceUid != study2 {
		t.Fatalf("AVAILABLE for %s, want %s", avail.StudyInstanceUid, study2)
	}
	if waited := time.Since(posted); waited < 900*time.Millisecond {
		t.Errorf("AVAILABLE %v after the post, before the 1s quiet period", waited)
	}
	if s, i := counts(avail); s != 1 || i != 2 {
		t.Errorf("AVAILABLE counts series %v instances %v; want 1 and 2", s, i)
	}

	// Nothing of the malformed notification was recorded.
	_, evs := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events?patient_id=MRN-BAD")
	if got, _ := evs["events"].([]any); len(got) != 0 {
		t.Errorf("events for the malformed notification: %v", got)
	}
	_, all := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events?type=IMAGING_STUDY_AVAILABLE&type=IMAGING_STUDY_UPDATED")
	if got, _ := all["events"].([]any); len(got) != 2 {
		t.Errorf("%d AVAILABLE/UPDATED events, want 2 (a resend changes nothing)", len(got))
	}
}

// TestOrthancLuaNotifies: a real Orthanc runs docs/orthanc-notify.lua and
// has no DICOM route to radbridge. A modality (storescu) stores a study into
// Orthanc; once it is stable, the script POSTs it to
// /v1/dicom/notifications and radbridge emits IMAGING_STUDY_AVAILABLE with
// the right counts, long before its own quiet period would end.
func TestOrthancLuaNotifies(t *testing.T) {
	const series, perSeries = 2, 2
	const token = "orthanc-notify-token"
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(token+" orthanc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "10m", "--auth", "tokens", "--auth-tokens-file", tokens)
	lua, err := filepath.Abs(filepath.Join("..", "..", "docs", "orthanc-notify.lua"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("RADBRIDGE_URL", "http://"+d.HTTPAddr())
	t.Setenv("RADBRIDGE_TOKEN", token)
	o := startOrthanc(t, d.DICOMAddr(), map[string]any{"LuaScripts": []string{lua}, "DicomModalities": map[string]any{}})

	ctx, cancel := context.WithTimeout(bearerCtx(context.Background(), token), 60*time.Second)
	defer cancel()
	sub := subscribeStudies(ctx, t, d)

	src := t.TempDir()
	makeStudy(t, src, orthancStudyUID, series, perSeries, 1)
	if out, err := dcmtk(t, "storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "+sd", "+r", "127.0.0.1", strconv.Itoa(o.dicomPort), src); err != nil {
		t.Fatalf("storescu into Orthanc: %v\n%s", err, out)
	}
	stored := time.Now()
	avail, err := awaitAvailable(sub)
	if err != nil {
		t.Fatalf("waiting for IMAGING_STUDY_AVAILABLE: %v\nOrthanc log:\n%s", err, o.log)
	}
	t.Logf("IMAGING_STUDY_AVAILABLE %v after storescu (StableAge 1s)", time.Since(stored).Round(time.Millisecond))
	res := avail.Resource.AsMap()
	if avail.StudyInstanceUid != orthancStudyUID || avail.AccessionNumber != "ACC1001" || res["status"] != "available" {
		t.Errorf("AVAILABLE event %v", avail)
	}
	if res["numberOfSeries"] != float64(series) || res["numberOfInstances"] != float64(series*perSeries) {
		t.Errorf("AVAILABLE numberOfSeries %v numberOfInstances %v; want %d and %d", res["numberOfSeries"], res["numberOfInstances"], series, series*perSeries)
	}
	if avail.Source.GetCallingAeTitle() != "JSON-NOTIFY" {
		t.Errorf("AVAILABLE source %v; want calling JSON-NOTIFY", avail.Source)
	}
}
