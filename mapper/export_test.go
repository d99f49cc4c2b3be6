package mapper

import (
	"time"
)

// EncodeState is the snapshot's state encoder.
var EncodeState = encodeState

// EncodeSnapshotRaw wraps a state's JSON as a snapshot at ingest sequence
// 0 (tests of states written by older versions).
func EncodeSnapshotRaw(body []byte) []byte {
	return encodeSnapshot(body, Position{NextSeq: 1}, "", time.Time{})
}
