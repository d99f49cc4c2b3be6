package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"radbridge/mapper"
	"radbridge/store"
)

// RetentionStats reports what retention keeps (store.Retention).
type RetentionStats interface{ Stats() store.RetentionStats }

// Snapshots gives the mapper whose snapshots are reported: this process's
// current or last one (mapper/leased), nil before the first.
type Snapshots interface{ Latest() *mapper.Mapper }

// NewRetentionCollectors export the retention worker's and the mapper
// snapshots' figures.
func NewRetentionCollectors(r RetentionStats, ms Snapshots) []prometheus.Collector {
	g := func(name, help string, f func(store.RetentionStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help},
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
	return []prometheus.Collector{
		g("event_log_first_sequence", "Oldest event sequence the event log retains; a client resuming before it gets OUT_OF_RANGE.",
			func(s store.RetentionStats) float64 { return float64(s.EventsFirst) }),
		g("event_log_oldest_event_age_seconds", "Age of the oldest retained event.",
			func(s store.RetentionStats) float64 { return s.OldestEventAge.Seconds() }),
		g("subscribers_near_retention_edge", "Live subscribers whose cursor is within --retention-margin of the event log's retention edge.",
			func(s store.RetentionStats) float64 { return float64(s.NearEdge) }),
		g("ingest_log_first_sequence", "Oldest ingest record retained.",
			func(s store.RetentionStats) float64 { return float64(s.IngestFirst) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "ingest_records_trimmed_total",
			Help: "Ingest records removed by --ingest-max-age or --ingest-max-bytes."}, func() float64 { return float64(r.Stats().IngestTrimmed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "mapper_snapshots_written_total",
			Help: "Mapper state snapshots written by this process's current or last mapper."}, snap(func(s snapshotFigures) float64 { return s.taken })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "mapper_snapshot_failures_total",
			Help: "Mapper state snapshots that could not be written."}, snap(func(s snapshotFigures) float64 { return s.failed })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "mapper_snapshot_ingest_sequence",
			Help: "Ingest sequence covered by the newest snapshot written or loaded."}, snap(func(s snapshotFigures) float64 { return s.applied })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "mapper_snapshot_bytes",
			Help: "Size of the newest snapshot written."}, snap(func(s snapshotFigures) float64 { return s.bytes })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "mapper_snapshot_encode_seconds",
			Help: "Time the mapper paused to encode the newest snapshot (it is written in the background)."}, snap(func(s snapshotFigures) float64 { return s.encode })),
	}
}

type snapshotFigures struct{ taken, failed, applied, bytes, encode float64 }
