package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"radbridge/fanout"
)

// Transports are the subscriber transports always reported (zero when
// none are open), so that dashboards see the series from the start.
var Transports = []string{"grpc", "websocket", "room"}

// SubscriberStats is what the fan-out hub reports (*fanout.Hub).
type SubscriberStats interface{ Stats() fanout.Stats }

type subscriberCollector struct {
	src        SubscriberStats
	open, slow *prometheus.Desc
}

// NewSubscriberCollector reads the hub's subscriber counters at scrape
// time.
func NewSubscriberCollector(src SubscriberStats) prometheus.Collector {
	return &subscriberCollector{
		src:  src,
		open: prometheus.NewDesc(Namespace+"_subscribers", "Event subscribers connected now, by transport (grpc: Subscribe, also through the REST gateway; websocket: /v1/events:stream; room: /ws; internal: the thumbnail worker).", []string{"transport"}, nil),
		slow: prometheus.NewDesc(Namespace+"_subscriber_slow_disconnects_total", "Subscribers disconnected because they fell further behind than the in-memory window (--subscriber-window); they resume from their cursor.", []string{"transport"}, nil),
	}
}

func (c *subscriberCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.slow
}

func (c *subscriberCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	open := map[string]int64{}
	slow := map[string]uint64{}
	for _, t := range Transports {
		open[t], slow[t] = 0, 0
	}
	for t, n := range st.Subscribers {
		open[t] += n
	}
	for t, n := range st.SlowDisconnects {
		slow[t] += n
	}
	for t, n := range open {
		ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(n), t)
	}
	for t, n := range slow {
		ch <- prometheus.MustNewConstMetric(c.slow, prometheus.CounterValue, float64(n), t)
	}
}
