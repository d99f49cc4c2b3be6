package testkit

import (
	"testing"
	"time"
)

// Interval is how often Eventually and Poll check their condition.
const Interval = 20 * time.Millisecond

// Poll checks cond every Interval until it holds, for at most limit, and
// reports whether it held. For a caller with its own failure message, or a
// goroutine that must not call Fatal.
func Poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Interval)
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
