package ingest_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/ingest"
)

var update = flag.Bool("update", false, "rewrite the golden files of the current format (never the *-v1 files)")

var at = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

var peer = ingest.Peer{CallingAE: "MODALITY1", CalledAE: "RADBRIDGE", RemoteAddr: "127.0.0.1:40000"}

func sampleInstance() *ingest.Instance {
	return &ingest.Instance{Peer: peer, SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: "1.2.3.4.1.1", StudyInstanceUID: "1.2.3.4", SeriesInstanceUID: "1.2.3.4.1",
		TransferSyntaxUID: "1.2.840.10008.1.2.1", PatientID: "MRN001", IssuerOfPatientID: "HOSP", PatientName: "SYNTHETIC^ONE", PatientBirthDate: "19700101", PatientSex: "F",
		AccessionNumber: "ACC1", Modality: "CT", BodyPartExamined: "CHEST", StudyDescription: "CT CHEST", SeriesDescription: "AXIAL", StudyDate: "20261201", StudyTime: "095500",
		StudyID: "S1", ReferringPhysicianName: "REF^DOC", SeriesNumber: 2, InstanceNumber: 7, NumberOfFrames: 1, SpecificCharacterSet: "ISO_IR 192", Size: 1234, Path: "/x/1.dcm", ReceivedAt: at}
}

func sampleIAN() *ingest.IAN {
	return &ingest.IAN{Peer: peer, SOPInstanceUID: "1.2.3.9", StudyInstanceUID: "1.2.3.4", PerformedProcedureSteps: []string{"1.2.3.8"},
		Series: []ingest.IANSeries{{SeriesInstanceUID: "1.2.3.4.1", Instances: []ingest.IANInstance{{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: "1.2.3.4.1.1", InstanceAvailability: "ONLINE", RetrieveAETitle: "PACS"}}}}, ReceivedAt: at}
}

func sampleMPPS() *ingest.MPPSUpdate {
	return &ingest.MPPSUpdate{Peer: peer, SOPInstanceUID: "1.2.3.8", Create: true, Status: "IN PROGRESS", StudyInstanceUIDs: []string{"1.2.3.4"}, AccessionNumbers: []string{"ACC1"},
		PatientID: "MRN001", PatientName: "SYNTHETIC^ONE", Modality: "CT", ProcedureStepID: "PS1", StartDate: "20261201", StartTime: "095000",
		Series: []ingest.MPPSSeries{{SeriesInstanceUID: "1.2.3.4.1", SOPInstanceUIDs: []string{"1.2.3.4.1.1"}}}, ReceivedAt: at}
}

// The *-v1.json files were written by the release before package ingest
// owned these types (dicom/scp's structs marshalled as they were), with the
// keys that release built. A record of that release must decode to the
// same value, encode to the same bytes and get the same key and digests:
// otherwise a resend after an upgrade would look like a correction.
func TestFirstReleaseRecords(t *testing.T) {
	for _, tc := range []struct {
		file    string
		kind    string
		want    any
		decode  func(ingest.Observation) (any, error)
		build   func() (ingest.Observation, error)
		wantKey string
	}{
		{"instance-v1.json", ingest.KindDICOMInstance, sampleInstance(),
			func(o ingest.Observation) (any, error) { return ingest.DecodeInstance(o) },
			func() (ingest.Observation, error) { return ingest.NewInstance(sampleInstance()) },
			"dicom:1.2.3.4.1.1:91e13e6a68135a55"},
		{"ian-v1.json", ingest.KindDICOMIAN, sampleIAN(),
			func(o ingest.Observation) (any, error) { return ingest.DecodeIAN(o) },
			func() (ingest.Observation, error) { return ingest.NewIAN(sampleIAN()) },
			"ian:1.2.3.9:ef3895606c68eb1a"},
		{"mpps-v1.json", ingest.KindDICOMMPPS, sampleMPPS(),
			func(o ingest.Observation) (any, error) { return ingest.DecodeMPPS(o) },
			func() (ingest.Observation, error) { return ingest.NewMPPS(sampleMPPS()) },
			"mpps:1.2.3.8:d797a177806619f5"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			raw = bytes.TrimSpace(raw)
			got, err := tc.decode(ingest.Observation{Kind: tc.kind, Body: raw})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(got, tc.want); d != "" {
				t.Errorf("decoded (-got +want):\n%s", d)
			}
			o, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(o.Body, raw) {
				t.Errorf("encoded body:\n%s\nwant (as the first release wrote it):\n%s", o.Body, raw)
			}
			if o.Key != tc.wantKey {
				t.Errorf("key %s, want %s (the first release's)", o.Key, tc.wantKey)
			}
		})
	}
	if got, want := sampleInstance().AttributeDigest(), "eb3cd7a9a05bf6cfe0eafb3f"; got != want {
		t.Errorf("AttributeDigest %s, want %s (stored in the mapper's state by the first release)", got, want)
	}
}

