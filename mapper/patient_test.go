package mapper_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"radbridge/mapper/rules"
)

// TestOnePatientIdentityAcrossFronts: the same MRN gives the same FHIR
// subject.identifier (system and value) from an HL7 order and a DICOM
// study, whatever is configured; an identifier of another issuer has its
// issuer's system on both fronts too.
func TestOnePatientIdentityAcrossFronts(t *testing.T) {
	order := func(pid3 string) string {
		return `MSH|^~\&|RIS|HOSP|RADBRIDGE|IMG|20260310083000+0000||ORM^O01|C1|P|2.3
PID|1||` + pid3 + `||TEST^PAT
ORC|NW|P1|F1||SC
OBR|1|P1|F1|71250^CT CHEST^C4||||||||||||||ACC1||||||CT`
	}
	for _, tc := range []struct {
		name       string
		o          rules.Options
		pid3       string
		patientID  string // from DICOM
		issuer     string
		wantKey    string
		wantSystem string
		wantValue  string
	}{
		{"configured system", rules.Options{PatientIdentifierSystem: "https://hospital.example/mrn", HL7PatientAuthority: "NORTHWING", DICOMPatientIssuer: "NORTHWING"},
			"998877665^^^SSA^SS~MRN1^^^NORTHWING&1.2.3&ISO^MR", "MRN1", "NORTHWING", "MRN1", "https://hospital.example/mrn", "MRN1"},
		{"configured system, DICOM without issuer", rules.Options{PatientIdentifierSystem: "urn:oid:1.2.3.4", HL7PatientAuthority: "NORTHWING", DICOMPatientIssuer: "NORTHWING"},
			"MRN1^^^NORTHWING^MR", "MRN1", "", "MRN1", "urn:oid:1.2.3.4", "MRN1"},
		{"default from the HL7 authority", rules.Options{HL7PatientAuthority: "NORTHWING"},
			"MRN1^^^NORTHWING^MR", "MRN1", "1.2.840.99", "MRN1", "urn:hl7v2:assigning-authority:NORTHWING", "MRN1"},
		{"default from an OID DICOM issuer", rules.Options{DICOMPatientIssuer: "1.2.840.99"},
			"MRN1^^^1.2.840.99^MR", "MRN1", "1.2.840.99", "MRN1", "urn:oid:1.2.840.99", "MRN1"},
		{"nothing configured: the MR repetition", rules.Options{},
			"998877665^^^SSA^SS~MRN1^^^NORTHWING^MR", "MRN1", "NORTHWING", "MRN1", rules.DefaultPatientIdentifierSystem, "MRN1"},
		{"another issuer", rules.Options{HL7PatientAuthority: "NORTHWING", DICOMPatientIssuer: "NORTHWING"},
			"X9^^^OTHER&1.9&ISO^PI", "X9", "OTHER", "X9^OTHER", "urn:hl7v2:assigning-authority:OTHER", "X9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newFHIRRun(t, tc.o)
			evs := r.hl7("order", order(tc.pid3))
			in := fhirCT(1)
			in.PatientID, in.IssuerOfPatientID = tc.patientID, tc.issuer
			evs = append(evs, r.store("study", in)...)
			if len(evs) != 2 {
				t.Fatalf("%d events, want 2", len(evs))
			}
			want := map[string]any{"system": tc.wantSystem, "value": tc.wantValue}
			for _, ev := range evs {
				if ev.PatientId != tc.wantKey {
					t.Errorf("%s: patient id %q, want %q", ev.ResourceType, ev.PatientId, tc.wantKey)
				}
				subj, _ := ev.Resource.AsMap()["subject"].(map[string]any)
				if diff := cmp.Diff(subj["identifier"], any(want)); diff != "" {
					t.Errorf("%s subject.identifier (-got +want):\n%s", ev.ResourceType, diff)
				}
			}
		})
	}
}

// TestPatientSystem is the documented default of the MRN's system.
func TestPatientSystem(t *testing.T) {
	for _, tc := range []struct {
		o    rules.Options
		want string
	}{
		{rules.Options{PatientIdentifierSystem: "urn:oid:9.9", HL7PatientAuthority: "A"}, "urn:oid:9.9"},
		{rules.Options{HL7PatientAuthority: "ST MARY", DICOMPatientIssuer: "1.2.3"}, "urn:hl7v2:assigning-authority:ST%20MARY"},
		{rules.Options{DICOMPatientIssuer: "1.2.3"}, "urn:oid:1.2.3"},
		{rules.Options{}, "urn:radbridge:patient-id"},
	} {
		if got := tc.o.PatientSystem(); got != tc.want {
			t.Errorf("%s: got %q, want %q", fmt.Sprintf("%+v", tc.o), got, tc.want)
		}
	}
}
