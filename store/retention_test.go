package store

import (
	"context"
	"testing"
)

// TestSizeEdge: the estimate of the first sequence to keep so that the log
// holds at most the limit, from its average record size.
func TestSizeEdge(t *testing.T) {
	for _, tc := range []struct {
		name               string
		msgs, bytes, first uint64
		limit              uint64
		want               uint64
	}{
		{"empty", 0, 0, 1, 100, 0},
		{"under the limit", 10, 1000, 1, 1000, 0},
		{"one record over", 10, 1000, 1, 900, 2},
		{"half over, from a later first", 10, 1000, 41, 500, 46},
		{"a partial record rounds up", 10, 1000, 1, 950, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			usage := func(context.Context) (uint64, uint64, error) { return tc.msgs, tc.bytes, nil }
			bounds := func(context.Context) (uint64, uint64, error) { return tc.first, tc.first + tc.msgs - 1, nil }
			if got := sizeEdge(context.Background(), usage, bounds, tc.limit); got != tc.want {
				t.Errorf("sizeEdge = %d, want %d", got, tc.want)
			}
		})
	}
}
