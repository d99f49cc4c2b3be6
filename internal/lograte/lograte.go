// Package lograte bounds the log lines that hostile or broken peers can
// cause: a flood of connections, each rejected or timed out, would
// otherwise write one line per connection (filling disks and making the
// log writer the daemon's bottleneck). A Limiter lets through a burst of
// lines per kind of event each interval and counts the rest, so that the
// next line written says how many were left out.
package lograte

import (
	"sync"
	"time"
)

// Limiter allows up to Burst lines per key each Interval. The zero value
// is not usable; create it with New. It is safe for concurrent use.
type Limiter struct {
	burst    int
	interval time.Duration
	now      func() time.Time
	mu       sync.Mutex
	keys     map[string]*window
}

type window struct {
	start      time.Time
	n          int
	suppressed int
}

// New returns a Limiter allowing burst lines per key each interval.
func New(burst int, interval time.Duration) *Limiter {
	return &Limiter{burst: max(burst, 1), interval: interval, now: time.Now, keys: make(map[string]*window)}
}

// Allow reports whether a line for key may be written now and, when it
// may, how many lines for key were suppressed since the last one written.
// Keys must come from a small fixed set (message names), never from
// peer data.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	w := l.keys[key]
	if w == nil {
		w = &window{start: now}
		l.keys[key] = w
	}
	if now.Sub(w.start) >= l.interval {
		w.start, w.n = now, 0
	}
	if w.n >= l.burst {
		w.suppressed++
		return false, 0
	}
	w.n++
	suppressed, w.suppressed = w.suppressed, 0
	return true, suppressed
}
