// Package rules is the mapper's mapping: what follows from each
// observation. It is a pure function from (State, observation) to (State,
// events), entered through Map (or its two steps, Derive and Link): HL7 v2
// orders and results (ORM^O01, OMI^O23, ORU^R01; HL7 v2.5.1 chapter 4 and
// 7) become FHIR R4 ServiceRequests and DiagnosticReports; DICOM instances
// (C-STORE, STOW-RS; PS3.4), Instance Availability Notifications (PS3.4
// Annex R) and MPPS (PS3.4 Annex F) become ImagingStudies and tell when a
// study is complete; orders, studies and reports sharing an accession
// number are joined (IHE SWF). It also answers questions about the state
// (Explain, Exceptions, CheckReconcile).
//
// The rules neither read logs nor write stores: the engine (package
// mapper) orders the observations, recognises resends, fires timers,
// numbers and appends the events, keeps snapshots and the archive of cold
// patients, which the State's accessors reach through a Reloader.
package rules
