package part10

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkCommit writes and commits files into one series directory, as
// the SCP does with --store-dir, from 1 and 4 goroutines (associations;
// run with -cpu 1, SetParallelism multiplies GOMAXPROCS).
func BenchmarkCommit(b *testing.B) {
	for _, kb := range []int{64, 512, 8192} {
		for _, par := range []int{1, 4} {
			b.Run(fmt.Sprintf("%dKB/par%d", kb, par), func(b *testing.B) {
				dir := b.TempDir()
				chunk := make([]byte, 64<<10)
				var seq atomic.Int64
				b.SetBytes(int64(kb) << 10)
				b.SetParallelism(par)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						f, err := Create(dir)
						if err != nil {
							b.Error(err)
							return
						}
						for w := 0; w < kb; w += 64 {
							_, _ = f.Write(chunk)
						}
						if _, err := f.Commit("1.2", "1.2.3", fmt.Sprintf("1.2.3.%d", seq.Add(1))); err != nil {
							b.Error(err)
						}
						f.Discard()
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "files/s")
			})
		}
	}
}
