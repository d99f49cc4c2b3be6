package fhir

import (
	"net/http"
	"slices"
)

// TopicCanonicalExtension is the Subscriptions R5 Backport IG extension
// that lists a SubscriptionTopic on CapabilityStatement.rest.resource
// Subscription.
const TopicCanonicalExtension = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"

// capabilityDate is the date of this CapabilityStatement's content.
const capabilityDate = "2026-12-07"

// paramDocs documents each search parameter.
var paramDocs = map[string]struct{ typ, doc string }{
	"_id":          {"token", "the resource id; comma-separated alternatives"},
	"patient":      {"reference", "the radbridge patient id (Patient/<id> or <id>, as in /v1/patients/{id}), or patient:identifier=<system>|<value> (the resource's subject.identifier)"},
	"subject":      {"reference", "the same as patient"},
	"identifier":   {"token", "<system>|<value>, |<value> (no system) or <value> (any system): the accession number, and for ImagingStudy the Study Instance UID as urn:oid:<uid> (system urn:dicom:uid); comma-separated alternatives"},
	"status":       {"token", "the resource's status; comma-separated alternatives"},
	"modality":     {"token", "a series modality code (DICOM DCM: CT, MR …), optionally <system>|<code>"},
	"based-on":     {"reference", "the order: ServiceRequest/<id> or <id>"},
	"_lastUpdated": {"date", "meta.lastUpdated (the time of the event that last changed the resource) with prefix eq, ne, gt, lt, ge or le; repeat for a range"},
}

// capabilityStatement builds the CapabilityStatement.
func (h *Handler) capabilityStatement(base string) map[string]any {
	var resources []any
	for _, typ := range []string{typeStudy, typeReport, typeRequest} {
		var params []any
		for _, p := range append(slices.Clone(searchParams[typ]), "_lastUpdated") {
			d := paramDocs[p]
			params = append(params, map[string]any{"name": p, "type": d.typ, "documentation": d.doc})
		}
		resources = append(resources, map[string]any{
			"type":              typ,
			"interaction":       []any{map[string]any{"code": "read"}, map[string]any{"code": "search-type"}},
			"versioning":        "versioned",
			"readHistory":       false,
			"conditionalRead":   "not-supported",
			"searchParam":       params,
			"documentation":     "meta.versionId is the event-log sequence of the event that last changed the resource, meta.lastUpdated that event's time; _sort=-_lastUpdated (default) or _lastUpdated; _count up to 100",
			"updateCreate":      false,
			"conditionalCreate": false,
		})
	}
	subscription := -1
	for _, r := range h.cfg.Resources {
		if r["type"] == "Subscription" {
			subscription = len(resources)
		}
		resources = append(resources, cloneMap(r))
	}
	if len(h.cfg.Topics) > 0 {
		if subscription < 0 {
			subscription = len(resources)
			resources = append(resources, map[string]any{"type": "Subscription"})
		}
		sub := resources[subscription].(map[string]any)
		ext, _ := sub["extension"].([]any)
		ext = slices.Clone(ext) // the entry is a shallow copy of Config's
		for _, t := range h.cfg.Topics {
			ext = append(ext, map[string]any{"url": TopicCanonicalExtension, "valueCanonical": t})
		}
		sub["extension"] = ext
	}
	version := h.cfg.Version
	if version == "" {
		version = "devel"
	}
	return map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         capabilityDate,
		"publisher":    "radbridge",
		"kind":         "instance",
		"software":     map[string]any{"name": "radbridge", "version": version},
		"implementation": map[string]any{
			"description": "radbridge FHIR R4 read API: imaging studies, reports and orders derived from DICOM and HL7 v2",
			"url":         base,
		},
		"fhirVersion": "4.0.1",
		"format":      []any{"json"},
		"rest": []any{map[string]any{
			"mode":          "server",
			"documentation": "Every search and read answer carries " + SeqHeader + ": the event-log sequence it reflects (a searchset Bundle also in the meta extension " + SeqExtension + ").",
			"security": map[string]any{
				"description": "Bearer tokens as for the rest of the radbridge API (--auth); a token scoped to patients sees only their resources.",
			},
			"resource": resources,
		}},
	}
}

func cloneMap(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// metadata answers GET /fhir/metadata. It needs no token: it names no
// patient data, and clients read it before they authenticate.
func (h *Handler) metadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.capabilityStatement(h.baseURL(r)))
}
