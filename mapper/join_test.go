package mapper_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/internal/testkit"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel/readmodeltest"
)

// runMapper runs m until the test ends, for at most limit, and returns
// the context it runs with.
func runMapper(t *testing.T, m *mapper.Mapper, limit time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx
}

// feeder returns add, which appends an observation of kind with body
// (encoded as JSON) to in, keyed k1, k2… and a second apart from now, and
// returns the events m derived from it.
func feeder(ctx context.Context, t *testing.T, in ingest.Log, m *mapper.Mapper) func(kind string, body any) []*rbv1.Event {
	now := time.Now()
	n := 0
	return func(kind string, body any) []*rbv1.Event {
		t.Helper()
		n++
		b, _ := json.Marshal(body)
		seq, _, err := in.Append(ctx, ingest.Observation{Kind: kind, Key: fmt.Sprint("k", n), Time: now.Add(time.Duration(n) * time.Second), Body: b})
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Await(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
}

func joinORM(pid, acc, ctl string) []byte {
	return []byte(strings.Join([]string{
		"MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMG|20260310083000+0000||ORM^O01|" + ctl + "|P|2.3",
		"PID|1||" + pid + "^^^HOSP^MR||TEST^PAT",
		"ORC|NW|P" + acc + "|F" + acc + "||SC||^^^20260310090000^^R||20260310082900+0000",
		"OBR|1|P" + acc + "|F" + acc + "|71250^CT CHEST^C4||||||||||||||" + acc + "||||||CT",
	}, "\r"))
}

func joinORU(pid, acc, ctl, status string) []byte {
	return []byte(strings.Join([]string{
		"MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMG|20260310113000+0000||ORU^R01|" + ctl + "|P|2.5.1",
		"PID|1||" + pid + "^^^HOSP^MR||TEST^PAT",
		"OBR|1|P" + acc + "|F" + acc + "|71250^CT CHEST^C4|||20260310090500+0000|||||||||||" + acc + "||||20260310113000+0000||CT|" + status,
		"OBX|1|TX|RPT^Report^L|1|Report " + status + " for " + acc + "||||||" + status,
	}, "\r"))
}

func joinStudy(pid, acc, uid string, n int) []ingest.Instance {
	var out []ingest.Instance
	for i := 1; i <= n; i++ {
		out = append(out, ingest.Instance{
			SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: fmt.Sprintf("%s.1.%d", uid, i),
			StudyInstanceUID: uid, SeriesInstanceUID: uid + ".1", PatientID: pid, AccessionNumber: acc,
			Modality: "CT", BodyPartExamined: "CHEST", StudyDescription: "CT CHEST", StudyDate: "20260310", StudyTime: "090000",
			SeriesNumber: 1, InstanceNumber: i,
		})
	}
	return out
}

// TestJoinInAnyArrivalOrder sends, in shuffled orders, orders (HL7), their
// images (DICOM), preliminary and final reports (HL7) for two patients and
// three accession numbers, plus a study with no order: whatever the order
// of arrival, every study ends up based on its order, every report based on
// the order and pointing at the study, orders completed, the lone study on
// its own, and the joins are visible as events.
func TestJoinInAnyArrivalOrder(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { joinScenario(t, seed) })
	}
}

