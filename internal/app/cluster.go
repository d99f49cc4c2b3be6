package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"radbridge/api"
	"radbridge/internal/config"
	"radbridge/internal/metrics"
	"radbridge/internal/tlsconf"
	"radbridge/leader"
	"radbridge/mapper"
	rbv1 "radbridge/proto/radbridge/v1"
)

// errNotLeading means this process does not run the mapper now.
var errNotLeading = errors.New("this process is not the mapper leader")

// mappers runs the mapper. On the embedded store the process is alone and
// always maps. On an external store several processes may share the logs,
// and only the holder of the mapper lease maps: the event log has a single
// writer. Every term starts a fresh mapper, which rebuilds its state from
// the newest snapshot and the ingest log after it, so a new leader
// continues exactly where the old one's appended events end.
type mappers struct {
	newMapper func() *mapper.Mapper
	elector   *leader.Elector // nil: always the leader

	mu   sync.Mutex
	cur  *mapper.Mapper
	last *mapper.Mapper // the newest mapper, kept for its counters
}

// Run maps until ctx ends: at once when alone, else in every term this
// process wins.
func (s *mappers) Run(ctx context.Context) error {
	if s.elector == nil {
		return s.term(ctx)
	}
	return s.elector.Run(ctx, s.term)
}

func (s *mappers) term(ctx context.Context) error {
	m := s.newMapper()
	s.mu.Lock()
	s.cur, s.last = m, m
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cur = nil
		s.mu.Unlock()
	}()
	return m.Run(ctx)
}

// Current returns the running mapper (nil on a follower).
func (s *mappers) Current() *mapper.Mapper {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Latest returns the newest mapper this process ran (nil if none yet).
func (s *mappers) Latest() *mapper.Mapper {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

var _ api.Leader = (*mappers)(nil)

// Leading reports whether this process maps now.
func (s *mappers) Leading() bool { return s.Current() != nil }

// Clustered reports whether the process shares its store with others.
func (s *mappers) Clustered() bool { return s.elector != nil }

// Ready reports whether the process can serve: a follower serves from the
// event log at once; the leader once its mapper has caught up.
func (s *mappers) Ready() bool {
	m := s.Current()
	if m == nil {
		return s.elector != nil
	}
	return m.Ready()
}

// Applied is the last ingest sequence the running mapper applied (0 on a
// follower).
func (s *mappers) Applied() uint64 {
	if m := s.Current(); m != nil {
		return m.Applied()
	}
	return 0
}

// Await implements api.Awaiter on the leader; a follower answers
// errNotLeading and the API waits for the event in the event log instead.
func (s *mappers) Await(ctx context.Context, seq uint64) ([]*rbv1.Event, error) {
	m := s.Current()
	if m == nil {
		return nil, errNotLeading
	}
	return m.Await(ctx, seq)
}

// Status is the election's state ("" role when alone).
func (s *mappers) Status() (role, holder string) {
	if s.elector == nil {
		return "single", ""
	}
	st := s.elector.Status()
	if st.Leading {
		return "leader", st.Holder
	}
	return "follower", st.Holder
}

// nodeID is the configured id or the hostname with a random suffix, so two
// processes on one host differ.
func nodeID(configured string) string {
	if configured != "" {
		return configured
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "radbridge"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// clusterMetrics: whether this process maps now, and how many terms it
// has won (more than one means failovers happened).
func clusterMetrics(s *mappers) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metrics.Namespace, Name: "mapper_leader",
			Help: "1 while this process runs the mapper (always 1 on the embedded store; with --nats-url, the holder of the mapper lease).",
		}, func() float64 {
			if s.Leading() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Name: "mapper_leader_terms_total",
			Help: "Times this process became the mapper leader.",
		}, func() float64 {
			if s.elector == nil {
				return 1
			}
			return float64(s.elector.Status().Terms)
		}),
	}
}

// natsClientTLS is the TLS configuration of the connection to an external
// NATS (nil: as the URL says).
func natsClientTLS(cfg *config.Config) (*tls.Config, error) {
	if cfg.NATSTLSCAFile == "" && cfg.NATSTLSCertFile == "" {
		return nil, nil
	}
	c, err := tlsconf.ClientConfig(tlsconf.ClientFiles{CAFile: cfg.NATSTLSCAFile, CertFile: cfg.NATSTLSCertFile, KeyFile: cfg.NATSTLSKeyFile})
	if err != nil {
		return nil, fmt.Errorf("NATS TLS: %w", err)
	}
	return c, nil
}
