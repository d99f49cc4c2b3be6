package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"radbridge/internal/connlimit"
)

type httpCollector struct {
	src                      []*connlimit.Listener
	open, accepted, rejected *prometheus.Desc
}

// NewHTTPCollector reads the HTTP listeners' connection counters (--http-addr
// and --https-addr, summed) at scrape time.
func NewHTTPCollector(listeners ...*connlimit.Listener) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_"+name, help, nil, nil)
	}
	return &httpCollector{
		src:      listeners,
		open:     d("http_connections_open", "HTTP and HTTPS connections open now (WebSockets included)."),
		accepted: d("http_connections_total", "HTTP and HTTPS connections accepted and served."),
		rejected: d("http_connections_rejected_total", "HTTP connections answered 503 and closed at once, and HTTPS connections closed at once, because --http-max-connections were open on their listener."),
	}
}

func (c *httpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.accepted
	ch <- c.rejected
}

func (c *httpCollector) Collect(ch chan<- prometheus.Metric) {
	var sum connlimit.Stats
	for _, l := range c.src {
		st := l.Stats()
		sum.Open += st.Open
		sum.Accepted += st.Accepted
		sum.Rejected += st.Rejected
	}
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(sum.Open))
	ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.CounterValue, float64(sum.Accepted))
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(sum.Rejected))
}
