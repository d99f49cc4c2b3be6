package mapper

import "time"

// SetDICOMZone sets the zone DICOM study dates and times are read in, so
// tests do not depend on the machine's; it returns the restore.
func SetDICOMZone(loc *time.Location) (restore func()) {
	old := dicomZone
	dicomZone = loc
	return func() { dicomZone = old }
}

// ViewedRule is the rule mapper.New installs for ingest.KindViewed.
var ViewedRule Rule = RuleFunc(viewed)

// EncodeState is the snapshot's state encoder.
var EncodeState = encodeState

// EncodeSnapshotRaw wraps a state's JSON as a snapshot at ingest sequence
// 0 (tests of states written by older versions).
func EncodeSnapshotRaw(body []byte) []byte {
	return encodeSnapshot(body, Position{NextSeq: 1}, "", time.Time{})
}
