// Package fhir serves radbridge's imaging resources as a FHIR R4 (4.0.1)
// read API under /fhir, in application/fhir+json: read and search-type
// interactions for ImagingStudy, DiagnosticReport and ServiceRequest, and
// the CapabilityStatement at /fhir/metadata. Errors are OperationOutcome
// resources.
//
// The resources are those the event log carries (every event carries the
// whole resource it is about): an index that follows the event log keeps,
// per resource, each version's event sequence and the values the search
// parameters match, by resource, patient and identifier value, so a search
// touches its patient's (or identifier's) resources only, never every
// resource; the page's resources are then read back from the event log by
// sequence. Hence meta.versionId is the sequence of the event that last
// changed the resource and meta.lastUpdated that event's time, exactly,
// and the read models' content (GET /v1/patients/{id}/imaging) is the same
// resource.
//
// Consistency: a request first waits (bounded) until the index holds every
// event the log held when the request came, and its answer reflects the
// event log up to one sequence, named in the X-Radbridge-Event-Seq header
// (and a searchset Bundle's meta extension
// https://radbridge.dev/fhir/StructureDefinition/event-sequence). A
// search's next links carry an opaque cursor holding that sequence and an
// offset: every page is the same search as of the same sequence, so paging
// while events arrive neither skips nor repeats a resource (each page
// shows the version current at that sequence).
//
// Authentication and scoping are those of the rest of the API (package
// auth): a bearer token; a token scoped to patients gets 403 for a search
// naming another patient, 404 for another patient's resource, and searches
// whose totals count only its patients. /fhir/metadata needs no token.
//
// The Subscriptions R5 Backport IG (package fhir/subscription) plugs in
// through Config.Topics, Config.Extra and Config.Resources.
package fhir
