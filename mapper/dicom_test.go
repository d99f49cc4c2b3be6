package mapper_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/internal/testkit"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel/readmodeltest"
)

// -update rewrites golden files. Another test file of the package may
// define the flag too (as a package variable, which is initialised before
// this init runs), so it is defined here only if missing and read by name.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files in testdata")
	}
}

func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// golden compares got with the golden file at path (rewritten first under
// -update); what names it in a difference.
func golden(t *testing.T, path string, got []byte, what string) {
	t.Helper()
	if updating() {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(got), string(want)); diff != "" {
		t.Errorf("%s (-got +want):\n%s", what, diff)
	}
}

const (
	dicomQuiet      = 200 * time.Millisecond
	ctImageClass    = "1.2.840.10008.5.1.4.1.1.2"
	srDocumentClass = "1.2.840.10008.5.1.4.1.1.88.22"
)

// dicomHarness drives a real mapper over in-memory logs, as the daemon does.
type dicomHarness struct {
	t   *testing.T
	in  *ingest.Memory
	evs *eventlog.Memory
	rm  *readmodeltest.Memory
	m   *mapper.Mapper
	// stop ends the running mapper.
	stop func()
}

func newDICOMHarness(t *testing.T) *dicomHarness {
	t.Helper()
	h := &dicomHarness{t: t, in: ingest.NewMemory(), evs: eventlog.NewMemory(), rm: &readmodeltest.Memory{}}
	h.start()
	t.Cleanup(func() { h.stop() })
	return h
}

// start runs a new mapper on the harness's logs.
func (h *dicomHarness) start() {
	h.m = mapper.New(mapper.Config{
		Ingest: h.in, Events: h.evs, ReadModel: h.rm,
		Rules: rules.New(rules.Options{QuietPeriod: dicomQuiet, ProgressInterval: time.Second}),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func(m *mapper.Mapper) { done <- m.Run(ctx) }(h.m)
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("mapper Run: %v", err)
			}
		})
	}
}

