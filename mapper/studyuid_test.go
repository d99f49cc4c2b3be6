package mapper_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/internal/testkit"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
	"radbridge/readmodel/readmodeltest"
)

// uidOMI is an OMI^O23 whose IPC names the study's accession (IPC-1) and
// Study Instance UID (IPC-3).
func uidOMI(pid, acc, uid, ctl string) []byte {
	return []byte(strings.Join([]string{
		"MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMG|20260310083000+0000||OMI^O23^OMI_O23|" + ctl + "|P|2.5.1",
		"PID|1||" + pid + "^^^HOSP^MR||TEST^PAT",
		"ORC|NW|P" + acc + "|F" + acc + "||SC",
		"OBR|1|P" + acc + "|F" + acc + "|71250^CT CHEST^C4|||||||||||||||||||CT",
		"IPC|" + acc + "|RP1|" + uid + "|SPS1|CT",
	}, "\r"))
}

// uidORM is an ORM^O01 with the IHE SWF ZDS segment (ZDS-1: Study Instance
// UID^application^Application^DICOM).
func uidORM(pid, acc, uid, ctl string) []byte {
	return append(joinORM(pid, acc, ctl), []byte("\rZDS|"+uid+"^RADBRIDGE^Application^DICOM")...)
}

func uidIAN(uid string) ingest.IAN {
	return ingest.IAN{SOPInstanceUID: uid + ".9", StudyInstanceUID: uid, Series: []ingest.IANSeries{{SeriesInstanceUID: uid + ".1",
		Instances: []ingest.IANInstance{{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: uid + ".1.1", InstanceAvailability: "ONLINE"}}}}}
}

type uidObs struct {
	kind string
	body any
}

func hl7Obs(raw []byte) uidObs { return uidObs{ingest.KindHL7, ingest.HL7Body{Raw: raw}} }