func joinScenario(t *testing.T, seed int64) {
	type obs struct {
		kind, key string
		body      any
	}
	var items []obs
	hl7 := func(raw []byte, ctl string) obs {
		return obs{ingest.KindHL7, "hl7:RIS|HOSP|" + ctl, ingest.HL7Body{Raw: raw}}
	}
	cases := []struct{ pid, acc, uid string }{
		{"PA", "ACC-A1", "1.2.826.0.1.3680043.10.1447.501"},
		{"PA", "ACC-A2", "1.2.826.0.1.3680043.10.1447.502"},
		{"PB", "ACC-B1", "1.2.826.0.1.3680043.10.1447.503"},
	}
	for i, c := range cases {
		items = append(items,
			hl7(joinORM(c.pid, c.acc, fmt.Sprint("O", i)), fmt.Sprint("O", i)),
			hl7(joinORU(c.pid, c.acc, fmt.Sprint("P", i), "P"), fmt.Sprint("P", i)),
			hl7(joinORU(c.pid, c.acc, fmt.Sprint("F", i), "F"), fmt.Sprint("F", i)))
		for _, in := range joinStudy(c.pid, c.acc, c.uid, 3) {
			items = append(items, obs{ingest.KindDICOMInstance, "dicom:" + in.SOPInstanceUID, in})
		}
	}
	lone := "1.2.826.0.1.3680043.10.1447.599"
	for _, in := range joinStudy("PB", "", lone, 2) {
		items = append(items, obs{ingest.KindDICOMInstance, "dicom:" + in.SOPInstanceUID, in})
	}
	rand.New(rand.NewSource(seed)).Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	// The preliminary report of each accession precedes its final one.
	for i := range items {
		for j := i + 1; j < len(items); j++ {
			if items[i].kind == ingest.KindHL7 && items[j].kind == ingest.KindHL7 && strings.HasPrefix(items[i].key, "hl7:RIS|HOSP|F") &&
				strings.HasPrefix(items[j].key, "hl7:RIS|HOSP|P") && items[i].key[len(items[i].key)-1] == items[j].key[len(items[j].key)-1] {
				items[i], items[j] = items[j], items[i]
			}
		}
	}

	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	rm := &readmodeltest.Memory{}
	m := mapper.New(mapper.Config{Ingest: in, Events: evs, ReadModel: rm,
		Rules: rules.New(rules.Options{QuietPeriod: 100 * time.Millisecond})})
	ctx := runMapper(t, m, 30*time.Second)
	at := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	var last uint64
	for i, it := range items {
		body, _ := json.Marshal(it.body)
		seq, _, err := in.Append(ctx, ingest.Observation{Kind: it.kind, Key: it.key, Time: at.Add(time.Duration(i) * time.Second), Body: body})
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	if _, err := m.Await(ctx, last); err != nil {
		t.Fatal(err)
	}
	// Wait for the quiet periods: every study available.
	var got []*rbv1.Event
	if !testkit.Poll(10*time.Second, func() bool {
		got, _ = evs.Read(ctx, 1, eventlog.Filter{Types: []rbv1.EventType{rbv1.EventType_IMAGING_STUDY_AVAILABLE}}, 100)
		return len(got) == 4
	}) {
		t.Fatalf("%d studies available, want 4", len(got))
	}
	// The read models are written before the mapper reports a record
	// applied: wait until the last record (a timer's included) is.
	var l uint64
	if !testkit.Poll(10*time.Second, func() bool {
		var err error
		if l, err = in.Last(ctx); err != nil {
			t.Fatal(err)
		}
		return m.Applied() >= l && m.PendingTimers() == 0
	}) {
		t.Fatalf("mapper applied %d of %d records, %d timers pending", m.Applied(), l, m.PendingTimers())
	}

	rms := rm.Patients()
	decode := func(raw json.RawMessage) map[string]any {
		var r map[string]any
		json.Unmarshal(raw, &r)
		return r
	}
	refs := func(v any) []string {
		var out []string
		for _, x := range asList(v) {
			out = append(out, x.(map[string]any)["reference"].(string))
		}
		sort.Strings(out)
		return out
	}
	for _, c := range cases {
		p := rms[c.pid]
		study := decode(p.Studies[c.uid])
		srID, drID := rules.ServiceRequestID(c.pid, c.acc), rules.DiagnosticReportID(c.pid, c.acc)
		if got := refs(study["basedOn"]); len(got) != 1 || got[0] != "ServiceRequest/"+srID {
			t.Errorf("seed %d: study %s basedOn %v, want ServiceRequest/%s", seed, c.acc, got, c.acc)
		}
		order := decode(p.Orders[srID])
		if order["status"] != "completed" {
			t.Errorf("seed %d: order %s status %v, want completed", seed, c.acc, order["status"])
		}
		report := decode(p.Reports[drID])
		if report["status"] != "final" || fmt.Sprint(refs(report["basedOn"])) != "[ServiceRequest/"+srID+"]" ||
			fmt.Sprint(refs(report["imagingStudy"])) != "[ImagingStudy/"+c.uid+"]" {
			t.Errorf("seed %d: report %s: status %v basedOn %v imagingStudy %v", seed, c.acc, report["status"], report["basedOn"], report["imagingStudy"])
		}
	}
	if s := decode(rms["PB"].Studies[lone]); s["basedOn"] != nil || s["status"] != "available" {
		t.Errorf("seed %d: study without an order: %v", seed, s)
	}
	if len(rms["PA"].Studies) != 2 || len(rms["PB"].Studies) != 2 || len(rms["PA"].Orders) != 2 || len(rms["PB"].Reports) != 1 {
		t.Errorf("seed %d: read models PA %d studies %d orders, PB %d studies %d reports", seed,
			len(rms["PA"].Studies), len(rms["PA"].Orders), len(rms["PB"].Studies), len(rms["PB"].Reports))
	}
	all, _ := evs.Read(ctx, 1, eventlog.Filter{}, 1000)
	// Every event, joined resources included, is valid FHIR R4.
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		b, _ := json.Marshal(e.Resource.AsMap())
		if _, err := u.Unmarshal(b); err != nil {
			t.Errorf("seed %d: event %d (%v) carries invalid FHIR R4: %v\n%s", seed, e.Sequence, e.Type, err, b)
		}
		checkURIs(t, fmt.Sprint("event ", e.Sequence), e.Resource.AsMap())
	}
	// The newest event about each resource carries its joined version, so a
	// subscriber that applies events in place holds the same picture.
	newest := map[string]*rbv1.Event{}
	for _, e := range all {
		newest[e.ResourceType+"/"+e.ResourceId] = e
	}
	for _, c := range cases {
		srID, drID := rules.ServiceRequestID(c.pid, c.acc), rules.DiagnosticReportID(c.pid, c.acc)
		for key, raw := range map[string]json.RawMessage{
			"ImagingStudy/" + c.uid: rms[c.pid].Studies[c.uid], "ServiceRequest/" + srID: rms[c.pid].Orders[srID],
			"DiagnosticReport/" + drID: rms[c.pid].Reports[drID],
		} {
			e := newest[key]
			if e == nil {
				t.Errorf("seed %d: no event about %s", seed, key)
				continue
			}
			got, _ := json.Marshal(e.Resource.AsMap())
			var a, b any
			json.Unmarshal(got, &a)
			json.Unmarshal(raw, &b)
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Errorf("seed %d: newest event about %s differs from the snapshot:\n event %v\n state %v", seed, key, a, b)
			}
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// TestJoinDoesNotMergePatients: an order and a study with one accession but
// different patients are not linked; the events say so.
func TestJoinDoesNotMergePatients(t *testing.T) {
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	m := mapper.New(mapper.Config{Ingest: in, Events: evs, Rules: rules.New(rules.Options{QuietPeriod: time.Hour})})
	ctx := runMapper(t, m, 20*time.Second)
	body, _ := json.Marshal(ingest.HL7Body{Raw: joinORM("PA", "ACC-X", "O1")})
	in.Append(ctx, ingest.Observation{Kind: ingest.KindHL7, Key: "o", Time: time.Unix(1, 0), Body: body})
	inst := joinStudy("PB", "ACC-X", "1.2.3.4", 1)[0]
	body, _ = json.Marshal(inst)
	seq, _, _ := in.Append(ctx, ingest.Observation{Kind: ingest.KindDICOMInstance, Key: "d", Time: time.Unix(2, 0), Body: body})
	got, err := m.Await(ctx, seq)
	if err != nil || len(got) != 1 {
		t.Fatalf("events for the study: %v %v", got, err)
	}
	ev := got[0]
	if ev.Severity != rbv1.Severity_SEVERITY_WARNING || !strings.Contains(ev.Message, "another patient") || ev.Resource.AsMap()["basedOn"] != nil {
		t.Errorf("study of another patient with the order's accession: severity %v message %q basedOn %v", ev.Severity, ev.Message, ev.Resource.AsMap()["basedOn"])
	}
}

func TestPatientKey(t *testing.T) {
	for _, tc := range []struct{ id, issuer, mrn, want string }{
		{"123", "HOSP", "HOSP", "123"},
		{"123", "hosp", "HOSP", "123"},
		{"123", "", "HOSP", "123"},
		{"123", "OTHER", "HOSP", "123^OTHER"},
		{"123", "OTHER", "", "123"},
		{"", "OTHER", "HOSP", ""},
	} {
		if got := rules.PatientKey(tc.id, tc.issuer, tc.mrn); got != tc.want {
			t.Errorf("PatientKey(%q, %q, %q) = %q, want %q", tc.id, tc.issuer, tc.mrn, got, tc.want)
		}
	}
}

// TestOneKeyAcrossDICOMAndHL7: with the hospital's MRN issuer configured on
// both sides, an order (PID-3 with that authority, among others) and a
// study (PatientID with that issuer) meet under one patient; a study whose
// PatientID comes from another issuer stays apart.
func TestOneKeyAcrossDICOMAndHL7(t *testing.T) {
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	m := mapper.New(mapper.Config{Ingest: in, Events: evs, Rules: rules.New(rules.Options{
		QuietPeriod: time.Hour, HL7PatientAuthority: "HOSP", DICOMPatientIssuer: "HOSP"})})
	ctx := runMapper(t, m, 20*time.Second)
	orm := strings.Replace(string(joinORM("777", "ACC-K", "O1")), "PID|1||777^^^HOSP^MR", "PID|1||998^^^SSA^SS~777^^^HOSP^MR", 1)
	body, _ := json.Marshal(ingest.HL7Body{Raw: []byte(orm)})
	in.Append(ctx, ingest.Observation{Kind: ingest.KindHL7, Key: "o", Time: time.Unix(1, 0), Body: body})
	mine := joinStudy("777", "ACC-K", "1.2.3.5", 1)[0]
	mine.IssuerOfPatientID = "HOSP"
	other := joinStudy("777", "", "1.2.3.6", 1)[0]
	other.IssuerOfPatientID = "REFERRING-CLINIC"
	var seqs []uint64
	for i, inst := range []ingest.Instance{mine, other} {
		b, _ := json.Marshal(inst)
		seq, _, _ := in.Append(ctx, ingest.Observation{Kind: ingest.KindDICOMInstance, Key: fmt.Sprint("d", i), Time: time.Unix(int64(2+i), 0), Body: b})
		seqs = append(seqs, seq)
	}
	a, err := m.Await(ctx, seqs[0])
	if err != nil || len(a) != 1 || a[0].PatientId != "777" || a[0].Resource.AsMap()["basedOn"] == nil {
		t.Errorf("study with the MRN issuer: %v %v; want patient 777, based on the order", a, err)
	}
	b, err := m.Await(ctx, seqs[1])
	if err != nil || len(b) != 1 || b[0].PatientId != "777^REFERRING-CLINIC" {
		t.Errorf("study with another issuer: %v %v; want patient 777^REFERRING-CLINIC", b, err)
	}
}

// TestJoinFollowsAccessionCorrection: a study corrected to another
// accession number loses the link to the first order.
func TestJoinFollowsAccessionCorrection(t *testing.T) {
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	m := mapper.New(mapper.Config{Ingest: in, Events: evs, Rules: rules.New(rules.Options{QuietPeriod: time.Hour})})
	ctx := runMapper(t, m, 20*time.Second)
	now := time.Now() // the quiet period (an hour) must not pass during the test
	body, _ := json.Marshal(ingest.HL7Body{Raw: joinORM("PA", "ACC-1", "O1")})
	in.Append(ctx, ingest.Observation{Kind: ingest.KindHL7, Key: "o", Time: now.Add(1 * time.Second), Body: body})
	inst := joinStudy("PA", "ACC-1", "1.2.3.7", 1)[0]
	b, _ := json.Marshal(inst)
	seq, _, _ := in.Append(ctx, ingest.Observation{Kind: ingest.KindDICOMInstance, Key: "d1", Time: now.Add(2 * time.Second), Body: b})
	first, err := m.Await(ctx, seq)
	if err != nil || len(first) == 0 || first[0].Resource.AsMap()["basedOn"] == nil {
		t.Fatalf("study with its order's accession: %v %v", first, err)
	}
	inst.AccessionNumber = "ACC-2"
	b, _ = json.Marshal(inst)
	seq, _, _ = in.Append(ctx, ingest.Observation{Kind: ingest.KindDICOMInstance, Key: "d2", Time: now.Add(3 * time.Second), Body: b})
	if _, err := m.Await(ctx, seq); err != nil {
		t.Fatal(err)
	}
	// The correction shows when the study is next emitted; force it with an
	// IAN (complete now).
	ian := ingest.IAN{SOPInstanceUID: "1.2.3.7.99", StudyInstanceUID: "1.2.3.7", Series: []ingest.IANSeries{{SeriesInstanceUID: inst.SeriesInstanceUID,
		Instances: []ingest.IANInstance{{SOPClassUID: inst.SOPClassUID, SOPInstanceUID: inst.SOPInstanceUID}}}}}
	b, _ = json.Marshal(ian)
	seq, _, _ = in.Append(ctx, ingest.Observation{Kind: ingest.KindDICOMIAN, Key: "i", Time: now.Add(4 * time.Second), Body: b})
	got, err := m.Await(ctx, seq)
	if err != nil || len(got) == 0 {
		all, _ := evs.Read(ctx, 1, eventlog.Filter{}, 100)
		for _, e := range all {
			t.Logf("%d %v %s", e.Sequence, e.Type, e.Message)
		}
		t.Fatalf("IAN: %v %v", got, err)
	}
	r := got[0].Resource.AsMap()
	if got[0].AccessionNumber != "ACC-2" || r["basedOn"] != nil {
		t.Errorf("after the accession correction: accession %q basedOn %v; want ACC-2 and no link", got[0].AccessionNumber, r["basedOn"])
	}
}

// TestConflictingHL7 covers the defined results of conflicting data: a
// second order with the same accession replaces the first with a warning;
// a report for a cancelled order is kept and linked with a warning, and the
// order stays revoked.
func TestConflictingHL7(t *testing.T) {
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	m := mapper.New(mapper.Config{Ingest: in, Events: evs, Rules: rules.New(rules.Options{QuietPeriod: time.Hour})})
	ctx := runMapper(t, m, 20*time.Second)
	add := feeder(ctx, t, in, m)
	send := func(raw string) []*rbv1.Event {
		t.Helper()
		return add(ingest.KindHL7, ingest.HL7Body{Raw: []byte(raw)})
	}
	send(string(joinORM("PA", "ACC-C", "O1")))
	second := strings.NewReplacer("PACC-C", "PX9", "FACC-C", "FX9").Replace(string(joinORM("PA", "ACC-C", "O2")))
	got := send(second)
	if len(got) != 1 || got[0].Type != rbv1.EventType_ORDER_UPDATED || got[0].Severity != rbv1.Severity_SEVERITY_WARNING || !strings.Contains(got[0].Message, "already belonged to order PACC-C/FACC-C") {
		t.Errorf("second order with one accession: %v", got)
	}
	cancelMsg := strings.Replace(second, "ORC|NW|", "ORC|CA|", 1)
	if got := send(cancelMsg); len(got) != 1 || got[0].Type != rbv1.EventType_ORDER_CANCELLED {
		t.Fatalf("cancel: %v", got)
	}
	got = send(string(joinORU("PA", "ACC-C", "F1", "F")))
	var report, order *rbv1.Event
	for _, e := range got {
		switch e.ResourceType {
		case "DiagnosticReport":
			report = e
		case "ServiceRequest":
			order = e
		}
	}
	if report == nil || report.Severity != rbv1.Severity_SEVERITY_WARNING || !strings.Contains(report.Message, "was cancelled") ||
		fmt.Sprint(report.Resource.AsMap()["basedOn"]) != "[map[reference:ServiceRequest/"+rules.ServiceRequestID("PA", "ACC-C")+"]]" {
		t.Errorf("report for a cancelled order: %v", report)
	}
	if order != nil {
		t.Errorf("the cancelled order changed with the report: %v", order)
	}
}

// TestOneAccessionTwoPatients: two patients' orders and reports with one
// accession number (two sites, or before a merge) get ids of their own, so a
// FHIR store that upserts by id keeps both; the second order is a new order
// of its patient, not a replacement of the first patient's, and no event
// about one patient names the other's order numbers.
func TestOneAccessionTwoPatients(t *testing.T) {
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	rm := &readmodeltest.Memory{}
	m := mapper.New(mapper.Config{Ingest: in, Events: evs, ReadModel: rm, Rules: rules.New(rules.Options{QuietPeriod: time.Hour})})
	ctx := runMapper(t, m, 20*time.Second)
	var got []*rbv1.Event
	for i, raw := range []string{
		string(joinORM("PA", "ACC-S", "O1")),
		strings.NewReplacer("PACC-S", "PSITE2", "FACC-S", "FSITE2").Replace(string(joinORM("PB", "ACC-S", "O2"))),
		string(joinORU("PA", "ACC-S", "F1", "F")),
		strings.NewReplacer("PACC-S", "PSITE2", "FACC-S", "FSITE2").Replace(string(joinORU("PB", "ACC-S", "F2", "F"))),
	} {
		body, _ := json.Marshal(ingest.HL7Body{Raw: []byte(raw)})
		seq, _, err := in.Append(ctx, ingest.Observation{Kind: ingest.KindHL7, Key: fmt.Sprint("k", i), Time: time.Unix(int64(1+i), 0), Body: body})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := m.Await(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, evs...)
	}
	ids := map[string]string{} // resource id -> patient
	for _, e := range got {
		if p, ok := ids[e.ResourceType+"/"+e.ResourceId]; ok && p != e.PatientId {
			t.Errorf("%s is the id of patients %s and %s", e.ResourceId, p, e.PatientId)
		}
		ids[e.ResourceType+"/"+e.ResourceId] = e.PatientId
		other := map[string][]string{"PA": {"PSITE2", "FSITE2"}, "PB": {"PACC-S", "FACC-S"}}[e.PatientId]
		for _, s := range other {
			if strings.Contains(e.Message, s) {
				t.Errorf("event about %s names the other patient's order %s: %q", e.PatientId, s, e.Message)
			}
		}
		if based := fmt.Sprint(e.Resource.AsMap()["basedOn"]); e.ResourceType == "DiagnosticReport" && based != "[map[reference:ServiceRequest/"+rules.ServiceRequestID(e.PatientId, "ACC-S")+"]]" {
			t.Errorf("report of %s basedOn %s", e.PatientId, based)
		}
	}
	if got[1].Type != rbv1.EventType_ORDER_PLACED || got[1].PatientId != "PB" || got[1].ResourceId == got[0].ResourceId {
		t.Errorf("second patient's order: %v %s id %s (first %s); want ORDER_PLACED with an id of its own", got[1].Type, got[1].PatientId, got[1].ResourceId, got[0].ResourceId)
	}
	if !strings.Contains(got[1].Message, "another patient") {
		t.Errorf("second patient's order: message %q; want the warning", got[1].Message)
	}
	rms := rm.Patients()
	for _, pid := range []string{"PA", "PB"} {
		if len(rms[pid].Orders) != 1 || len(rms[pid].Reports) != 1 {
			t.Errorf("%s read model: %d orders %d reports, want 1 and 1", pid, len(rms[pid].Orders), len(rms[pid].Reports))
		}
	}
	for _, id := range []string{rules.ServiceRequestID("PA", "ACC-S"), rules.DiagnosticReportID("PB", "ACC-S")} {
		if !regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`).MatchString(id) {
			t.Errorf("id %q is not a FHIR id", id)
		}
	}
	if long := rules.ServiceRequestID("PA", strings.Repeat("A", 80)); len(long) > 64 || long == rules.ServiceRequestID("PB", strings.Repeat("A", 80)) {
		t.Errorf("long accession: id %q", long)
	}
}

// TestLegacyIDsContinued: a state from before per-patient ids (a snapshot
// without resource_ids: the daemon upgraded without the replay) continues
// the order and report it holds under their old ids instead of duplicating
// them; a new order gets a per-patient id.
func TestLegacyIDsContinued(t *testing.T) {
	st := rules.NewState()
	b, _ := json.Marshal(st)
	old := strings.Replace(string(b), `"resource_ids":1`, `"orders":{"ACC-L":{"patient_id":"PA","accession":"ACC-L","resource_id":"ACC-L"}}`, 1)
	old = strings.Replace(old, `"orders":{},`, "", 1)
	snap, err := mapper.DecodeSnapshot(mapper.EncodeSnapshotRaw([]byte(old)))
	if err != nil {
		t.Fatal(err)
	}
	st = snap.State
	st.Patient("PA").Reports = map[string]json.RawMessage{"report-ACC-L": json.RawMessage(`{"resourceType":"DiagnosticReport","id":"report-ACC-L"}`)}
	byKind := rules.New(rules.Options{})
	apply := func(raw []byte) []*rbv1.Event {
		t.Helper()
		body, _ := json.Marshal(ingest.HL7Body{Raw: raw})
		c := rules.NewContext(st, ingest.Record{Seq: 1, Observation: ingest.Observation{Kind: ingest.KindHL7, Body: body}}, map[string]bool{})
		if err := byKind[ingest.KindHL7].Apply(c); err != nil {
			t.Fatal(err)
		}
		return c.Events()
	}
	if got := apply(joinORM("PA", "ACC-L", "O1")); len(got) != 1 || got[0].ResourceId != "ACC-L" || got[0].Type != rbv1.EventType_ORDER_UPDATED {
		t.Errorf("legacy order resent: %v", got)
	}
	if got := apply(joinORU("PA", "ACC-L", "F1", "F")); len(got) != 1 || got[0].ResourceId != "report-ACC-L" {
		t.Errorf("legacy report: %v", got)
	}
	if got := apply(joinORM("PA", "ACC-N", "O2")); len(got) != 1 || got[0].ResourceId != rules.ServiceRequestID("PA", "ACC-N") {
		t.Errorf("new order: %v", got)
	}
	if got := apply(joinORM("PB", "ACC-L", "O3")); len(got) != 1 || got[0].ResourceId != rules.ServiceRequestID("PB", "ACC-L") || got[0].Type != rbv1.EventType_ORDER_PLACED {
		t.Errorf("another patient's order with the legacy accession: %v", got)
	}
}

// TestJoinRuleEvents: an arrival is announced once and other resources
// get updates: a final report then its study's instances (the report is
// linked with IMAGING_REPORT_UPDATED, never a second IMAGING_REPORT_READY;
// the study still arriving gets PROGRESS, not UPDATED, when its order
// comes); an IAN moving the instances OFFLINE then back ONLINE updates the
// study; a study of a cancelled order says so.
func TestJoinRuleEvents(t *testing.T) {
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	m := mapper.New(mapper.Config{Ingest: in, Events: evs, Rules: rules.New(rules.Options{QuietPeriod: time.Hour})})
	ctx := runMapper(t, m, 20*time.Second)
	add := feeder(ctx, t, in, m)
	hl7 := func(raw []byte) []*rbv1.Event { return add(ingest.KindHL7, ingest.HL7Body{Raw: raw}) }
	typesOf := func(evs []*rbv1.Event) string {
		var s []string
		for _, e := range evs {
			s = append(s, e.Type.String()+"/"+e.ResourceType)
		}
		return strings.Join(s, " ")
	}
	uid := "1.2.826.0.1.3680043.10.1447.601"
	if got := typesOf(hl7(joinORU("PA", "ACC-R", "F1", "F"))); got != "IMAGING_REPORT_READY/DiagnosticReport" {
		t.Errorf("final report: %s", got)
	}
	insts := joinStudy("PA", "ACC-R", uid, 2)
	if got := typesOf(add(ingest.KindDICOMInstance, insts[0])); got != "IMAGING_STUDY_PROGRESS/ImagingStudy IMAGING_REPORT_UPDATED/DiagnosticReport" {
		t.Errorf("its study's first instance: %s", got)
	}
	if got := typesOf(hl7(joinORM("PA", "ACC-R", "O1"))); got != "ORDER_PLACED/ServiceRequest IMAGING_STUDY_PROGRESS/ImagingStudy IMAGING_REPORT_UPDATED/DiagnosticReport" {
		t.Errorf("the order of a report and a study still arriving: %s", got)
	}
	add(ingest.KindDICOMInstance, insts[1])
	ian := func(avail string) ingest.IAN {
		n := ingest.IAN{SOPInstanceUID: uid + ".9" + avail, StudyInstanceUID: uid, Series: []ingest.IANSeries{{SeriesInstanceUID: uid + ".1"}}}
		for _, in := range insts {
			n.Series[0].Instances = append(n.Series[0].Instances, ingest.IANInstance{SOPClassUID: in.SOPClassUID, SOPInstanceUID: in.SOPInstanceUID, InstanceAvailability: avail})
		}
		return n
	}
	got := add(ingest.KindDICOMIAN, ian("ONLINE"))
	if typesOf(got) != "IMAGING_STUDY_AVAILABLE/ImagingStudy" { // (its order was completed by the final report)
		t.Errorf("IAN ONLINE: %s", typesOf(got))
	}
	if got := add(ingest.KindDICOMIAN, ian("ONLINE")); len(got) != 0 {
		t.Errorf("IAN repeated: %s", typesOf(got))
	}
	got = add(ingest.KindDICOMIAN, ian("OFFLINE"))
	if typesOf(got) != "IMAGING_STUDY_UPDATED/ImagingStudy" || got[0].Severity != rbv1.Severity_SEVERITY_WARNING || !strings.Contains(got[0].Message, "instances not online: 2 offline") ||
		strings.Count(fmt.Sprint(got[0].Resource.AsMap()), "valueCode:OFFLINE") != 2 {
		t.Errorf("IAN OFFLINE: %s %v", typesOf(got), got)
	}
	got = add(ingest.KindDICOMIAN, ian(""))
	if typesOf(got) != "IMAGING_STUDY_UPDATED/ImagingStudy" || !strings.Contains(got[0].Message, "all instances online") || strings.Contains(fmt.Sprint(got[0].Resource.AsMap()), "OFFLINE") {
		t.Errorf("IAN back ONLINE: %s %q", typesOf(got), got[0].Message)
	}

	// A cancelled order (ORC-1 SC, ORC-5 CA), then its study.
	hl7(joinORM("PA", "ACC-Q", "O2"))
	cx := hl7([]byte(strings.Replace(string(joinORM("PA", "ACC-Q", "O3")), "ORC|NW|PACC-Q|FACC-Q||SC", "ORC|SC|PACC-Q|FACC-Q||CA", 1)))
	if typesOf(cx) != "ORDER_CANCELLED/ServiceRequest" || cx[0].Resource.AsMap()["status"] != "revoked" {
		t.Errorf("SC with ORC-5 CA: %s", typesOf(cx))
	}
	q := joinStudy("PA", "ACC-Q", uid+"2", 1)[0]
	got = add(ingest.KindDICOMInstance, q)
	if typesOf(got) != "IMAGING_STUDY_PROGRESS/ImagingStudy" || got[0].Severity != rbv1.Severity_SEVERITY_WARNING || !strings.Contains(got[0].Message, "its order ACC-Q was cancelled") {
		t.Errorf("study of a cancelled order: %s %v", typesOf(got), got)
	}
}
