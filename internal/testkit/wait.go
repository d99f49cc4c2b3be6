package testkit

import (
	"testing"
	"time"
)

// Poll checks cond until it holds, for at most limit, and reports whether
// it held. It checks again after 10 ms, then half as long again each time
// up to every 100 ms: a condition that holds soon is seen soon, and a long
// wait does not load a shared machine. For a caller with its own failure
// message, or a goroutine that must not call Fatal.
func Poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	pause := 10 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(min(pause, max(time.Until(deadline), time.Millisecond)))
		pause = min(pause*3/2, 100*time.Millisecond)
	}
}

// Eventually fails the test when cond does not hold within limit.
func Eventually(tb testing.TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !Poll(limit, cond) {
		tb.Fatalf("%s: not within %v", what, limit)
	}
}

// EventuallyState is Eventually for a condition that also says what it
// saw; the last state is in the failure message.
func EventuallyState(tb testing.TB, limit time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	var state string
	if !Poll(limit, func() (ok bool) { ok, state = cond(); return ok }) {
		tb.Fatalf("%s: not within %v; last: %s", what, limit, state)
	}
}
