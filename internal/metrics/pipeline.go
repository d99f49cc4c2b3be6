package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Ingest instruments the ingest log: observations recorded by front and
// kind, and the time each append takes (radbridge_store_append_duration_seconds
// with stream="ingest").
type Ingest struct {
	observations *prometheus.CounterVec
	appends      *prometheus.HistogramVec
}

// appendBuckets cover an in-memory append (~100 µs) to a slow disk or a
// replicated cluster (seconds).
var appendBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewIngest registers the ingest and store append metrics on reg.
func NewIngest(reg prometheus.Registerer) *Ingest {
	m := &Ingest{
		observations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "ingest_observations_total",
			Help: "Observations handed to the ingest log, by front (mllp, dimse, stow-rs, notification, api, mapper), kind (hl7.message, dicom.instance, dicom.ian, dicom.mpps, api.viewed, mapper.timer) and result (recorded; duplicate: a resend already recorded; failed: not recorded, the sender was told to resend).",
		}, []string{"front", "kind", "result"}),
		appends: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "store_append_duration_seconds",
			Help:    "Time to append to the store and have it acknowledged (fsynced with --fsync), by stream (ingest, events).",
			Buckets: appendBuckets,
		}, []string{"stream"}),
	}
	reg.MustRegister(m.observations, m.appends)
	return m
}

// Log returns l counted as front. front and the observation kinds must be
// bounded sets (they are labels).
func (m *Ingest) Log(front string, l ingest.Log) ingest.Log {
	return &ingestLog{Log: l, m: m, front: front, hist: m.appends.WithLabelValues("ingest")}
}

// Events returns l with its appends timed (stream="events").
func (m *Ingest) Events(l eventlog.Log) eventlog.Log {
	return &eventLog{Log: l, hist: m.appends.WithLabelValues("events")}
}

type ingestLog struct {
	ingest.Log
	m     *Ingest
	front string
	hist  prometheus.Observer
}

func (l *ingestLog) Append(ctx context.Context, o ingest.Observation) (uint64, bool, error) {
	start := time.Now()
	seq, dup, err := l.Log.Append(ctx, o)
	result := "recorded"
	switch {
	case err != nil:
		result = "failed"
	case dup:
		result = "duplicate"
	}
	if err == nil {
		l.hist.Observe(time.Since(start).Seconds())
	}
	l.m.observations.WithLabelValues(l.front, o.Kind, result).Inc()
	return seq, dup, err
}

// First forwards to the wrapped log's First (the oldest record retained),
// which the mapper uses to report trimmed records precisely.
func (l *ingestLog) First(ctx context.Context) (uint64, error) {
	if f, ok := l.Log.(mapper.RetainedLog); ok {
		return f.First(ctx)
	}
	return 1, nil
}

type eventLog struct {
	eventlog.Log
	hist prometheus.Observer
}

func (l *eventLog) Append(ctx context.Context, k eventlog.Key, ev *rbv1.Event) (uint64, error) {
	start := time.Now()
	seq, err := l.Log.Append(ctx, k, ev)
	if err == nil {
		l.hist.Observe(time.Since(start).Seconds())
	}
	return seq, err
}

// Mapper implements mapper.Observer: events by type, the ingest-to-event
// latency of live events, observations applied by outcome, read-model
// write failures. One Mapper serves every mapper the process runs (a new
// one each leadership term), so the counters do not restart with a term.
type Mapper struct {
	events    *prometheus.CounterVec
	latency   prometheus.Histogram
	applied   *prometheus.CounterVec
	readModel prometheus.Counter
}

var _ mapper.Observer = (*Mapper)(nil)

// NewMapper registers the mapper metrics on reg.
func NewMapper(reg prometheus.Registerer) *Mapper {
	m := &Mapper{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "events_emitted_total",
			Help: "Events this process appended to the event log, by type (IMAGING_STUDY_AVAILABLE, ORDER_PLACED, ...).",
		}, []string{"type"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "ingest_to_event_seconds",
			Help:    "Time from receiving an observation (or a quiet-period timer firing) to its event being in the event log; live events only, not the replay at start.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "mapper_observations_total",
			Help: "Ingest records the mapper applied, including the replay at start, by outcome (mapped; duplicate: a resend already mapped; failed: no rule or the rule refused it, see the log).",
		}, []string{"outcome"}),
		readModel: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "read_model_write_failures_total",
			Help: "Patient read-model writes that failed (GetPatientImaging lags until the next write).",
		}),
	}
	for _, o := range []string{"mapped", "duplicate", "failed"} {
		m.applied.WithLabelValues(o)
	}
	reg.MustRegister(m.events, m.latency, m.applied, m.readModel)
	return m
}

// EventAppended implements mapper.Observer.
func (m *Mapper) EventAppended(ev *rbv1.Event, received time.Time, replay bool) {
	m.events.WithLabelValues(ev.GetType().String()).Inc()
	if !replay && !received.IsZero() {
		m.latency.Observe(max(0, time.Since(received).Seconds()))
	}
}

// ObservationApplied implements mapper.Observer.
func (m *Mapper) ObservationApplied(outcome string) { m.applied.WithLabelValues(outcome).Inc() }

