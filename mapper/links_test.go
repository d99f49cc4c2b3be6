package mapper_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	"github.com/google/go-cmp/cmp"

	"radbridge/mapper/rules"
)

func TestViewerURL(t *testing.T) {
	tests := []struct {
		name, template, study, acc, patient, want string
	}{
		{"none", "", "1.2.3", "A1", "P1", ""},
		{"study", "https://viewer.example/viewer?StudyInstanceUIDs={{study}}", "1.2.3", "", "", "https://viewer.example/viewer?StudyInstanceUIDs=1.2.3"},
		{"escaped", "https://v.example/p/{{patient}}/a?acc={{accession}}&s={{study}}", "1.2.3", "ACC 1&2=3+4", "MRN/47?#",
			"https://v.example/p/MRN%2F47%3F%23/a?acc=ACC%201%262%3D3%2B4&s=1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rules.ViewerURL(tt.template, tt.study, tt.acc, tt.patient)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestStudyLinks checks the viewer extension, the contained WADO-RS
// Endpoint and the event's viewer_url, and that the resource is valid FHIR.
func TestStudyLinks(t *testing.T) {
	r := newFHIRRun(t, rules.Options{QuietPeriod: time.Second, Zone: time.UTC,
		ViewerURL:  "https://viewer.example/viewer?StudyInstanceUIDs={{study}}&acc={{accession}}",
		WADORSBase: "https://pacs.example/dicom-web"})
	in := fhirCT(1)
	in.AccessionNumber = "ACC 1&2"
	r.store("store", in)
	evs := r.quiet("quiet", fhirStudyUID)
	if len(evs) != 1 {
		t.Fatalf("got %d events on quiet, want 1", len(evs))
	}
	want := "https://viewer.example/viewer?StudyInstanceUIDs=" + fhirStudyUID + "&acc=ACC%201%262"
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range r.events {
		ev := e.ev
		if got := ev.GetViewerUrl(); got != want {
			t.Errorf("%s: %v viewer_url %q, want %q", e.name, ev.Type, got, want)
		}
		res := ev.Resource.AsMap()
		b, _ := json.MarshalIndent(res, "", "  ")
		if _, err := u.Unmarshal(b); err != nil {
			t.Errorf("%s: not valid FHIR R4: %v\n%s", e.name, err, b)
		}
		checkURIs(t, e.name, res)
		got := map[string]any{"extension": res["extension"], "contained": res["contained"], "endpoint": res["endpoint"]}
		wantRes := map[string]any{
			"extension": []any{map[string]any{"url": rules.ViewerURLExtension, "valueUrl": want}},
			"contained": []any{map[string]any{
				"resourceType": "Endpoint", "id": "wado", "status": "active",
				"connectionType": map[string]any{"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
				"payloadType":    []any{map[string]any{"text": "DICOM"}},
				"address":        "https://pacs.example/dicom-web",
			}},
			"endpoint": []any{map[string]any{"reference": "#wado"}},
		}
		if e.name == "quiet" { // complete: why (the quiet period), and its evidence
			wantRes["extension"] = append([]any{map[string]any{"url": rules.CompletionExtension, "extension": []any{
				map[string]any{"url": "reason", "valueCode": "quiet-period"},
				map[string]any{"url": "instancesReceived", "valueUnsignedInt": float64(1)},
			}}}, wantRes["extension"].([]any)...)
		}
		if diff := cmp.Diff(got, wantRes); diff != "" {
			t.Errorf("%s: links (-got +want):\n%s", e.name, diff)
		}
	}
}
