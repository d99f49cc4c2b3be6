// Package operator serves the operator's questions to the mapper and the
// corrections they make: why a study, order or patient looks as it does
// (GET /v1/explain), the exceptions worklist (GET /v1/exceptions) and its
// radbridge_exceptions metric, and corrections and dead-letter retries
// (POST /v1/reconcile), which it records in the ingest log for the mapper
// to apply. Only the process that maps answers; a follower of a cluster
// says where to ask. Unrestricted guards the other operational data
// (metrics, status) from tokens limited to some patients.
package operator

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"radbridge/auth"
	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Mappers gives the mapper this process runs (mapper/leased): nil while
// it does not map (a follower of a cluster).
type Mappers interface {
	Current() *mapper.Mapper
}

// Events reads the event log: an explanation lists the events about
// what it explains.
type Events interface {
	Read(ctx context.Context, from uint64, f eventlog.Filter, max int) ([]*rbv1.Event, error)
}

// DeadLetters lists the ingest records the mapper passed over.
type DeadLetters interface {
	DeadLetters(ctx context.Context) ([]mapper.DeadLetter, error)
}

// Records reads an ingest record back (what a dead letter concerns).
type Records interface {
	Get(ctx context.Context, seq uint64) (ingest.Record, error)
}

// Appender records a correction in the ingest log.
type Appender interface {
	Append(ctx context.Context, o ingest.Observation) (seq uint64, dup bool, err error)
}

// Config is what the operator endpoints read and write.
type Config struct {
	Mapper      Mappers
	Events      Events
	DeadLetters DeadLetters
	Ingest      Records
	// Corrections records corrections and retries (the ingest log).
	Corrections Appender
	Auth        auth.Authenticator
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// recorded with a correction (api.ClientAddr).
	TrustedProxies []netip.Prefix
	// Exceptions are the worklist's thresholds.
	Exceptions rules.ExceptionRules
	// Logger gets the audit line of each correction; nil: discarded.
	Logger *slog.Logger
}

// Server serves the operator endpoints.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New returns the operator endpoints over cfg.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log}
}

// Routes are the endpoints by the http.ServeMux pattern to mount them at.
func (s *Server) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		ExplainPattern:    s.explainHandler(),
		ExceptionsPattern: s.exceptionsHandler(),
		ReconcilePattern:  s.reconcileHandler(),
	}
}

// Collector exports radbridge_exceptions{kind}, the worklist's items by
// kind (dead letters included), computed at each scrape.
func (s *Server) Collector() prometheus.Collector { return newExceptionsCollector(s) }

// Unrestricted lets a request to h through when it authenticates and its
// token is not limited to some patients (operational data such as the
// metrics and the daemon's status is not a viewer's); a restricted token
// gets 403.
func Unrestricted(a auth.Authenticator, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pr, ok := auth.HTTP(w, r, a)
		if !ok {
			return
		}
		if pr.Restricted() {
			http.Error(w, "this token is limited to some patients; operational data needs an unrestricted token", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