// ReadModelWriteFailed implements mapper.Observer.
func (m *Mapper) ReadModelWriteFailed() { m.readModel.Inc() }

// Pipeline is what the pipeline collector reads at scrape time.
type Pipeline struct {
	// Ingest and Events are the logs (their heads are read at scrape).
	Ingest interface {
		Last(ctx context.Context) (uint64, error)
	}
	Events interface {
		Bounds(ctx context.Context) (first, last uint64, err error)
	}
	// Mapper returns the mapper running in this process, nil when it
	// does not map (a follower in a cluster).
	Mapper func() *mapper.Mapper
	// StoreUp reports whether the store connection is up.
	StoreUp func() bool
	// DeadLetters lists the stored dead letters (nil: not reported).
	DeadLetters interface {
		DeadLetters(ctx context.Context) ([]mapper.DeadLetter, error)
	}
}

type pipelineCollector struct {
	p                                Pipeline
	storeUp, ingestLast, eventsLast  *prometheus.Desc
	ready, applied, lag, quietQueued *prometheus.Desc
	// The mapper's memory (--state-idle).
	patients, evicted, reloaded       *prometheus.Desc
	reused, deadLettered, deadLetters *prometheus.Desc
}

// NewPipelineCollector reports the store, the heads of the logs and the
// mapper's position at scrape time.
func NewPipelineCollector(p Pipeline) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_"+name, help, nil, nil)
	}
	return &pipelineCollector{
		p:            p,
		storeUp:      d("store_up", "1 while the connection to the JetStream store is up."),
		ingestLast:   d("ingest_last_sequence", "Sequence of the newest record in the ingest log."),
		eventsLast:   d("events_last_sequence", "Sequence of the newest event in the event log."),
		ready:        d("mapper_ready", "1 once the running mapper has replayed the ingest log and maps live."),
		applied:      d("mapper_applied_sequence", "Ingest sequence the running mapper has applied."),
		lag:          d("mapper_lag_records", "Ingest records not yet applied by the running mapper (ingest head minus applied)."),
		quietQueued:  d("mapper_quiet_period_studies", "Studies waiting for the end of their quiet period (--study-quiet-period) before IMAGING_STUDY_AVAILABLE or UPDATED."),
		patients:     d("mapper_patients_in_memory", "Patients the running mapper holds in memory (the others are in the archive bucket, see --state-idle)."),
		evicted:      d("mapper_patients_evicted_total", "Patients the running mapper moved from memory to the archive bucket (idle --state-idle)."),
		reloaded:     d("mapper_patients_reloaded_total", "Patients the running mapper reloaded from the archive bucket because an observation named them again."),
		deadLettered: d("mapper_dead_lettered_total", "Ingest records the running mapper could not map (a rule's error, a panic, an event over --max-event-bytes), recorded as dead letters and passed over."),
		deadLetters:  d("dead_letters", "Dead letters stored: ingest records not mapped, waiting for radbridge replay --retry-dead-letters after a fix (radbridge status lists them)."),
		reused:       d("mapper_reused_identifiers_total", "Observations mapped as new although their sender's identifier (HL7 MSH-3/4/10, an API client_event_id) was seen before with other content."),
	}
}

func (c *pipelineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.storeUp, c.ingestLast, c.eventsLast, c.ready, c.applied, c.lag, c.quietQueued, c.patients, c.evicted, c.reloaded, c.reused, c.deadLettered, c.deadLetters} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *pipelineCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	up := c.p.StoreUp == nil || c.p.StoreUp()
	gauge(c.storeUp, b2f(up))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var head uint64
	headOK := false
	if up {
		if h, err := c.p.Ingest.Last(ctx); err == nil {
			head, headOK = h, true
			gauge(c.ingestLast, float64(h))
		}
		if _, last, err := c.p.Events.Bounds(ctx); err == nil {
			gauge(c.eventsLast, float64(last))
		}
	}
	if up && c.p.DeadLetters != nil {
		if dls, err := c.p.DeadLetters.DeadLetters(ctx); err == nil {
			gauge(c.deadLetters, float64(len(dls)))
		}
	}
	var m *mapper.Mapper
	if c.p.Mapper != nil {
		m = c.p.Mapper()
	}
	if m == nil { // radbridge_mapper_leader (registered with the election) is 0
		return
	}
	applied := m.Applied()
	gauge(c.ready, b2f(m.Ready()))
	gauge(c.applied, float64(applied))
	gauge(c.quietQueued, float64(m.PendingTimers()))
	st := m.Stats()
	gauge(c.patients, float64(st.Patients))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(st.Evicted))
	ch <- prometheus.MustNewConstMetric(c.reloaded, prometheus.CounterValue, float64(st.Reloaded))
	ch <- prometheus.MustNewConstMetric(c.reused, prometheus.CounterValue, float64(st.Reused))
	ch <- prometheus.MustNewConstMetric(c.deadLettered, prometheus.CounterValue, float64(st.DeadLettered))
	if headOK {
		lag := float64(0)
		if head > applied {
			lag = float64(head - applied)
		}
		gauge(c.lag, lag)
	}
}