// record appends an observation the way internal/app's DICOM handler does:
// the key is the UID and a hash of the content.
func (h *dicomHarness) record(kind, prefix, uid string, v any) uint64 {
	h.t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	seq, _, err := h.in.Append(context.Background(), ingest.Observation{
		Kind: kind, Key: prefix + uid + ":" + hex.EncodeToString(sum[:8]), Time: time.Now().UTC(),
		Source: ingest.Source{Protocol: "dicom", CallingAETitle: "MODALITY", CalledAETitle: "RADBRIDGE"},
		Body:   body,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return seq
}

func (h *dicomHarness) store(in ingest.Instance) uint64 {
	return h.record(ingest.KindDICOMInstance, "dicom:", in.SOPInstanceUID, in)
}

func (h *dicomHarness) ian(n ingest.IAN) uint64 {
	return h.record(ingest.KindDICOMIAN, "ian:", n.SOPInstanceUID, n)
}

func (h *dicomHarness) mpps(u ingest.MPPSUpdate) uint64 {
	return h.record(ingest.KindDICOMMPPS, "mpps:", u.SOPInstanceUID, u)
}

// await returns the types of the events the mapper derived from seq.
func (h *dicomHarness) await(seq uint64) []rbv1.EventType {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := h.m.Await(ctx, seq)
	if err != nil {
		h.t.Fatalf("await ingest %d: %v", seq, err)
	}
	var out []rbv1.EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// events returns every event in the log.
func (h *dicomHarness) events() []*rbv1.Event {
	h.t.Helper()
	evs, err := h.evs.Read(context.Background(), 1, eventlog.Filter{}, 1000)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

// waitEvents waits until the log holds at least n events.
func (h *dicomHarness) waitEvents(n int) {
	h.t.Helper()
	if !testkit.Poll(5*time.Second, func() bool { return len(h.events()) >= n }) {
		h.t.Fatalf("event log holds %d events, want %d: %v", len(h.events()), n, studySummaries(h.events()))
	}
}

// settleQuiet waits until the mapper has applied everything in the ingest log
// and no quiet-period timer is pending (at most 20 s: a loaded machine may be
// slow to fire them), and at least three quiet periods, so that an event that
// should not exist would be in the log.
func (h *dicomHarness) settleQuiet() {
	h.t.Helper()
	time.Sleep(3 * dicomQuiet) // room for an event that should not exist: no state to wait for
	testkit.Poll(20*time.Second, func() bool {
		last, err := h.in.Last(context.Background())
		if err != nil {
			h.t.Fatal(err)
		}
		return h.m.Applied() >= last && h.m.PendingTimers() == 0
	})
}

// studySummary is what a subscriber checks of an event.
type studySummary struct {
	Type       rbv1.EventType
	Severity   rbv1.Severity
	Message    string
	Status     string
	Series     float64
	Instances  float64
	Modalities string
}

func studySummaries(evs []*rbv1.Event) []studySummary {
	var out []studySummary
	for _, e := range evs {
		r := e.Resource.AsMap()
		s := studySummary{Type: e.Type, Severity: e.Severity, Message: e.Message}
		s.Status, _ = r["status"].(string)
		s.Series, _ = r["numberOfSeries"].(float64)
		s.Instances, _ = r["numberOfInstances"].(float64)
		var mods []string
		if ms, ok := r["modality"].([]any); ok {
			for _, m := range ms {
				code, _ := m.(map[string]any)["code"].(string)
				mods = append(mods, code)
			}
		}
		s.Modalities = strings.Join(mods, ",")
		out = append(out, s)
	}
	return out
}

const (
	studyUID = "1.2.826.0.1.3680043.8.498.1"
	ctSeries = "1.2.826.0.1.3680043.8.498.1.1"
	srSeries = "1.2.826.0.1.3680043.8.498.1.2"
)

// ctInstance returns CT instance n of series 1 (n >= 1) of the test study.
func ctInstance(n int) ingest.Instance {
	return ingest.Instance{
		SOPClassUID: ctImageClass, SOPInstanceUID: fmt.Sprintf("%s.%d", ctSeries, n),
		StudyInstanceUID: studyUID, SeriesInstanceUID: ctSeries,
		TransferSyntaxUID: "1.2.840.10008.1.2.1",
		PatientID:         "MRN123", IssuerOfPatientID: "HOSP", PatientName: "DOE^JANE",
		AccessionNumber: "ACC42", Modality: "CT", BodyPartExamined: "CHEST",
		StudyDescription: "CT CHEST W/O CONTRAST", SeriesDescription: "AXIAL 1.25",
		StudyDate: "20240305", StudyTime: "143012.5", ReferringPhysicianName: "House^Gregory^^Dr",
		SeriesNumber: 2, InstanceNumber: n, Size: 1000,
	}
}

// srInstance returns the structured report of the test study (another series).
func srInstance() ingest.Instance {
	in := ctInstance(1)
	in.SOPClassUID, in.SOPInstanceUID, in.SeriesInstanceUID = srDocumentClass, srSeries+".1", srSeries
	in.Modality, in.SeriesDescription, in.SeriesNumber, in.BodyPartExamined = "SR", "DOSE REPORT", 999, ""
	return in
}

func ianFor(sops ...ingest.Instance) ingest.IAN {
	n := ingest.IAN{SOPInstanceUID: "1.2.826.0.1.3680043.8.498.9." + fmt.Sprint(len(sops)), StudyInstanceUID: studyUID}
	bySeries := map[string][]ingest.IANInstance{}
	var order []string
	for _, s := range sops {
		if _, ok := bySeries[s.SeriesInstanceUID]; !ok {
			order = append(order, s.SeriesInstanceUID)
		}
		bySeries[s.SeriesInstanceUID] = append(bySeries[s.SeriesInstanceUID], ingest.IANInstance{
			SOPClassUID: s.SOPClassUID, SOPInstanceUID: s.SOPInstanceUID, InstanceAvailability: "ONLINE", RetrieveAETitle: "PACS",
		})
	}
	for _, se := range order {
		n.Series = append(n.Series, ingest.IANSeries{SeriesInstanceUID: se, Instances: bySeries[se]})
	}
	return n
}

const dicomMPPSUID = "1.2.826.0.1.3680043.8.498.7"

func mppsCreate() ingest.MPPSUpdate {
	return ingest.MPPSUpdate{SOPInstanceUID: dicomMPPSUID, Create: true, Status: ingest.MPPSInProgress,
		StudyInstanceUIDs: []string{studyUID}, AccessionNumbers: []string{"ACC42"}, PatientID: "MRN123", Modality: "CT"}
}

func mppsSet(status string, sops ...ingest.Instance) ingest.MPPSUpdate {
	u := ingest.MPPSUpdate{SOPInstanceUID: dicomMPPSUID, Status: status}
	if len(sops) > 0 {
		s := ingest.MPPSSeries{SeriesInstanceUID: ctSeries}
		for _, in := range sops {
			s.SOPInstanceUIDs = append(s.SOPInstanceUIDs, in.SOPInstanceUID)
		}
		u.Series = []ingest.MPPSSeries{s}
	}
	return u
}

var (
	studyProgress   = rbv1.EventType_IMAGING_STUDY_PROGRESS
	studyAvailable  = rbv1.EventType_IMAGING_STUDY_AVAILABLE
	studyUpdated    = rbv1.EventType_IMAGING_STUDY_UPDATED
	studySevInfo    = rbv1.Severity_SEVERITY_INFO
	studySevSuccess = rbv1.Severity_SEVERITY_SUCCESS
	studySevWarning = rbv1.Severity_SEVERITY_WARNING
)

// TestDICOMStudyEvents feeds C-STORE, IAN and MPPS observations to a real
// mapper and checks the events a subscriber sees.
func TestDICOMStudyEvents(t *testing.T) {
	tests := []struct {
		name string
		// run appends observations; it may check what one observation
		// derived at once (h.await) and wait for events (h.waitEvents).
		run  func(t *testing.T, h *dicomHarness)
		want []studySummary
	}{
		{
			name: "available once after the quiet period",
			run: func(t *testing.T, h *dicomHarness) {
				for i := 1; i <= 5; i++ {
					h.store(ctInstance(i))
				}
				h.store(srInstance())
				h.waitEvents(2)
			},
			want: []studySummary{
				{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
				{studyAvailable, studySevSuccess, "New imaging study available: CT CHEST W/O CONTRAST", "available", 2, 6, "CT,SR"},
			},
		},
		{
			name: "late instance, resend, re-encoded resend and correction",
			run: func(t *testing.T, h *dicomHarness) {
				for i := 1; i <= 3; i++ {
					h.store(ctInstance(i))
				}
				h.waitEvents(2)
				h.store(ctInstance(4))
				h.waitEvents(3)
				h.in.RecordDuplicates = true // a resend beyond the log's duplicate window
				if got := h.await(h.store(ctInstance(2))); len(got) != 0 {
					t.Errorf("identical resend derived %v", got)
				}
				h.in.RecordDuplicates = false
				again := ctInstance(3)
				again.TransferSyntaxUID, again.Size = "1.2.840.10008.1.2.4.50", 400
				if got := h.await(h.store(again)); len(got) != 0 {
					t.Errorf("re-encoded resend derived %v", got)
				}
				h.settleQuiet()
				fixed := ctInstance(2)
				fixed.SeriesDescription = "AXIAL 1.25 MM"
				h.store(fixed)
				h.waitEvents(4)
			},
			want: []studySummary{
				{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
				{studyAvailable, studySevSuccess, "New imaging study available: CT CHEST W/O CONTRAST", "available", 1, 3, "CT"},
				{studyUpdated, studySevInfo, "Imaging study updated: CT CHEST W/O CONTRAST (+1 instance)", "available", 1, 4, "CT"},
				{studyUpdated, studySevInfo, "Imaging study updated: CT CHEST W/O CONTRAST (1 instance corrected)", "available", 1, 4, "CT"},
			},
		},
		{
			name: "IAN makes the study available at once",
			run: func(t *testing.T, h *dicomHarness) {
				h.store(ctInstance(1))
				h.store(ctInstance(2))
				if got, want := h.await(h.ian(ianFor(ctInstance(1), ctInstance(2)))), []rbv1.EventType{studyAvailable}; !cmp.Equal(got, want) {
					t.Errorf("IAN derived %v, want %v", got, want)
				}
			},
			want: []studySummary{
				{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
				{studyAvailable, studySevSuccess, "New imaging study available: CT CHEST W/O CONTRAST", "available", 1, 2, "CT"},
			},
		},
		{
			name: "IAN naming instances not received",
			run: func(t *testing.T, h *dicomHarness) {
				h.store(ctInstance(1))
				h.store(ctInstance(2))
				h.await(h.ian(ianFor(ctInstance(1), ctInstance(2), ctInstance(3))))
			},
			want: []studySummary{
				{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
				{studyAvailable, studySevWarning, "New imaging study available: CT CHEST W/O CONTRAST (1 of 3 instances not received)", "available", 1, 3, "CT"},
			},
		},
		{
			name: "IAN of a study never stored",
			run: func(t *testing.T, h *dicomHarness) {
				h.await(h.ian(ianFor(ctInstance(1), ctInstance(2), srInstance())))
				h.store(ctInstance(1)) // details arrive later: one UPDATED after the quiet period
				h.waitEvents(2)
			},
			want: []studySummary{
				{studyAvailable, studySevSuccess, "New imaging study available: imaging study", "available", 2, 3, ""},
				{studyUpdated, studySevInfo, "Imaging study updated: CT CHEST W/O CONTRAST (1 instance corrected)", "available", 2, 3, "CT"},
			},
		},
		{
			name: "MPPS COMPLETED with every instance in",
			run: func(t *testing.T, h *dicomHarness) {
				h.mpps(mppsCreate())
				h.store(ctInstance(1))
				h.store(ctInstance(2))
				if got, want := h.await(h.mpps(mppsSet(ingest.MPPSCompleted, ctInstance(1), ctInstance(2)))), []rbv1.EventType{studyAvailable}; !cmp.Equal(got, want) {
					t.Errorf("MPPS COMPLETED derived %v, want %v", got, want)
				}
			},
			want: []studySummary{
				{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
				{studyAvailable, studySevSuccess, "New imaging study available: CT CHEST W/O CONTRAST", "available", 1, 2, "CT"},
			},
		},
		{
			name: "MPPS COMPLETED before the last instance",
			run: func(t *testing.T, h *dicomHarness) {
				h.mpps(mppsCreate())
				h.store(ctInstance(1))
				h.await(h.mpps(mppsSet(ingest.MPPSCompleted, ctInstance(1), ctInstance(2), ctInstance(3))))
				h.store(ctInstance(2))
				if got, want := h.await(h.store(ctInstance(3))), []rbv1.EventType{studyAvailable}; !cmp.Equal(got, want) {
					t.Errorf("last referenced instance derived %v, want %v", got, want)
				}
			},
			want: []studySummary{
				{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
				{studyAvailable, studySevSuccess, "New imaging study available: CT CHEST W/O CONTRAST", "available", 1, 3, "CT"},
			},
		},
		{
			name: "MPPS DISCONTINUED is a hint",
			run: func(t *testing.T, h *dicomHarness) {
				h.mpps(mppsCreate())
				h.store(ctInstance(1))
				if got := h.await(h.mpps(mppsSet(ingest.MPPSDiscontinued))); len(got) != 0 {
					t.Errorf("MPPS DISCONTINUED derived %v", got)
				}
				h.waitEvents(2)
			},
			want: []studySummary{
				{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
				{studyAvailable, studySevSuccess, "New imaging study available: CT CHEST W/O CONTRAST (procedure step discontinued)", "available", 1, 1, "CT"},
			},
		},
		{
			// An old ingest log may hold an N-SET the SCP now refuses
			// (0110): a COMPLETED after DISCONTINUED completes nothing.
			name: "MPPS COMPLETED after DISCONTINUED is ignored",
			run: func(t *testing.T, h *dicomHarness) {
				h.mpps(mppsCreate())
				h.store(ctInstance(1))
				h.mpps(mppsSet(ingest.MPPSDiscontinued))
				if got := h.await(h.mpps(mppsSet(ingest.MPPSCompleted, ctInstance(1)))); len(got) != 0 {
					t.Errorf("COMPLETED after DISCONTINUED derived %v", got)
				}
				h.waitEvents(2)
			},
			want: []studySummary{
				{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
				{studyAvailable, studySevSuccess, "New imaging study available: CT CHEST W/O CONTRAST (procedure step discontinued)", "available", 1, 1, "CT"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newDICOMHarness(t)
			tt.run(t, h)
			h.settleQuiet()
			evs := h.events()
			if diff := cmp.Diff(studySummaries(evs), tt.want); diff != "" {
				t.Errorf("events (-got +want):\n%s", diff)
			}
			for _, e := range evs {
				checkStudyEvent(t, e)
			}
		})
	}
}

// checkStudyEvent checks the fields every study event carries.
func checkStudyEvent(t *testing.T, e *rbv1.Event) {
	t.Helper()
	if e.StudyInstanceUid != studyUID || e.ResourceType != "ImagingStudy" || e.ResourceId != rules.StudyResourceID(studyUID) ||
		e.Priority != rbv1.Priority_PRIORITY_ROUTINE || e.Source.GetProtocol() == "" || e.Id == "" {
		t.Errorf("event %d: study %q resource %s/%s priority %v source %v id %q", e.Sequence,
			e.StudyInstanceUid, e.ResourceType, e.ResourceId, e.Priority, e.Source, e.Id)
	}
	r := e.Resource.AsMap()
	if r["resourceType"] != "ImagingStudy" || r["id"] != studyUID || r["status"] == nil || r["subject"] == nil {
		t.Errorf("event %d: resource is not an ImagingStudy with status and subject: %v", e.Sequence, r)
	}
	if e.PatientId != "" && (e.PatientId != "MRN123" || e.AccessionNumber != "ACC42") {
		t.Errorf("event %d: patient %q accession %q", e.Sequence, e.PatientId, e.AccessionNumber)
	}
}

// TestDICOMRestartMidStudy: the mapper stops during a study's quiet period;
// a new mapper on the same logs makes the study available exactly once,
// with every instance counted.
func TestDICOMRestartMidStudy(t *testing.T) {
	h := newDICOMHarness(t)
	h.store(ctInstance(1))
	h.store(ctInstance(2))
	last := h.store(ctInstance(3))
	h.await(last)
	h.stop()
	if evs := h.events(); len(evs) != 1 || evs[0].Type != studyProgress {
		t.Fatalf("before the restart: %v, want one progress", studySummaries(evs))
	}
	h.store(ctInstance(4)) // arrives while the mapper is down
	h.start()
	h.waitEvents(2)
	h.settleQuiet()
	want := []studySummary{
		{studyProgress, studySevInfo, "Receiving CT CHEST W/O CONTRAST: 1 instance", "registered", 1, 1, "CT"},
		{studyAvailable, studySevSuccess, "New imaging study available: CT CHEST W/O CONTRAST", "available", 1, 4, "CT"},
	}
	if diff := cmp.Diff(studySummaries(h.events()), want); diff != "" {
		t.Errorf("events (-got +want):\n%s", diff)
	}
	// And once more: a restart after the study is available derives
	// nothing new.
	h.stop()
	h.start()
	h.await(last)
	h.settleQuiet()
	if n := len(h.events()); n != 2 {
		t.Errorf("after a second restart the log holds %d events, want 2", n)
	}
}

// TestDICOMReadModel: the patient's read model holds the studies and counts
// them per body region.
func TestDICOMReadModel(t *testing.T) {
	h := newDICOMHarness(t)
	h.store(ctInstance(1))
	h.store(srInstance())
	head := ctInstance(1)
	head.StudyInstanceUID, head.SeriesInstanceUID, head.SOPInstanceUID = "1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.1"
	head.Modality, head.BodyPartExamined, head.StudyDescription = "MR", "HEAD", "MR BRAIN"
	h.store(head)
	chest := head
	chest.SeriesInstanceUID, chest.SOPInstanceUID, chest.BodyPartExamined = "1.2.3.2.2", "1.2.3.2.2.1", "CHEST"
	h.store(chest)
	h.waitEvents(4)
	h.settleQuiet()
	p := h.rm.Patient("MRN123")
	var studies []string
	for uid, s := range p.Studies {
		var r struct{ Status string }
		if err := json.Unmarshal(s, &r); err != nil {
			t.Fatal(err)
		}
		studies = append(studies, uid+" "+r.Status)
	}
	sort.Strings(studies)
	if diff := cmp.Diff(studies, []string{"1.2.3.2 available", studyUID + " available"}); diff != "" {
		t.Errorf("read model studies (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(p.BodyRegions, map[string]uint32{"CHEST": 2, "HEAD": 1}); diff != "" {
		t.Errorf("body regions (-got +want):\n%s", diff)
	}
	if p.LastSequence != 4 {
		t.Errorf("read model as of %d, want 4", p.LastSequence)
	}
}

var studyDateTimeRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?$`)

// TestImagingStudyGolden checks the ImagingStudy of an available study
// against testdata/dicom/imagingstudy.golden.json (go test -update
// rewrites it).
func TestImagingStudyGolden(t *testing.T) {
	h := newDICOMHarness(t)
	for _, i := range []int{3, 1, 2} {
		h.store(ctInstance(i))
	}
	h.store(srInstance())
	h.waitEvents(2)
	e := h.events()[1]
	if e.Type != studyAvailable {
		t.Fatalf("second event is %v, want AVAILABLE", e.Type)
	}
	r := e.Resource.AsMap()
	// started carries the daemon's time zone offset: check it apart.
	started, _ := r["started"].(string)
	if !strings.HasPrefix(started, "2024-03-05T14:30:12.5") || !studyDateTimeRE.MatchString(started) {
		t.Errorf("started = %q, want 2024-03-05T14:30:12.5 with an offset", started)
	}
	delete(r, "started")
	for _, k := range []string{"resourceType", "id", "status", "subject", "identifier", "series"} {
		if r[k] == nil {
			t.Errorf("ImagingStudy has no %s", k)
		}
	}
	checkStudyNoEmpty(t, "ImagingStudy", r)
	got, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden(t, filepath.Join("testdata", "dicom", "imagingstudy.golden.json"), got, "ImagingStudy")
}

// checkStudyNoEmpty fails on what FHIR forbids: empty strings, arrays, objects.
func checkStudyNoEmpty(t *testing.T, path string, v any) {
	t.Helper()
	switch v := v.(type) {
	case string:
		if v == "" {
			t.Errorf("%s is an empty string", path)
		}
	case []any:
		if len(v) == 0 {
			t.Errorf("%s is an empty array", path)
		}
		for i, e := range v {
			checkStudyNoEmpty(t, fmt.Sprintf("%s[%d]", path, i), e)
		}
	case map[string]any:
		if len(v) == 0 {
			t.Errorf("%s is an empty object", path)
		}
		for k, e := range v {
			checkStudyNoEmpty(t, path+"."+k, e)
		}
	case nil:
		t.Errorf("%s is null", path)
	}
}

func TestDICOMDateTime(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	tests := []struct {
		da, tm string
		loc    *time.Location
		want   string
	}{
		{"20240305", "143012.5", time.UTC, "2024-03-05T14:30:12.5Z"},
		{"20240305", "143012", berlin, "2024-03-05T14:30:12+01:00"},
		{"20240305", "1430", time.UTC, "2024-03-05T14:30:00Z"},
		{"20240305", "14", time.UTC, "2024-03-05T14:00:00Z"},
		{"20240305", "14:30:12", time.UTC, "2024-03-05T14:30:12Z"},
		{"2024.03.05", "", time.UTC, "2024-03-05"},
		{"20240305", "", time.UTC, "2024-03-05"},
		{"20240305", "25", time.UTC, "2024-03-05"},
		{"20240305", "1430x", time.UTC, "2024-03-05"},
		{"20240230", "1200", time.UTC, ""},
		{"", "1200", time.UTC, ""},
		{"2024", "", time.UTC, ""},
	}
	for _, tt := range tests {
		if got := rules.DICOMDateTime(tt.da, tt.tm, tt.loc); got != tt.want {
			t.Errorf("DICOMDateTime(%q, %q, %v) = %q, want %q", tt.da, tt.tm, tt.loc, got, tt.want)
		}
	}
}

// TestDICOMPatientCorrection: a correction that changes the Patient ID
// moves the study from one patient's read model to the other's.
func TestDICOMPatientCorrection(t *testing.T) {
	h := newDICOMHarness(t)
	h.store(ctInstance(1))
	h.waitEvents(2)
	fixed := ctInstance(1)
	fixed.PatientID = "MRN999"
	h.store(fixed)
	h.waitEvents(3)
	h.settleQuiet()
	evs := h.events()
	if len(evs) != 3 || evs[2].Type != studyUpdated || evs[2].PatientId != "MRN999" {
		t.Fatalf("events %v; want the third an UPDATED for MRN999", studySummaries(evs))
	}
	if old := h.rm.Patient("MRN123"); len(old.Studies) != 0 || len(old.BodyRegions) != 0 {
		t.Errorf("MRN123 still holds studies %v, regions %v", old.Studies, old.BodyRegions)
	}
	if p := h.rm.Patient("MRN999"); p.Studies[studyUID] == nil || p.BodyRegions["CHEST"] != 1 {
		t.Errorf("MRN999 holds studies %v, regions %v; want the study and CHEST 1", p.Studies, p.BodyRegions)
	}
}
