package store

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// RetentionConfig says what the retention worker keeps.
type RetentionConfig struct {
	// Interval is how often it looks (--retention-interval).
	Interval time.Duration
	// Margin is the fraction of the event log's limits within which a
	// subscriber is warned about (--retention-margin).
	Margin float64
	// EventsMaxAge and EventsMaxBytes are the event log's limits, which
	// JetStream enforces itself (--events-max-age, --events-max-bytes).
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	// IngestMaxAge and IngestMaxBytes bound the ingest log
	// (--ingest-max-age, --ingest-max-bytes); 0: no limit.
	IngestMaxAge   time.Duration
	IngestMaxBytes int64
	Logger         *slog.Logger
}

// Subscribers is what retention needs of the live subscribers (the
// fan-out hub): the oldest sequence a resume may ask for, and how many
// cursors are behind a sequence.
type Subscribers interface {
	SetFloor(first uint64)
	CountBehind(seq uint64) int
}

// Retention trims the ingest log (never beyond what the oldest kept
// snapshot covers) and watches the event log's retention edge, which
// JetStream moves itself (--events-max-age, --events-max-bytes).
type Retention struct {
	cfg  RetentionConfig
	st   *Store
	subs Subscribers
	log  *slog.Logger

	mu    sync.Mutex
	stats RetentionStats
}

// NewRetention returns the retention worker of st; Run runs it.
func NewRetention(st *Store, subs Subscribers, cfg RetentionConfig) *Retention {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Retention{cfg: cfg, st: st, subs: subs, log: log}
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
func (r *Retention) Stats() RetentionStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Run checks every --retention-interval until ctx ends.
func (r *Retention) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
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

func (r *Retention) check(ctx context.Context) {
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
	r.subs.SetFloor(first)
	var age time.Duration
	if oldest, err := ev.Oldest(ctx); err == nil && !oldest.IsZero() {
		age = time.Since(oldest)
	}
	near := 0
	if edge := r.edgeSoon(ctx); edge > first {
		if near = r.subs.CountBehind(edge); near > 0 {
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
func (r *Retention) edgeSoon(ctx context.Context) uint64 {
	ev := r.st.Events()
	var edge uint64
	if a := r.cfg.EventsMaxAge; a > 0 {
		keep := time.Duration(float64(a) * (1 - r.cfg.Margin))
		if s, err := ev.FirstAtOrAfter(ctx, time.Now().Add(-keep)); err == nil {
			edge = max(edge, s)
		}
	}
	if b := r.cfg.EventsMaxBytes; b > 0 {
		if s := sizeEdge(ctx, ev.Usage, ev.Bounds, uint64(float64(b)*(1-r.cfg.Margin))); s > 0 {
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
func (r *Retention) trimIngest(ctx context.Context) uint64 {
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