// runUIDJoin maps obs in order and returns the read models and every event.
func runUIDJoin(t *testing.T, obs []uidObs) (map[string]readmodel.Patient, []*rbv1.Event) {
	t.Helper()
	in, evs := ingest.NewMemory(), eventlog.NewMemory()
	rm := &readmodeltest.Memory{}
	m := mapper.New(mapper.Config{Ingest: in, Events: evs, ReadModel: rm,
		Rules: rules.New(rules.Options{QuietPeriod: time.Hour, HL7PatientAuthority: "HOSP"})})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var last uint64
	for i, o := range obs {
		b, _ := json.Marshal(o.body)
		seq, _, err := in.Append(ctx, ingest.Observation{Kind: o.kind, Key: fmt.Sprint("k", i), Time: time.Unix(int64(100+i), 0), Body: b})
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	if _, err := m.Await(ctx, last); err != nil {
		t.Fatal(err)
	}
	// Timers the mapper recorded come after last; the read models are
	// written once it has applied everything.
	testkit.Eventually(t, 10*time.Second, "mapper caught up", func() bool {
		l, err := in.Last(ctx)
		return err == nil && m.Applied() >= l
	})
	all, err := evs.Read(ctx, 1, eventlog.Filter{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return rm.Patients(), all
}

func resourceOf(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var r map[string]any
	if raw != nil {
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func references(v any) string {
	var out []string
	for _, x := range asList(v) {
		out = append(out, x.(map[string]any)["reference"].(string))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// TestJoinByStudyUID: an order that names the Study Instance UID the
// modality will use (OMI IPC-3, ORM ZDS-1) joins the study by it, in either
// arrival order, when the images carry no accession or one a modality
// rewrote; conflicting evidence is a warning, and never a link across
// patients.
func TestJoinByStudyUID(t *testing.T) {
	const u = "1.2.826.0.1.3680043.10.1447.7"
	study := func(pid, acc string) uidObs { return uidObs{ingest.KindDICOMInstance, joinStudy(pid, acc, u, 1)[0]} }
	ian := uidObs{ingest.KindDICOMIAN, uidIAN(u)}
	for _, tc := range []struct {
		name  string
		obs   []uidObs
		pid   string // the study's patient
		based string // its basedOn
		// the order's patient and status, "" when it has none
		orderPID, order, orderStatus string
		warning                      string // in some event's message
	}{
		{"OMI IPC-3, images without accession, order first",
			[]uidObs{hl7Obs(uidOMI("PA", "A1", u, "O1")), study("PA", ""), ian, hl7Obs(joinORU("PA", "A1", "R1", "F"))},
			"PA", "ServiceRequest/" + rules.ServiceRequestID("PA", "A1"), "PA", "A1", "completed", ""},
		{"OMI IPC-3, images without accession, images first",
			[]uidObs{study("PA", ""), ian, hl7Obs(joinORU("PA", "A1", "R1", "F")), hl7Obs(uidOMI("PA", "A1", u, "O1"))},
			"PA", "ServiceRequest/" + rules.ServiceRequestID("PA", "A1"), "PA", "A1", "completed", ""},
		{"ORM ZDS-1, accession rewritten by the modality",
			[]uidObs{hl7Obs(uidORM("PA", "A2", u, "O1")), study("PA", "MOD-999"), ian},
			"PA", "ServiceRequest/" + rules.ServiceRequestID("PA", "A2"), "PA", "A2", "completed", ""},
		{"ORM ZDS-1, images first with a rewritten accession",
			[]uidObs{study("PA", "MOD-999"), ian, hl7Obs(uidORM("PA", "A2", u, "O1"))},
			"PA", "ServiceRequest/" + rules.ServiceRequestID("PA", "A2"), "PA", "A2", "completed", ""},
		{"accession names another order of the patient: Study UID wins, warning",
			[]uidObs{hl7Obs(uidOMI("PA", "A3", u, "O1")), hl7Obs(joinORM("PA", "A4", "O2")), study("PA", "A4"), ian},
			"PA", "ServiceRequest/" + rules.ServiceRequestID("PA", "A3"), "PA", "A4", "active", "names another order than their Study Instance UID"},
		{"accession names another order, images first: Study UID wins, warning",
			[]uidObs{hl7Obs(joinORM("PA", "A4", "O2")), study("PA", "A4"), ian, hl7Obs(uidOMI("PA", "A3", u, "O1"))},
			"PA", "ServiceRequest/" + rules.ServiceRequestID("PA", "A3"), "PA", "A4", "completed", "names another order than their Study Instance UID"},
		{"Study UID of another patient's order: no link, warning",
			[]uidObs{hl7Obs(uidOMI("PA", "A5", u, "O1")), study("PB", ""), ian},
			"PB", "", "PA", "A5", "active", "not linked across patients"},
		{"another patient's study first: no link, warning on the order",
			[]uidObs{study("PB", ""), ian, hl7Obs(uidOMI("PA", "A5", u, "O1"))},
			"PB", "", "PA", "A5", "active", "not linked across patients"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rm, evs := runUIDJoin(t, tc.obs)
			st := resourceOf(t, rm[tc.pid].Studies[u])
			if st == nil || st["status"] != "available" {
				t.Fatalf("study of %s: %v", tc.pid, st)
			}
			if got := references(st["basedOn"]); got != tc.based {
				t.Errorf("study basedOn %q, want %q", got, tc.based)
			}
			o := resourceOf(t, rm[tc.orderPID].Orders[rules.ServiceRequestID(tc.orderPID, tc.order)])
			if o["status"] != tc.orderStatus {
				t.Errorf("order %s status %v, want %s", tc.order, o["status"], tc.orderStatus)
			}
			for pid, p := range rm {
				for id, raw := range p.Reports {
					r := resourceOf(t, raw)
					if want := map[bool]string{true: "ImagingStudy/" + u}[tc.based != "" && pid == tc.pid]; references(r["imagingStudy"]) != want {
						t.Errorf("report %s imagingStudy %q, want %q", id, references(r["imagingStudy"]), want)
					}
				}
			}
			warned := false
			for _, e := range evs {
				if strings.Contains(e.Message, "warning") {
					if !strings.Contains(e.Message, tc.warning) || tc.warning == "" {
						t.Errorf("event %v %s: %q", e.Type, e.ResourceId, e.Message)
					}
					if e.Severity != rbv1.Severity_SEVERITY_WARNING {
						t.Errorf("event %v %s: severity %v with a warning", e.Type, e.ResourceId, e.Severity)
					}
					if strings.Contains(e.Message, "PA") || strings.Contains(e.Message, "PB") {
						t.Errorf("warning names a patient: %q", e.Message)
					}
					warned = true
				}
				if e.ResourceType == "ServiceRequest" && e.StudyInstanceUid != u && e.ResourceId != rules.ServiceRequestID("PA", "A4") {
					t.Errorf("order event %s: study uid %q, want %q", e.ResourceId, e.StudyInstanceUid, u)
				}
			}
			if tc.warning != "" && !warned {
				t.Errorf("no event warns %q", tc.warning)
			}
			// The order carries the Study Instance UID as an identifier.
			ids, _ := json.Marshal(resourceOf(t, rm[tc.orderPID].Orders[rules.ServiceRequestID(tc.orderPID, map[bool]string{true: "A3", false: tc.order}[tc.order == "A4"])])["identifier"])
			if !strings.Contains(string(ids), `{"system":"urn:dicom:uid","value":"urn:oid:`+u+`"}`) {
				t.Errorf("order identifiers %s: no urn:dicom:uid", ids)
			}
		})
	}
}
