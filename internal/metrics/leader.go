package metrics

import "github.com/prometheus/client_golang/prometheus"

// Leader is the mapper under the cluster's mapper lease (mapper/leased).
type Leader interface {
	Leading() bool
	Terms() uint64
}

// NewLeaderCollectors export whether this process maps now, and how many
// terms it has won (more than one means failovers happened).
func NewLeaderCollectors(s Leader) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "mapper_leader",
			Help: "1 while this process runs the mapper (always 1 on the embedded store; with --nats-url, the holder of the mapper lease).",
		}, func() float64 {
			if s.Leading() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: Namespace, Name: "mapper_leader_terms_total",
			Help: "Times this process became the mapper leader.",
		}, func() float64 { return float64(s.Terms()) }),
	}
}
