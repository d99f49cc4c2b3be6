package app

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"radbridge/internal/metrics"
)

// metricsPattern is where the HTTP front serves the Prometheus metrics.
const metricsPattern = "GET /metrics"

// Metrics is the daemon's Prometheus registry. Components register their
// collectors on it at start (see package internal/metrics); GET /metrics
// serves it.
func (d *Daemon) Metrics() *prometheus.Registry { return d.metrics }

// MetricsAddr is the bound --metrics-addr ("" when off).
func (d *Daemon) MetricsAddr() string {
	if d.metricsLn == nil {
		return ""
	}
	return d.metricsLn.Addr().String()
}

// metricsServer serves only GET /metrics, without authentication.
func metricsServer(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(metricsPattern, metrics.Handler(reg))
	return mux
}
