package app

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"radbridge/fanout"
	"radbridge/internal/config"
	"radbridge/internal/metrics"
	"radbridge/store"
)

// retention trims the ingest log (never beyond what the oldest kept
// snapshot covers) and watches the event log's retention edge, which
// JetStream moves itself (--events-max-age, --events-max-bytes).
type retention struct {
	cfg *config.Config
	st  *store.Store
	hub *fanout.Hub
	log *slog.Logger

	mu    sync.Mutex
	stats RetentionStats
}

// RetentionStats is what the retention worker saw last.
type RetentionStats struct {
	// EventsFirst is the oldest retained event sequence; OldestEventAge
	// its age.
	EventsFirst    uint64
	OldestEventAge time.Duration
	// NearEdge counts live subscribers whose cursor is within the margin
	// of the retention edge.
	NearEdge int
	// IngestFirst is the oldest retained ingest sequence; IngestTrimmed
	// counts records trimmed since start.
	IngestFirst   uint64
	IngestTrimmed uint64
}

// Stats returns the latest figures.
func (r *retention) Stats() RetentionStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Run checks every --retention-interval until ctx ends.
func (r *retention) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.RetentionInterval)
	defer t.Stop()
	for {
		r.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (r *retention) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	trimmed := r.trimIngest(ctx)
	in := r.st.Ingest()
	ingestFirst, err := in.First(ctx)
	if err != nil {
		r.log.Warn("retention: ingest log", "err", err)
	}
	ev := r.st.Events()
	first, _, err := ev.Bounds(ctx)
	if err != nil {
		r.log.Warn("retention: event log", "err", err)
		return
	}
	r.hub.SetFloor(first)
	var age time.Duration
	if oldest, err := ev.Oldest(ctx); err == nil && !oldest.IsZero() {
		age = time.Since(oldest)
	}
	near := 0
	if edge := r.edgeSoon(ctx); edge > first {
		if near = r.hub.CountBehind(edge); near > 0 {
			r.log.Warn("live subscribers are about to fall off the event log's retained history; they will get OUT_OF_RANGE when they resume and must re-snapshot (GetPatientImaging) before following again",
				"component", "retention", "subscribers", near, "first_sequence", first, "removed_soon_before", edge)
		}
	}
	r.mu.Lock()
	r.stats.EventsFirst, r.stats.OldestEventAge, r.stats.NearEdge = first, age, near
	r.stats.IngestFirst = ingestFirst
	r.stats.IngestTrimmed += trimmed
	r.mu.Unlock()
}

// edgeSoon returns the sequence before which JetStream removes events
// within the margin (a fraction of the age or size limit); 0 without
// limits.
func (r *retention) edgeSoon(ctx context.Context) uint64 {
	ev := r.st.Events()
	var edge uint64
	if a := r.cfg.EventsMaxAge; a > 0 {
		keep := time.Duration(float64(a) * (1 - r.cfg.RetentionMargin))
		if s, err := ev.FirstAtOrAfter(ctx, time.Now().Add(-keep)); err == nil {
			edge = max(edge, s)
		}
	}
	if b := r.cfg.EventsMaxBytes; b > 0 {
		if s := sizeEdge(ctx, ev.Usage, ev.Bounds, uint64(float64(b)*(1-r.cfg.RetentionMargin))); s > 0 {
			edge = max(edge, s)
		}
	}
	return edge
}

// sizeEdge estimates the sequence from which the log holds at most limit
// bytes, from its average record size (0 when under the limit).
func sizeEdge(ctx context.Context, usage func(context.Context) (uint64, uint64, error),
	bounds func(context.Context) (uint64, uint64, error), limit uint64) uint64 {
	msgs, bytes, err := usage(ctx)
	if err != nil || msgs == 0 || bytes <= limit {
		return 0
	}
	first, _, err := bounds(ctx)
	if err != nil {
		return 0
	}
	avg := bytes / msgs
	return first + (bytes-limit+avg-1)/max(avg, 1)
}

