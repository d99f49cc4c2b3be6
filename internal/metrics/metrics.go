// Package metrics is radbridge's Prometheus plumbing: one registry per
// daemon (not the global default, so that tests can run several daemons in
// one process), the /metrics handler, and collectors that read the counters
// the other packages already keep (receiver.Stats, scp.Stats, mapper.Stats,
// fanout.Hub.Stats) at scrape time, so that those packages need not import
// Prometheus.
//
// # Adding metrics from other code
//
// The daemon creates the registry in app.Start (NewRegistry) before anything
// else and exposes it as (*app.Daemon).Metrics(); inside Start it is d.metrics.
// Register a collector or a metric vector on it once, at start:
//
//	leader := prometheus.NewGauge(prometheus.GaugeOpts{
//		Name: "radbridge_cluster_leader",
//		Help: "1 while this process is the mapper leader.",
//	})
//	d.metrics.MustRegister(leader)
//
// Or, for values a component already keeps, a GaugeFunc / CounterFunc:
//
//	d.metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
//		Name: "radbridge_snapshots_written_total",
//		Help: "Mapper state snapshots written.",
//	}, func() float64 { return float64(snap.Written()) }))
//
// Conventions (checked by TestMetricNamesLint with promlint): names start
// with radbridge_, use base units (_seconds, _bytes), counters end in
// _total; label values are bounded sets chosen by us (message types we
// support, ACK codes, event types, transports). Never a patient id,
// accession number, UID, AE title or other value a peer chooses.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every radbridge metric.
const Namespace = "radbridge"

// NewRegistry returns a registry with the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves reg in the Prometheus text (or OpenMetrics, when asked)
// exposition format. A collector that fails is reported in the output and
// in promhttp_metric_handler_errors_total; the rest is still served.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		Timeout:           10 * time.Second,
	})
}

// Build registers radbridge_build_info (always 1) with the version labels,
// and radbridge_start_time_seconds.
func Build(reg prometheus.Registerer, version, goVersion, revision string, started time.Time) {
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels say which radbridge is running.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion, "revision": revision},
	})
	info.Set(1)
	start := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "start_time_seconds",
		Help: "When the daemon started, in seconds since the Unix epoch.",
	})
	start.Set(float64(started.UnixNano()) / 1e9)
	reg.MustRegister(info, start)
}
