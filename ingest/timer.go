package ingest

import (
	"encoding/json"
	"fmt"
	"strconv"
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
	// Armed is the ingest sequence of the record that set the timer (0 in
	// timers set before it was kept). It makes every arming's firing a
	// record of its own: a timer set again for the same due time must fire
	// again, not be taken for a resend of the earlier firing.
	Armed uint64 `json:"armed,omitempty"`
}

// NewTimer builds the observation of t firing at now. The key names the
// timer, its due time and the record that armed it, so one arming that
// fires twice (two mappers, a retry) is recorded once, and a new arming
// always fires.
func NewTimer(t *Timer, now time.Time) (Observation, error) {
	body, err := json.Marshal(t)
	if err != nil {
		return Observation{}, fmt.Errorf("encode timer: %w", err)
	}
	return Observation{
		Kind: KindTimer, Key: timerKey(t),
		Time: now.UTC(), Source: Source{Protocol: "radbridge"}, Body: body,
	}, nil
}

// DecodeTimer returns the body of a KindTimer observation.
func DecodeTimer(o Observation) (*Timer, error) {
	var v Timer
	return &v, decode(o, KindTimer, &v)
}

func timerKey(t *Timer) string {
	k := "timer:" + t.Key + "@" + t.At.Format(time.RFC3339Nano)
	if t.Armed != 0 {
		k += "#" + strconv.FormatUint(t.Armed, 10)
	}
	return k
}

// KindRetry asks the mapper to map a dead-lettered record again (after a
// fix), at the log's head; the body is a Retry.
const KindRetry = "mapper.retry"

// Retry is the body of a KindRetry observation.
type Retry struct {
	// Seq is the ingest sequence of the record to map again.
	Seq uint64 `json:"seq"`
	// Actor and Reason: who asked through the API (POST /v1/reconcile,
	// the token's subject) and why; empty for radbridge replay
	// --retry-dead-letters.
	Actor  string `json:"actor,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// NewRetry builds the observation asking for record seq to be mapped
// again; each request is a record of its own.
func NewRetry(seq uint64, now time.Time) (Observation, error) {
	body, err := json.Marshal(Retry{Seq: seq})
	if err != nil {
		return Observation{}, fmt.Errorf("encode retry: %w", err)
	}
	return Observation{
		Kind: KindRetry, Key: "retry:" + strconv.FormatUint(seq, 10) + "@" + now.UTC().Format(time.RFC3339Nano),
		Time: now.UTC(), Source: Source{Protocol: "radbridge"}, Body: body,
	}, nil
}

// NewRetryBy is NewRetry asked by an operator through the API.
func NewRetryBy(seq uint64, actor, reason, client string, now time.Time) (Observation, error) {
	body, err := json.Marshal(Retry{Seq: seq, Actor: actor, Reason: reason})
	if err != nil {
		return Observation{}, fmt.Errorf("encode retry: %w", err)
	}
	return Observation{
		Kind: KindRetry, Key: "retry:" + strconv.FormatUint(seq, 10) + "@" + now.UTC().Format(time.RFC3339Nano),
		Time: now.UTC(), Source: Source{Protocol: "api", Client: client}, Body: body,
	}, nil
}

// DecodeRetry returns the body of a KindRetry observation.
func DecodeRetry(o Observation) (*Retry, error) {
	var v Retry
	return &v, decode(o, KindRetry, &v)
}