// trimIngest removes ingest records older than --ingest-max-age or beyond
// --ingest-max-bytes, but only those the oldest kept snapshot covers: a
// start (or a fallback to an older snapshot) never needs a removed record.
func (r *retention) trimIngest(ctx context.Context) uint64 {
	if r.cfg.IngestMaxAge <= 0 && r.cfg.IngestMaxBytes <= 0 {
		return 0
	}
	seqs, err := r.st.Snapshots().Snapshots(ctx)
	if err != nil || len(seqs) == 0 {
		return 0 // nothing covers any record yet
	}
	cover := seqs[len(seqs)-1]
	in := r.st.Ingest()
	var cut uint64
	if a := r.cfg.IngestMaxAge; a > 0 {
		if s, err := in.FirstAtOrAfter(ctx, time.Now().Add(-a)); err == nil {
			cut = max(cut, s)
		}
	}
	if b := r.cfg.IngestMaxBytes; b > 0 {
		bounds := func(ctx context.Context) (uint64, uint64, error) {
			f, err := in.First(ctx)
			return f, 0, err
		}
		cut = max(cut, sizeEdge(ctx, in.Usage, bounds, uint64(b)))
	}
	cut = min(cut, cover+1)
	n, err := in.Trim(ctx, cut)
	if err != nil {
		r.log.Warn("retention: trim ingest log", "err", err)
		return 0
	}
	if n > 0 {
		r.log.Info("trimmed the ingest log", "component", "retention", "records", n, "first_kept", cut, "oldest_snapshot", cover)
	}
	return n
}

// register exposes the retention and snapshot figures.
func (r *retention) register(reg prometheus.Registerer, ms *mappers) {
	g := func(name, help string, f func(RetentionStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: name, Help: help},
			func() float64 { return f(r.Stats()) })
	}
	snap := func(f func(s snapshotFigures) float64) func() float64 {
		return func() float64 {
			if m := ms.Latest(); m != nil {
				s := m.SnapshotStats()
				return f(snapshotFigures{float64(s.Taken), float64(s.Failed), float64(s.LastApplied), float64(s.LastBytes), s.LastEncode.Seconds()})
			}
			return 0
		}
	}
	reg.MustRegister(
		g("event_log_first_sequence", "Oldest event sequence the event log retains; a client resuming before it gets OUT_OF_RANGE.",
			func(s RetentionStats) float64 { return float64(s.EventsFirst) }),
		g("event_log_oldest_event_age_seconds", "Age of the oldest retained event.",
			func(s RetentionStats) float64 { return s.OldestEventAge.Seconds() }),
		g("subscribers_near_retention_edge", "Live subscribers whose cursor is within --retention-margin of the event log's retention edge.",
			func(s RetentionStats) float64 { return float64(s.NearEdge) }),
		g("ingest_log_first_sequence", "Oldest ingest record retained.",
			func(s RetentionStats) float64 { return float64(s.IngestFirst) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "ingest_records_trimmed_total",
			Help: "Ingest records removed by --ingest-max-age or --ingest-max-bytes."}, func() float64 { return float64(r.Stats().IngestTrimmed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "mapper_snapshots_written_total",
			Help: "Mapper state snapshots written by this process's current or last mapper."}, snap(func(s snapshotFigures) float64 { return s.taken })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "mapper_snapshot_failures_total",
			Help: "Mapper state snapshots that could not be written."}, snap(func(s snapshotFigures) float64 { return s.failed })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: "mapper_snapshot_ingest_sequence",
			Help: "Ingest sequence covered by the newest snapshot written or loaded."}, snap(func(s snapshotFigures) float64 { return s.applied })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: "mapper_snapshot_bytes",
			Help: "Size of the newest snapshot written."}, snap(func(s snapshotFigures) float64 { return s.bytes })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: "mapper_snapshot_encode_seconds",
			Help: "Time the mapper paused to encode the newest snapshot (it is written in the background)."}, snap(func(s snapshotFigures) float64 { return s.encode })),
	)
}

type snapshotFigures struct{ taken, failed, applied, bytes, encode float64 }
