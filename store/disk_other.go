//go:build !linux && !darwin

package store

// diskSpace is unknown on this platform: the embedded JetStream keeps its
// own quota (75% of the free space at start).
func diskSpace(string) (free, total int64, ok bool) { return 0, 0, false }
