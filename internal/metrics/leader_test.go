package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"radbridge/internal/metrics"
	"radbridge/mapper"
	"radbridge/store"
)

type leader struct {
	leading bool
	terms   uint64
}

func (l leader) Leading() bool { return l.leading }
func (l leader) Terms() uint64 { return l.terms }

type retention store.RetentionStats

func (r retention) Stats() store.RetentionStats { return store.RetentionStats(r) }

type noMapper struct{}

func (noMapper) Latest() *mapper.Mapper { return nil }

// TestLeaderAndRetentionCollectors: the figures are read at scrape time;
// before any mapper ran, the snapshot figures are 0.
func TestLeaderAndRetentionCollectors(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewLeaderCollectors(leader{leading: true, terms: 3})...)
	reg.MustRegister(metrics.NewRetentionCollectors(retention{EventsFirst: 7, IngestFirst: 5, IngestTrimmed: 4, NearEdge: 2, OldestEventAge: 90 * time.Second}, noMapper{})...)
	want := `
# HELP radbridge_event_log_first_sequence Oldest event sequence the event log retains; a client resuming before it gets OUT_OF_RANGE.
# TYPE radbridge_event_log_first_sequence gauge
radbridge_event_log_first_sequence 7
# HELP radbridge_event_log_oldest_event_age_seconds Age of the oldest retained event.
# TYPE radbridge_event_log_oldest_event_age_seconds gauge
radbridge_event_log_oldest_event_age_seconds 90
# HELP radbridge_ingest_log_first_sequence Oldest ingest record retained.
# TYPE radbridge_ingest_log_first_sequence gauge
radbridge_ingest_log_first_sequence 5
# HELP radbridge_ingest_records_trimmed_total Ingest records removed by --ingest-max-age or --ingest-max-bytes.
# TYPE radbridge_ingest_records_trimmed_total counter
radbridge_ingest_records_trimmed_total 4
# HELP radbridge_mapper_leader 1 while this process runs the mapper (always 1 on the embedded store; with --nats-url, the holder of the mapper lease).
# TYPE radbridge_mapper_leader gauge
radbridge_mapper_leader 1
# HELP radbridge_mapper_leader_terms_total Times this process became the mapper leader.
# TYPE radbridge_mapper_leader_terms_total counter
radbridge_mapper_leader_terms_total 3
# HELP radbridge_mapper_snapshot_bytes Size of the newest snapshot written.
# TYPE radbridge_mapper_snapshot_bytes gauge
radbridge_mapper_snapshot_bytes 0
# HELP radbridge_mapper_snapshots_written_total Mapper state snapshots written by this process's current or last mapper.
# TYPE radbridge_mapper_snapshots_written_total counter
radbridge_mapper_snapshots_written_total 0
# HELP radbridge_subscribers_near_retention_edge Live subscribers whose cursor is within --retention-margin of the event log's retention edge.
# TYPE radbridge_subscribers_near_retention_edge gauge
radbridge_subscribers_near_retention_edge 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"radbridge_event_log_first_sequence", "radbridge_event_log_oldest_event_age_seconds", "radbridge_ingest_log_first_sequence",
		"radbridge_ingest_records_trimmed_total", "radbridge_mapper_leader", "radbridge_mapper_leader_terms_total",
		"radbridge_mapper_snapshot_bytes", "radbridge_mapper_snapshots_written_total", "radbridge_subscribers_near_retention_edge"); err != nil {
		t.Error(err)
	}
}
