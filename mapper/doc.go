// Package mapper is radbridge's deterministic projection: it reads the ingest
// log in order, keeps the current state (patients and their studies, orders
// and reports), has the mapping rules (package rules) decide which events
// follow from each observation and appends them to the event log. Events
// carry FHIR R4 resources. This package is the engine around the rules:
// the apply loop, deduplication of resends, timers, snapshots, the archive
// of cold patients, dead letters and replay.
//
// Because the mapper only reads the ingest log, its state is rebuilt by
// replaying that log at start: events whose key (ingest sequence, index) is
// already in the event log are recognised and not appended again, so a crash
// between an append and anything after it neither loses nor duplicates
// events. Timers (a study's quiet period) are state too: when one fires the
// mapper appends a timer observation to the ingest log and acts when it reads
// it back, so a replay makes the same decisions.
package mapper