// TestObservationGolden pins the whole observation records written today,
// kind by kind.
func TestObservationGolden(t *testing.T) {
	hl7, err := ingest.NewHL7([]byte("MSH|^~\\&|RIS|HOSP|RADBRIDGE|HOSP|20261201100000||ORM^O01|CTL1|P|2.5.1\rPID|1||MRN001^^^HOSP^MR||SYNTHETIC^ONE\rORC|NW|P1|F1\rOBR|1|P1|F1|CTCHEST^CT CHEST\r"), "RIS", "HOSP", "CTL1", at)
	if err != nil {
		t.Fatal(err)
	}
	inst, _ := ingest.NewInstance(sampleInstance())
	ian, _ := ingest.NewIAN(sampleIAN())
	mpps, _ := ingest.NewMPPS(sampleMPPS())
	viewed, _ := ingest.NewViewed(ingest.Viewed{PatientID: "MRN001", StudyInstanceUID: "1.2.3.4", AccessionNumber: "ACC1", ViewerID: "dr1", ViewerName: "Dr One"}, "view-1", "127.0.0.1:5000", at)
	timer, _ := ingest.NewTimer(&ingest.Timer{Key: "quiet:1.2.3.4", Kind: ingest.KindDICOMInstance, At: at.Add(10 * time.Second), Body: []byte(`{"study":"1.2.3.4"}`)}, at.Add(10*time.Second))
	reconcile, _ := ingest.NewReconcile(ingest.Reconcile{Action: ingest.ReconcileMove, Study: "1.2.3.4", Patient: "MRN002", Actor: "alice", Reason: "PACS had the wrong MRN"}, "req-1", "127.0.0.1:5000", at)
	stow, _ := ingest.NewSTOWRequest(&ingest.STOWRequest{Peer: ingest.Peer{CallingAE: "STOW-RS", RemoteAddr: "127.0.0.1:40001"}, StudyInstanceUID: "1.2.3.4", SOPInstanceUIDs: []string{"1.2.3.4.1.2", "1.2.3.4.1.1"}}, at)
	for name, o := range map[string]ingest.Observation{"hl7": hl7, "instance": inst, "ian": ian, "mpps": mpps, "viewed": viewed, "timer": timer, "reconcile": reconcile, "stow": stow} {
		t.Run(name, func(t *testing.T) {
			got, err := json.Marshal(o) // the bytes the log stores
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join("testdata", "observation-"+name+".json")
			if *update {
				if err := os.WriteFile(file, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(string(got)+"\n", string(want)); d != "" {
				t.Errorf("%s (-got +want):\n%s", file, d)
			}
			var back ingest.Observation
			if err := json.Unmarshal(want, &back); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(back, o); d != "" {
				t.Errorf("decoded %s (-got +want):\n%s", file, d)
			}
		})
	}
}

func TestHL7Digest(t *testing.T) {
	base := "MSH|^~\\&|RIS|HOSP|RB|HOSP|20261201100000||ORM^O01|CTL1|P|2.5.1\rPID|1||MRN001^^^HOSP^MR\rORC|NW|P1\r"
	same := map[string]string{
		"MSH-7 restamped":      strings.Replace(base, "20261201100000", "20261201100500", 1),
		"MSH-7 removed":        strings.Replace(base, "|20261201100000|", "||", 1),
		"\\r\\n terminators":   strings.ReplaceAll(base, "\r", "\r\n"),
		"\\n terminators":      strings.ReplaceAll(base, "\r", "\n"),
		"no final terminator":  strings.TrimSuffix(base, "\r"),
		"trailing empty field": strings.Replace(base, "ORC|NW|P1\r", "ORC|NW|P1||\r", 1),
		"empty segment lines":  strings.ReplaceAll(base, "\r", "\r\r"),
	}
	other := map[string]string{
		"other order control": strings.Replace(base, "ORC|NW", "ORC|CA", 1),
		"other MRN":           strings.Replace(base, "MRN001", "MRN002", 1),
		"other MSH-9":         strings.Replace(base, "ORM^O01", "OMI^O23", 1),
		"other delimiters":    strings.Replace(base, "^~\\&", "^~\\#", 1),
		"empty field inside":  strings.Replace(base, "PID|1||", "PID|1|||", 1),
	}
	want := ingest.HL7Digest([]byte(base))
	for name, m := range same {
		if got := ingest.HL7Digest([]byte(m)); got != want {
			t.Errorf("%s: digest %s, want %s (a resend)", name, got, want)
		}
	}
	for name, m := range other {
		if got := ingest.HL7Digest([]byte(m)); got == want {
			t.Errorf("%s: digest %s equals the original's (other content)", name, got)
		}
	}
	// The field separator is MSH-1: with '#' MSH-7 is still the ignored field.
	hash := strings.ReplaceAll(base, "|", "#")
	if ingest.HL7Digest([]byte(hash)) != ingest.HL7Digest([]byte(strings.Replace(hash, "20261201100000", "20270101000000", 1))) {
		t.Error("MSH-7 not ignored with field separator #")
	}
}

func TestIdentity(t *testing.T) {
	type identity struct{ Seen, Content string }
	of := func(o ingest.Observation) identity { return identity{ingest.SeenKey(o), ingest.ContentKey(o)} }
	raw := []byte("MSH|^~\\&|RIS|HOSP|RB|HOSP|20261201100000||ORM^O01|CTL1|P|2.5.1\rPID|1||MRN001\r")
	o, _ := ingest.NewHL7(raw, "RIS", "HOSP", "CTL1", at)
	want := identity{Seen: "hl7:RIS|HOSP|CTL1", Content: o.Key}
	if got := of(o); got != want {
		t.Errorf("today's HL7 record: %+v, want %+v", got, want)
	}
	// A record of the release before content digests was keyed by the
	// control key alone: same identity.
	old := o
	old.Key = "hl7:RIS|HOSP|CTL1"
	if got := of(old); got != want {
		t.Errorf("old HL7 record: %+v, want %+v", got, want)
	}
	v, _ := ingest.NewViewed(ingest.Viewed{PatientID: "P", StudyInstanceUID: "1.2"}, "evt#1", "", at)
	wantV := identity{Seen: "api:evt#1", Content: v.Key}
	if got := of(v); got != wantV {
		t.Errorf("viewed: %+v, want %+v", got, wantV)
	}
	oldV := v
	oldV.Key = "api:evt#1"
	if got := of(oldV); got != wantV {
		t.Errorf("old viewed record: %+v, want %+v", got, wantV)
	}
	inst, _ := ingest.NewInstance(sampleInstance())
	if got := of(inst); got != (identity{Seen: inst.Key, Content: inst.Key}) {
		t.Errorf("instance: %+v", got)
	}
}

// TestLargeIANInParts: an IAN of 25,000 instances in three series is
// recorded as three parts of at most MaxIANInstances, each far below the
// log's message limit, together listing every instance once; a small IAN
// is one record, as before.
func TestLargeIANInParts(t *testing.T) {
	n := &ingest.IAN{Peer: peer, SOPInstanceUID: "1.2.3.9", StudyInstanceUID: "1.2.3.4", ReceivedAt: at}
	for s, count := range []int{12000, 3000, 10000} {
		se := ingest.IANSeries{SeriesInstanceUID: fmt.Sprintf("1.2.3.4.%d", s)}
		for i := range count {
			se.Instances = append(se.Instances, ingest.IANInstance{SOPClassUID: "1.2.840.10008.5.1.4.1.1.4", SOPInstanceUID: fmt.Sprintf("1.2.3.4.%d.%d", s, i), InstanceAvailability: "ONLINE"})
		}
		n.Series = append(n.Series, se)
	}
	obs, err := ingest.NewIANs(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(obs) != 3 {
		t.Fatalf("%d records, want 3", len(obs))
	}
	seen, keys := map[string]bool{}, map[string]bool{}
	for i, o := range obs {
		if len(o.Body) > 4<<20 {
			t.Errorf("part %d: %d bytes", i+1, len(o.Body))
		}
		keys[o.Key] = true
		p, err := ingest.DecodeIAN(o)
		if err != nil {
			t.Fatal(err)
		}
		if p.Part != i+1 || p.Parts != 3 || p.SOPInstanceUID != n.SOPInstanceUID || p.StudyInstanceUID != n.StudyInstanceUID {
			t.Errorf("part %d: %d/%d %s %s", i+1, p.Part, p.Parts, p.SOPInstanceUID, p.StudyInstanceUID)
		}
		count := 0
		for _, s := range p.Series {
			for _, in := range s.Instances {
				if seen[in.SOPInstanceUID] {
					t.Errorf("%s listed twice", in.SOPInstanceUID)
				}
				seen[in.SOPInstanceUID] = true
				count++
			}
		}
		if count > ingest.MaxIANInstances {
			t.Errorf("part %d lists %d instances", i+1, count)
		}
	}
	if len(seen) != 25000 || len(keys) != 3 {
		t.Errorf("%d instances in %d keys, want 25000 in 3", len(seen), len(keys))
	}
	small, _ := ingest.NewIANs(sampleIAN())
	one, _ := ingest.NewIAN(sampleIAN())
	if len(small) != 1 || small[0].Key != one.Key || string(small[0].Body) != string(one.Body) {
		t.Errorf("a small IAN: %d records", len(small))
	}
}
