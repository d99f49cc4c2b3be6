package readmodel_test

import (
	"encoding/json"
	"testing"

	"radbridge/eventlog"
	"radbridge/readmodel"
)

// TestPatientJSON pins the stored encoding of a read model: read models
// written by earlier versions are read back with it.
func TestPatientJSON(t *testing.T) {
	p := &readmodel.Patient{
		ID: "MRN1", LastSequence: 7,
		Studies:     map[string]json.RawMessage{"s1": json.RawMessage(`{"resourceType":"ImagingStudy"}`)},
		Orders:      map[string]json.RawMessage{"o1": json.RawMessage(`{"resourceType":"ServiceRequest"}`)},
		Reports:     map[string]json.RawMessage{"r1": json.RawMessage(`{"resourceType":"DiagnosticReport"}`)},
		BodyRegions: map[string]uint32{"Chest": 1},
		Views:       map[string]uint32{"s1": 2},
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"MRN1","last_sequence":7,"studies":{"s1":{"resourceType":"ImagingStudy"}},"orders":{"o1":{"resourceType":"ServiceRequest"}},"reports":{"r1":{"resourceType":"DiagnosticReport"}},"body_regions":{"Chest":1},"views":{"s1":2}}`
	if got := string(b); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	b, _ = json.Marshal(&readmodel.Patient{ID: "P"})
	if got, want := string(b), `{"id":"P","last_sequence":0}`; got != want {
		t.Errorf("empty patient: got %s, want %s", got, want)
	}
}

// TestEventIDStable: an event's id is a name-based UUID of its key, the
// same in every process and version.
func TestEventIDStable(t *testing.T) {
	a := readmodel.EventID(eventlog.Key{IngestSeq: 1})
	if a != readmodel.EventID(eventlog.Key{IngestSeq: 1}) || a == readmodel.EventID(eventlog.Key{IngestSeq: 1, Index: 1}) {
		t.Fatalf("ids not stable or not distinct: %s", a)
	}
	if len(a) != 36 || a[14] != '5' {
		t.Errorf("%s: not a version 5 UUID", a)
	}
}

// TestCriticalReport: a contained Observation interpreted HH, LL or AA
// makes a report critical; other flags or systems do not.
func TestCriticalReport(t *testing.T) {
	report := func(system, code string) map[string]any {
		return map[string]any{"contained": []any{map[string]any{
			"resourceType":   "Observation",
			"interpretation": []any{map[string]any{"coding": []any{map[string]any{"system": system, "code": code}}}},
		}}}
	}
	for _, tc := range []struct {
		name string
		dr   map[string]any
		want bool
	}{
		{"HH", report(readmodel.InterpretationSystem, "HH"), true},
		{"LL", report(readmodel.InterpretationSystem, "LL"), true},
		{"AA", report(readmodel.InterpretationSystem, "AA"), true},
		{"H is not critical", report(readmodel.InterpretationSystem, "H"), false},
		{"another system", report("urn:other", "HH"), false},
		{"no contained", map[string]any{}, false},
	} {
		if got := readmodel.CriticalReport(tc.dr); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
