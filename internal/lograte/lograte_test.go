package lograte

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(2, time.Second)
	l.now = func() time.Time { return now }
	type step struct {
		advance    time.Duration
		key        string
		ok         bool
		suppressed int
	}
	for i, s := range []step{
		{0, "a", true, 0},
		{0, "a", true, 0},
		{0, "a", false, 0},
		{0, "b", true, 0}, // keys are independent
		{100 * time.Millisecond, "a", false, 0},
		{time.Second, "a", true, 2}, // a new interval reports what was left out
		{0, "a", true, 0},
		{0, "a", false, 0},
	} {
		now = now.Add(s.advance)
		ok, n := l.Allow(s.key)
		if ok != s.ok || n != s.suppressed {
			t.Errorf("step %d (%s): got %v %d, want %v %d", i, s.key, ok, n, s.ok, s.suppressed)
		}
	}
}
