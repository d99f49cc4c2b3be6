package app_test

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"radbridge/mapper/rules"
)

// TestStudyEventsCarryViewerAndWADOLinks: with --viewer-url and
// --wado-rs-base, a study a PACS sends arrives with the viewer link on the
// event and in the ImagingStudy, and the WADO-RS endpoint contained in it.
func TestStudyEventsCarryViewerAndWADOLinks(t *testing.T) {
	const linkStudy = "1.2.826.0.1.3680043.10.1447.78"
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s",
		"--viewer-url", "https://viewer.example/viewer?StudyInstanceUIDs={{study}}&acc={{accession}}&pid={{patient}}",
		"--wado-rs-base", "https://pacs.example/dicom-web")
	src := t.TempDir()
	makeStudy(t, src, linkStudy, 1, 2, 1)

	avail := storeAndAwait(t, d, src)
	wantURL := "https://viewer.example/viewer?StudyInstanceUIDs=" + linkStudy + "&acc=ACC1001&pid=MRN4711"
	if got := avail.GetViewerUrl(); got != wantURL {
		t.Errorf("viewer_url %q, want %q", got, wantURL)
	}
	r := avail.Resource.AsMap()
	var links []any // the completion-reason extension is checked elsewhere (TestPACSStoresAStudy)
	for _, e := range r["extension"].([]any) {
		if e.(map[string]any)["url"] != rules.CompletionExtension {
			links = append(links, e)
		}
	}
	got := map[string]any{"extension": links, "endpoint": r["endpoint"], "address": nil}
	if c, ok := r["contained"].([]any); ok && len(c) == 1 {
		got["address"] = c[0].(map[string]any)["address"]
	}
	want := map[string]any{
		"extension": []any{map[string]any{"url": "https://radbridge.dev/fhir/StructureDefinition/viewer-url", "valueUrl": wantURL}},
		"endpoint":  []any{map[string]any{"reference": "#wado"}},
		"address":   "https://pacs.example/dicom-web",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("ImagingStudy links (-got +want):\n%s", diff)
	}
}
