package rules

import (
	"net/url"
	"strings"
)

// Viewer and retrieval links of an ImagingStudy: a contained FHIR R4
// Endpoint (https://hl7.org/fhir/R4/endpoint.html) of connection type
// dicom-wado-rs, referenced from ImagingStudy.endpoint, and the study's
// viewer URL as an extension.

const (
	// ViewerURLExtension is the FHIR extension carrying a study's viewer
	// link. An extension's url SHALL be a URL, not a URN (FHIR R4 2.21.0.1).
	ViewerURLExtension = "https://radbridge.dev/fhir/StructureDefinition/viewer-url"
	endpointConnType   = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
	wadoEndpointID     = "wado"
)

// ViewerURL fills the placeholders {{study}}, {{accession}} and {{patient}}
// of template with the values, escaped so they are safe in a path segment
// and in a query (space as %20, never +). An empty template gives "".
func ViewerURL(template, study, accession, patient string) string {
	if template == "" {
		return ""
	}
	esc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	return strings.NewReplacer(
		"{{study}}", esc(study),
		"{{accession}}", esc(accession),
		"{{patient}}", esc(patient),
	).Replace(template)
}

// studyLinks adds to the ImagingStudy res of st the WADO-RS endpoint and the
// viewer extension that o configures, and returns the viewer URL ("" when
// none).
func studyLinks(res map[string]any, st *StudyState, o Options) string {
	if o.WADORSBase != "" {
		res["contained"] = []any{map[string]any{
			"resourceType": "Endpoint",
			"id":           wadoEndpointID,
			"status":       "active",
			"connectionType": map[string]any{
				"system": endpointConnType, "code": "dicom-wado-rs",
			},
			"payloadType": []any{map[string]any{"text": "DICOM"}},
			"address":     o.WADORSBase,
		}}
		res["endpoint"] = []any{map[string]any{"reference": "#" + wadoEndpointID}}
	}
	viewer := ViewerURL(o.ViewerURL, st.UID, st.AccessionNumber, st.PatientID)
	if viewer != "" {
		ext, _ := res["extension"].([]any)
		res["extension"] = append(ext, map[string]any{"url": ViewerURLExtension, "valueUrl": viewer})
	}
	return viewer
}
