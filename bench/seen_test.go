package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"radbridge/mapper"
	"radbridge/store"
)

// BenchmarkMapperSeenStore measures what keeping the observation keys in
// the store (mapper.Config.Seen) costs the mapper: a full replay of 20,000
// observations (RADBRIDGE_BENCH_OBSERVATIONS) with a snapshot every 5,000
// records, the keys in memory ("memory", as before) against the keys in
// the RADBRIDGE_SEEN bucket ("store": one read per key on the mapper's
// goroutine, the new keys written before each snapshot). Events are in the
// log already, so no append is timed. records/s is the figure to compare.
func BenchmarkMapperSeenStore(b *testing.B) {
	n := startupObservations()
	dir := filepath.Join(b.TempDir(), "data")
	fillStartupStore(b, dir, n)
	st, err := store.Open(context.Background(), store.Config{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for _, mode := range []string{"memory", "store"} {
		b.Run(fmt.Sprintf("%s/observations=%d", mode, n), func(b *testing.B) {
			var took time.Duration
			for range b.N {
				cfg := startupConfig(st, false)
				cfg.Snapshots, cfg.SnapshotEvery = &mapper.MemorySnapshots{}, 5000
				if mode == "store" {
					cfg.Seen = st.Seen()
				}
				m := mapper.New(cfg)
				start := time.Now()
				runUntilReady(b, m)
				took += time.Since(start)
				if s := m.Stats(); s.Applied != uint64(n) {
					b.Fatalf("applied %d of %d", s.Applied, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/took.Seconds(), "records/s")
		})
	}
}
