package ingest

import (
	"encoding/json"
	"fmt"
	"time"
)

// Timer is a wake-up the mapper scheduled for one of its rules (the end of
// a study's quiet period), and the body of a KindTimer observation: it is
// recorded in the ingest log when it fires, so that a replay makes every
// decision at the same point of the log.
type Timer struct {
	Key  string          `json:"key"`
	Kind string          `json:"kind"` // the rule to wake
	At   time.Time       `json:"at"`
	Body json.RawMessage `json:"body,omitempty"`
}

// NewTimer builds the observation of t firing at now. The key names the
// timer and its due time, so a timer that fires twice for one due time
// (two mappers, a retry) is recorded once.
func NewTimer(t *Timer, now time.Time) (Observation, error) {
	body, err := json.Marshal(t)
	if err != nil {
		return Observation{}, fmt.Errorf("encode timer: %w", err)
	}
	return Observation{
		Kind: KindTimer, Key: "timer:" + t.Key + "@" + t.At.Format(time.RFC3339Nano),
		Time: now.UTC(), Source: Source{Protocol: "radbridge"}, Body: body,
	}, nil
}

// DecodeTimer returns the body of a KindTimer observation.
func DecodeTimer(o Observation) (*Timer, error) {
	var v Timer
	return &v, decode(o, KindTimer, &v)
}
