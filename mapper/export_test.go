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
