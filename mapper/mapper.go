package mapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// putPatient writes p's read model as of the current state.
func (m *Mapper) putPatient(ctx context.Context, p *readmodel.Patient) error {
	if f, ok := m.cfg.ReadModel.(readmodel.FencedWriter); ok {
		return f.PutPatientAt(ctx, p, m.state.Applied)
	}
	return m.cfg.ReadModel.PutPatient(ctx, p)
}

// Config configures a Mapper.
type Config struct {
	// Ingest is the log the mapper applies; an ingest.FirstLog lets Run refuse to start when records it needs to
	// replay were removed by retention.
	Ingest ingest.Log
	Events eventlog.Log
	// ReadModel, when set, receives every changed patient; a
	// readmodel.FencedWriter is also told the ingest sequence applied.
	ReadModel readmodel.Writer
	// Rules by observation kind. The API's IMAGING_STUDY_VIEWED rule is
	// always present.
	Rules  map[string]rules.Rule
	Logger *slog.Logger
	// Now is the clock for timers (tests); time.Now by default.
	Now func() time.Time
	// Observer, when set, is told what the mapper does (for metrics).
	Observer Observer

	// Snapshots, when set, receives snapshots of the state every
	// SnapshotEvery applied records or SnapshotInterval (whichever comes
	// first) and at an orderly stop, and Run starts from the newest usable
	// one instead of replaying the whole ingest log. Nil: no snapshots
	// (Run replays the whole log, as a clean replay does).
	Snapshots        SnapshotStore
	SnapshotEvery    int           // 10000 when 0
	SnapshotInterval time.Duration // 5 minutes when 0
	// DeadLetters, when set, keeps the records the mapper passed over
	// (see DeadLetter).
	DeadLetters DeadLetterStore
	// MaxEventBytes bounds an event's encoded size: a record deriving a
	// larger event is dead-lettered (0: no bound). Consumers with default
	// gRPC settings take messages up to 4 MiB.
	MaxEventBytes int
	// SnapshotWait writes each snapshot before the next record is applied.
	// Otherwise a snapshot is written in the background and one falling
	// due while the previous is still being written is skipped; tests that
	// need a snapshot at every point set it.
	SnapshotWait bool
	// Mapping fingerprints the mapping options; a snapshot taken with other
	// options is still used, with a warning.
	Mapping string
	// DedupHorizon bounds the Seen set: an observation key first seen more
	// than this before the record being applied (by the times recorded in
	// the ingest log) is forgotten, so a resend older than that is mapped
	// as new. 0 remembers keys forever.
	DedupHorizon time.Duration
	// Seen, when set, keeps the observation keys durably: the mapper holds
	// only those added since its last snapshot (written before the
	// snapshot) and a bounded cache, and snapshots carry none. Nil keeps
	// every key in memory (clean replays, tests).
	Seen SeenStore
	// Archive, when set, holds the patients evicted from memory (see
	// Archive); evicted patients are reloaded from it whatever StateIdle.
	Archive Archive
	// StateIdle evicts, with an Archive, the patients no observation
	// touched for this long (by the times recorded in the ingest log);
	// 0 evicts none.
	StateIdle time.Duration
}

// Observer is told what the mapper does. Its methods are called from the
// mapper's goroutine and must return quickly.
type Observer interface {
	// EventAppended: ev was appended to the event log. received is when the
	// observation that caused it was received (rec.Time); replay is true
	// while the mapper replays the ingest log at start (the event was
	// missing from the log, e.g. after a crash between the two appends),
	// when the time since received says nothing about the live path.
	EventAppended(ev *rbv1.Event, received time.Time, replay bool)
	// ObservationApplied: one ingest record was applied with outcome
	// "mapped", "failed" (no rule, or the rule returned an error) or
	// "duplicate" (a resend already mapped).
	ObservationApplied(outcome string)
	// ReadModelWriteFailed: a patient read model could not be written
	// (it lags until the next write; its as_of keeps snapshots correct).
	ReadModelWriteFailed()
}

// RecordObserver is implemented by an Observer that also wants each
// applied record with the events derived from it (tracing). started is
// when the mapper began applying it; replay as in EventAppended.
type RecordObserver interface {
	RecordApplied(rec ingest.Record, events []*rbv1.Event, started time.Time, replay bool)
}

type nopObserver struct{}

func (nopObserver) EventAppended(*rbv1.Event, time.Time, bool) {}
func (nopObserver) ObservationApplied(string)                  {}
func (nopObserver) ReadModelWriteFailed()                      {}

// Mapper runs the projection.
type Mapper struct {
	cfg   Config
	log   *slog.Logger
	state *rules.State

	mu      sync.Mutex
	applied uint64
	ready   bool
	readyCh chan struct{} // closed when ready is first set
	wake    chan struct{}
	recent  map[uint64][][]byte // protobuf-encoded: a decoded resource takes ~10x the memory
	order   []uint64

	timerCh chan *ingest.Timer
	stats   Stats
	pending int // len(state.Timers) after the last apply, under mu

	// stateSem (one token) guards state while a record is applied and
	// while Explain, Exceptions or CheckReconcile read it. Readers wait
	// for it only as long as their context allows: an apply can take
	// long (it retries while the store refuses writes), and /metrics or
	// an operator's question must not hang behind it.
	stateSem chan struct{}

	pubStats  Stats    // stats as of the last applied record (guarded by mu)
	seen      *seenSet // observation keys (see SeenStore)
	snapStats SnapshotStats
}

// Stats counts what the mapper did.
type Stats struct {
	Applied, Emitted, Skipped, Duplicates uint64
	// Failed counts records not mapped: each is dead-lettered (see
	// DeadLetter) and passed over.
	Failed uint64
	// DeadLettered counts dead letters recorded (a failed retry too).
	DeadLettered uint64
	// Reused counts observations mapped as new although their sender's
	// identifier was seen before with other content.
	Reused uint64
	// Evicted and Reloaded count patients moved to and from the Archive;
	// Patients is the number in memory.
	Evicted, Reloaded uint64
	Patients          int
}

const recentMax = 4096

// New returns a mapper; call Run.
func New(cfg Config) *Mapper {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	byKind := map[string]rules.Rule{ingest.KindViewed: rules.Viewed}
	for k, r := range cfg.Rules {
		byKind[k] = r
	}
	cfg.Rules = byKind
	if cfg.SnapshotEvery <= 0 {
		cfg.SnapshotEvery = 10000
	}
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = 5 * time.Minute
	}
	return &Mapper{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "mapper"),
		state:    rules.NewState(),
		seen:     newSeenSet(cfg.Seen),
		wake:     make(chan struct{}),
		readyCh:  make(chan struct{}),
		recent:   map[uint64][][]byte{},
		timerCh:  make(chan *ingest.Timer, 1),
		stateSem: make(chan struct{}, 1),
	}
}

// Run replays the ingest log and then follows it until ctx ends. With
// Config.Snapshots it starts from the newest usable snapshot and replays
// only the records after it. Run may be called again after it returned
// (for example when this process becomes the leader again); every call
// rebuilds the state.
func (m *Mapper) Run(ctx context.Context) error {
	_, err := m.run(ctx, runOpts{})
	return err
}

// runOpts adapt a run for radbridge replay.
type runOpts struct {
	// limit: start from the newest snapshot at or before this ingest
	// sequence (0: the newest).
	limit uint64
	// noSnapshot: start from an empty state.
	noSnapshot bool
	// stopAtHead: return once the records present at start are applied.
	stopAtHead bool
	// noTimers: do not record timer observations.
	noTimers bool
	// derived is called with every event derived (logged: the key was
	// already in the event log, so it was not appended).
	derived func(ev *rbv1.Event, logged bool)
	// applied is called after every record.
	applied func(seq uint64)
}

func (m *Mapper) run(ctx context.Context, o runOpts) (*run, error) {
	_, lastSeq, err := m.cfg.Events.Bounds(ctx)
	if err != nil {
		return nil, fmt.Errorf("mapper start: %w", err)
	}
	head, err := m.cfg.Ingest.Last(ctx)
	if err != nil {
		return nil, fmt.Errorf("mapper start: %w", err)
	}
	var snap *Snapshot
	if !o.noSnapshot {
		snap = m.loadSnapshot(ctx, o.limit, head, lastSeq)
	}
	lastKey, err := m.cfg.Events.LastKey(ctx)
	if errors.Is(err, eventlog.ErrLastEventGone) && snap != nil && snap.NextSeq-1 == lastSeq {
		// Retention removed every event; the snapshot knows the newest key.
		lastKey, err = snap.LastKey, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mapper start: %w", err)
	}
	pos := Position{NextSeq: 1}
	m.lockState()
	if snap != nil {
		pos = snap.Position
		m.state = snap.State
	} else {
		m.state = rules.NewState()
	}
	m.unlockState()
	// Keys added by an earlier run may not be stored yet; they are added
	// again by the replay (sightings are unions, so nothing is lost).
	m.seen = newSeenSet(m.cfg.Seen)
	for k, v := range m.state.Seen {
		// A snapshot of an older radbridge carries its keys: they are
		// written to the store with the next snapshot.
		m.seen.fresh[k] = []SeenKey{v}
	}
	m.state.Seen = nil
	var arch *archiver
	if m.cfg.Archive != nil {
		a := &archiver{m: m, store: m.cfg.Archive, ctx: ctx}
		a.lineage = lineageFor(m.state, fmt.Sprintf("%s|%d", m.cfg.Mapping, m.cfg.StateIdle))
		m.state.Lineage = a.lineage
		m.state.SetReloader(a)
		arch = a
		if m.state.Active == nil {
			m.state.Active = map[string]int64{}
		}
	}
	from := pos.Applied + 1
	if f, ok := m.cfg.Ingest.(ingest.FirstLog); ok && head >= from {
		first, err := f.First(ctx)
		if err != nil {
			return nil, fmt.Errorf("mapper start: %w", err)
		}
		if first > from {
			return nil, fmt.Errorf("mapper start: the ingest log starts at record %d but the mapper needs the records from %d: they were purged and no usable snapshot covers them (restore the snapshot bucket %s or the whole store from a backup)", first, from, "RADBRIDGE_SNAPSHOTS")
		}
	}
	m.mu.Lock()
	m.ready = false
	m.applied = max(m.applied, pos.Applied)
	m.snapStats.Loaded = pos.Applied
	if snap != nil {
		m.snapStats.LastApplied, m.snapStats.LastBytes = pos.Applied, len(snap.Raw)
	}
	close(m.wake) // Await of a record the snapshot covers returns now
	m.wake = make(chan struct{})
	m.mu.Unlock()
	if snap != nil {
		m.log.Info("mapper starting from snapshot", "ingest_seq", pos.Applied, "taken", snap.Taken, "events", pos.NextSeq-1)
	}
	m.log.Info("mapper replaying", "from_ingest_seq", from, "ingest_records", head, "events", lastSeq)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &run{ctx: ctx, m: m, o: o, lastKey: lastKey, lastSeq: lastSeq, nextSeq: pos.NextSeq, replayEnd: head,
		dirty: map[string]bool{}, pos: pos, startNextSeq: pos.NextSeq, arch: arch}
	for _, id := range pos.Dirty {
		r.dirty[id] = true
	}
	if m.cfg.Snapshots != nil && !o.stopAtHead {
		r.snap = &snapshotter{m: m, lastTime: time.Now()}
	}
	if head <= pos.Applied {
		r.finishReplay(ctx)
	}
	timerDone := make(chan struct{})
	if o.noTimers {
		close(timerDone)
	} else {
		go func() { defer close(timerDone); m.runTimers(ctx) }()
	}
	if o.stopAtHead && r.done {
		err = nil
	} else {
		err = m.cfg.Ingest.Watch(ctx, from, r.apply)
		if errors.Is(err, errCaughtUp) {
			err = nil
		}
	}
	cancel()
	<-timerDone
	if r.snap != nil {
		// An orderly stop (or lost leadership) leaves a snapshot of the
		// last completely applied record, so the next start replays little.
		r.snap.wg.Wait()
		if !r.broken && r.snap.since > 0 {
			r.snap.take(ctx, r.pos)
			r.snap.wg.Wait()
		}
	}
	if parent.Err() != nil {
		return r, nil // stopped
	}
	return r, err
}

// errCaughtUp ends a run with stopAtHead.
var errCaughtUp = errors.New("caught up")

type run struct {
	ctx        context.Context
	m          *Mapper
	o          runOpts
	lastKey    eventlog.Key // newest key already in the event log at start
	lastSeq    uint64       // newest event sequence at start
	nextSeq    uint64       // sequence the next derived event has or gets
	replayEnd  uint64
	dirty      map[string]bool
	sinceFlush int
	done       bool
	// pos is the position after the last completely applied record;
	// broken is set while a record is being applied.
	pos    Position
	broken bool
	snap   *snapshotter
	// arch is the archive of cold patients (nil without Config.Archive).
	arch *archiver
	// startNextSeq is the event sequence the run started at.
	startNextSeq uint64
	checked      bool // checkDerived ran
}

func (r *run) position() Position {
	p := Position{Applied: r.m.state.Applied, NextSeq: r.nextSeq, LastKey: r.pos.LastKey}
	for id := range r.dirty {
		p.Dirty = append(p.Dirty, id)
	}
	sort.Strings(p.Dirty)
	return p
}

// checkDerived compares, once, the events the replay re-derived (keys up to
// lastKey) with the events the log held at start. It runs before the first
// new event is appended, or at the end of the replay when there is none: a
// process killed while its mapper lagged behind the ingest log leaves
// records whose events are new, and they are not a mismatch.
func (r *run) checkDerived() {
	if r.checked {
		return
	}
	r.checked = true
	if r.nextSeq-1 != r.lastSeq {
		r.m.log.Error("replay derived a different number of events than the event log holds; continuing after the log's end (was the mapping changed?)",
			"derived", r.nextSeq-1, "logged", r.lastSeq)
		r.nextSeq = r.lastSeq + 1
	}
}

func (r *run) finishReplay(ctx context.Context) {
	if r.done {
		return
	}
	r.done = true
	m := r.m
	r.checkDerived()
	m.flush(ctx, r.dirty)
	clear(r.dirty)
	m.mu.Lock()
	m.ready = true
	select {
	case <-m.readyCh:
	default:
		close(m.readyCh)
	}
	m.pending = len(m.state.Timers)
	m.mu.Unlock()
	if !r.o.noTimers {
		m.armTimer()
	}
	m.log.Info("mapper caught up", "ingest_seq", r.replayEnd, "events", r.lastSeq, "pending_timers", len(m.state.Timers))
}

// apply applies one ingest record: the Watch callback. The rules derive
// the record's events from the state; everything around them is the
// engine's: deduplication, the archive, dead letters, numbering and
// appending, read models, timers, snapshots, and telling waiters.
func (r *run) apply(rec ingest.Record) error {
	m := r.m
	m.lockState()
	defer m.unlockState()
	started, replay := time.Now(), !r.done
	dup, err := m.checkSeen(r.ctx, rec)
	if err != nil {
		return err // stopping while the key store is unavailable
	}
	r.broken = true
	if err := r.evictCold(rec); err != nil {
		return err // stopping while the archive is unavailable
	}
	mapped, events, err := r.derive(rec, dup)
	if err != nil {
		return err
	}
	if a := r.arch; a != nil && a.err != nil {
		// The archive failed until the mapper stopped: the rule may have
		// missed evicted state, so nothing of this record is kept.
		return a.err
	}
	m.state.Applied = rec.Seq
	out, err := r.publish(rec, mapped, events)
	if err != nil {
		return err
	}
	r.observe(rec, out, started, replay)
	r.writeReadModels(rec)
	if r.done && !r.o.noTimers {
		m.armTimer()
	}
	r.advance(rec)
	m.announce(rec.Seq, out, r.replayEnd)
	if r.o.stopAtHead && r.done {
		return errCaughtUp
	}
	return nil
}

// evictCold moves the patients no observation touched for
// Config.StateIdle before rec to the archive (read models written first).
func (r *run) evictCold(rec ingest.Record) error {
	a := r.arch
	if a == nil {
		return nil
	}
	m := r.m
	a.seq, a.at = rec.Seq, rec.Time
	if m.cfg.StateIdle > 0 && !a.sweep(m.state, m.cfg.StateIdle, func(p *readmodel.Patient) bool {
		if r.dirty[p.ID] {
			m.flush(r.ctx, map[string]bool{p.ID: true})
			delete(r.dirty, p.ID)
		}
		return true
	}) {
		return a.err
	}
	return nil
}

// derive has the rules map rec (for a retry, the record it names, at the
// retry's position in the log) unless it is a resend, bounds the events,
// and dead-letters a record that was not mapped. It returns the record
// mapped and its events, linked (rules.Map); an error only when the mapper
// is stopping while a store is unavailable.
func (r *run) derive(rec ingest.Record, dup bool) (ingest.Record, []*rbv1.Event, error) {
	m, ctx := r.m, r.ctx
	mapped, retryOf, err := rec, uint64(0), error(nil)
	if rec.Kind == ingest.KindRetry && !dup {
		mapped, retryOf, err = m.resolveRetry(ctx, rec)
		if ctx.Err() != nil {
			return mapped, nil, ctx.Err()
		}
	}
	c := rules.NewContext(m.state, mapped, r.dirty)
	m.stats.Applied++
	if err == nil {
		if dup {
			m.stats.Duplicates++
		} else {
			err = m.safeDerive(c)
		}
	}
	if err == nil {
		err = m.checkSize(c.Events())
	}
	switch {
	case err != nil:
		m.stats.Failed++
		m.cfg.Observer.ObservationApplied("failed")
		c.Discard()
		if err := m.deadLetter(ctx, rec, retryOf, err); err != nil {
			return mapped, nil, err // stopping while the dead-letter store is unavailable
		}
	case dup:
		m.cfg.Observer.ObservationApplied("duplicate")
	default:
		m.cfg.Observer.ObservationApplied("mapped")
		if retryOf != 0 && m.cfg.DeadLetters != nil {
			if err := m.retry(ctx, "remove dead letter", rec.Seq, func() error { return m.cfg.DeadLetters.DeleteDeadLetter(ctx, retryOf) }); err != nil {
				return mapped, nil, err
			}
		}
	}
	rules.Link(c)
	return mapped, c.Events(), nil
}

// checkSize bounds every event before it is numbered, live and in a
// replay alike (Config.MaxEventBytes).
func (m *Mapper) checkSize(events []*rbv1.Event) error {
	for i, ev := range events {
		if n := proto.Size(ev); m.cfg.MaxEventBytes > 0 && n > m.cfg.MaxEventBytes {
			return fmt.Errorf("%w: a %s event of %d bytes (index %d), the limit is %d", ErrEventTooLarge, ev.Type, n, i, m.cfg.MaxEventBytes)
		}
	}
	return nil
}

// publish keys, stamps and numbers rec's events and appends those the
// event log does not hold yet (a replay re-derives the ones it holds),
// recording each event's sequence on its patient's read model.
func (r *run) publish(rec, mapped ingest.Record, events []*rbv1.Event) ([]*rbv1.Event, error) {
	m := r.m
	var out []*rbv1.Event
	for i, ev := range events {
		k := eventlog.Key{IngestSeq: rec.Seq, Index: i}
		m.fill(ev, k, mapped)
		r.pos.LastKey = k
		if k.Less(r.lastKey) || k == r.lastKey {
			ev.Sequence = r.nextSeq
			r.nextSeq++
			m.stats.Skipped++
			if r.o.derived != nil {
				r.o.derived(ev, true)
			}
		} else {
			r.checkDerived()
			seq, err := m.appendRetry(r.ctx, k, ev)
			if err != nil {
				return nil, err
			}
			ev.Sequence = seq
			r.nextSeq = seq + 1
			m.stats.Emitted++
			m.cfg.Observer.EventAppended(ev, rec.Time, !r.done)
			if r.o.derived != nil {
				r.o.derived(ev, false)
			}
		}
		if ev.PatientId != "" {
			p := m.state.Patient(ev.PatientId)
			p.LastSequence = ev.Sequence
			r.dirty[ev.PatientId] = true
		}
		out = append(out, ev)
	}
	return out, nil
}

// observe updates the counters and tells a RecordObserver.
func (r *run) observe(rec ingest.Record, out []*rbv1.Event, started time.Time, replay bool) {
	m := r.m
	if a := r.arch; a != nil {
		m.stats.Evicted, m.stats.Reloaded = a.evicted, a.reloaded
	}
	m.stats.Patients = len(m.state.Patients)
	if ro, ok := m.cfg.Observer.(RecordObserver); ok {
		ro.RecordApplied(rec, out, started, replay)
	}
}

// writeReadModels ends the replay at its last record, or writes the
// changed read models when the mapper has caught up (or has many
// waiting): under load one write covers many events. They may lag their
// events, never lead them, so as_of stays exact.
func (r *run) writeReadModels(rec ingest.Record) {
	if !r.done && rec.Seq >= r.replayEnd {
		r.finishReplay(r.ctx)
	} else if r.sinceFlush++; r.done && len(r.dirty) > 0 && (rec.Pending == 0 || len(r.dirty) >= 256 || r.sinceFlush >= 1000) {
		r.m.flush(r.ctx, r.dirty)
		clear(r.dirty)
		r.sinceFlush = 0
	}
}

// advance records rec as completely applied and takes a snapshot when
// one is due.
func (r *run) advance(rec ingest.Record) {
	r.broken = false
	r.pos.Applied, r.pos.NextSeq = rec.Seq, r.nextSeq
	if r.o.applied != nil {
		r.o.applied(rec.Seq)
	}
	if r.snap != nil {
		r.snap.since++
		if r.snap.due() {
			r.snap.take(r.ctx, r.position())
		}
	}
}

// announce publishes that ingest sequence seq was applied with events out:
// the stats, and the result Await returns (kept for the newest recentMax
// records; a replay's older results would be dropped anyway).
func (m *Mapper) announce(seq uint64, out []*rbv1.Event, replayEnd uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pubStats = m.stats
	m.applied = seq
	m.pending = len(m.state.Timers)
	if seq+recentMax > replayEnd {
		m.recent[seq] = encodeEvents(out)
		m.order = append(m.order, seq)
		if len(m.order) > recentMax {
			delete(m.recent, m.order[0])
			m.order = m.order[1:]
		}
	}
	close(m.wake)
	m.wake = make(chan struct{})
}

// checkSeen reports whether rec is a resend of an observation already
// mapped within the dedup horizon, and records its identifier otherwise.
// ingest.SeenKey and ContentKey say what a resend is: the same identifier with the
// same content. When the identifier was seen, the earlier record is read
// back from the ingest log to compare contents; other content under a
// reused identifier (a RIS whose counter restarted) is mapped as new,
// counted and reported without patient data.
func (m *Mapper) checkSeen(ctx context.Context, rec ingest.Record) (bool, error) {
	if rec.Kind == ingest.KindTimer || rec.Key == "" {
		return false, nil
	}
	id := ingest.SeenKey(rec.Observation)
	var known []SeenKey
	if err := m.retry(ctx, "read observation key", rec.Seq, func() (err error) {
		known, err = m.seen.lookup(ctx, id)
		return err
	}); err != nil {
		return false, err
	}
	seen, add := seenDecision(known, rec.Seq, rec.Time, m.cfg.DedupHorizon)
	if seen {
		same, err := m.sameContent(ctx, rec, id, known)
		if err != nil {
			return false, err
		}
		if !same { // other content under a seen identifier: a reuse
			seen, add = false, true
			m.stats.Reused++
			m.log.Warn("identifier reused with other content: mapped as new",
				"kind", rec.Kind, "ingest_seq", rec.Seq, "protocol", rec.Source.Protocol,
				"sending_application", rec.Source.SendingApplication, "sending_facility", rec.Source.SendingFacility,
				"control_id", rec.Source.MessageControlID)
		}
	}
	if add {
		m.seen.add(id, known, SeenKey{Seq: rec.Seq, At: rec.Time.UnixMilli()})
	}
	return seen, nil
}

// sameContent reports whether an earlier sighting of rec's identifier id
// within the dedup horizon had rec's content (a reused identifier has one
// sighting per content). The content (an HL7 message's digest) is computed
// only here, for an identifier seen before; a key that covers its content
// (DICOM) needs no comparison. A sighting no longer in the ingest log
// (retention) cannot be compared: rec is then mapped, never dropped.
func (m *Mapper) sameContent(ctx context.Context, rec ingest.Record, id string, known []SeenKey) (bool, error) {
	content := ingest.ContentKey(rec.Observation)
	if content == id {
		return true, nil
	}
	for _, k := range known {
		if k.Seq >= rec.Seq || m.cfg.DedupHorizon > 0 && k.At < rec.Time.Add(-m.cfg.DedupHorizon).UnixMilli() {
			continue
		}
		var earlier ingest.Record
		var gone bool
		if err := m.retry(ctx, "read the earlier observation", rec.Seq, func() (err error) {
			earlier, err = m.cfg.Ingest.Get(ctx, k.Seq)
			if errors.Is(err, ingest.ErrNotFound) {
				gone, err = true, nil
			}
			return err
		}); err != nil {
			return false, err
		}
		if !gone && ingest.ContentKey(earlier.Observation) == content {
			return true, nil
		}
	}
	return false, nil
}

func (m *Mapper) fill(ev *rbv1.Event, k eventlog.Key, rec ingest.Record) {
	// Protobuf strings must be UTF-8; a sender's bytes may not be. An
	// event that cannot be encoded would stop the mapper.
	for _, f := range []*string{&ev.PatientId, &ev.AccessionNumber, &ev.StudyInstanceUid, &ev.Message, &ev.ResourceType, &ev.ResourceId, &ev.ViewerUrl} {
		*f = validUTF8(*f)
	}
	ev.Id = readmodel.EventID(k)
	if ev.Time == nil {
		ev.Time = timestamppb.New(rec.Time)
	}
	if ev.Source == nil {
		s := rec.Source
		ev.Source = &rbv1.Source{
			Protocol: s.Protocol, CallingAeTitle: s.CallingAETitle, CalledAeTitle: s.CalledAETitle,
			SendingApplication: s.SendingApplication, SendingFacility: s.SendingFacility,
			MessageControlId: s.MessageControlID, Client: s.Client,
		}
	}
	for _, f := range []*string{&ev.Source.Protocol, &ev.Source.CallingAeTitle, &ev.Source.CalledAeTitle, &ev.Source.SendingApplication,
		&ev.Source.SendingFacility, &ev.Source.MessageControlId, &ev.Source.Client} {
		*f = validUTF8(*f)
	}
	if ev.Severity == rbv1.Severity_SEVERITY_UNSPECIFIED {
		ev.Severity = rbv1.Severity_SEVERITY_INFO
	}
	if ev.Priority == rbv1.Priority_PRIORITY_UNSPECIFIED {
		ev.Priority = rbv1.Priority_PRIORITY_ROUTINE
	}
}

// appendRetry appends, retrying while the store is unavailable: an event
// must never be skipped. A conflict (another mapper appended) is final.
func (m *Mapper) appendRetry(ctx context.Context, k eventlog.Key, ev *rbv1.Event) (uint64, error) {
	var seq uint64
	var conflict error
	err := m.retry(ctx, "append event", k.IngestSeq, func() (err error) {
		seq, err = m.cfg.Events.Append(ctx, k, ev)
		if errors.Is(err, eventlog.ErrConflict) {
			conflict = err
			return nil
		}
		return err
	})
	switch {
	case conflict != nil:
		return 0, fmt.Errorf("mapper: %w", conflict)
	case err != nil:
		return 0, err // shutting down; replay derives it again
	}
	return seq, nil
}

// retry runs f until it succeeds or ctx ends (then it returns ctx's
// error): the store the mapper reads or writes is unavailable, and skipping
// the operation would lose or corrupt state. Each failure is logged (what,
// the ingest sequence being applied); the wait doubles from 100 ms to 5 s.
func (m *Mapper) retry(ctx context.Context, what string, seq uint64, f func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.log.Error(what+"; retrying", "err", err, "ingest_seq", seq)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (m *Mapper) flush(ctx context.Context, dirty map[string]bool) {
	if m.cfg.ReadModel == nil {
		return
	}
	for id := range dirty {
		p := m.state.Patients[id]
		if p == nil {
			continue // evicted: written then
		}
		err := m.putPatient(ctx, p)
		if errors.Is(err, readmodel.ErrSuperseded) {
			// Another mapper (this one's successor as cluster leader)
			// wrote a newer one: this process is about to stop mapping.
			m.log.Warn("patient read model not written: a newer one is stored by another mapper")
		} else if err != nil {
			// The read model lags; its as_of sequence keeps snapshots correct.
			m.cfg.Observer.ReadModelWriteFailed()
			m.log.Error("write patient read model", "err", err)
		}
	}
}

// armTimer tells the timer goroutine about the earliest timer.
func (m *Mapper) armTimer() {
	t := m.state.NextTimer()
	if t != nil {
		c := *t
		t = &c
	}
	select {
	case <-m.timerCh:
	default:
	}
	m.timerCh <- t
}

// runTimers appends a timer observation when the earliest timer is due.
func (m *Mapper) runTimers(ctx context.Context) {
	var cur *ingest.Timer
	var fire <-chan time.Time
	var tm *time.Timer
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-m.timerCh:
			cur = t
			if tm != nil {
				tm.Stop()
			}
			fire = nil
			if cur != nil {
				tm = time.NewTimer(max(0, cur.At.Sub(m.cfg.Now())))
				fire = tm.C
			}
		case <-fire:
			fire = nil
			o, err := ingest.NewTimer(cur, m.cfg.Now())
			if err == nil {
				_, _, err = m.cfg.Ingest.Append(ctx, o)
			}
			if err != nil && ctx.Err() == nil {
				m.log.Error("record timer; retrying in 1s", "err", err)
				tm = time.NewTimer(time.Second)
				fire = tm.C
			}
		}
	}
}

// Stats returns what the mapper did since New, as of the last record it
// applied.
func (m *Mapper) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pubStats
}

// Ready reports whether the replay at start has finished.
func (m *Mapper) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}

// ReadyNotify is closed once the replay at start has first finished.
func (m *Mapper) ReadyNotify() <-chan struct{} { return m.readyCh }

// PendingTimers is the number of studies waiting for the end of their
// quiet period (timers scheduled and not yet fired), as of the last record
// applied.
func (m *Mapper) PendingTimers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending
}

// Applied returns the last ingest sequence applied.
func (m *Mapper) Applied() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

// Await waits until the mapper has applied ingest sequence seq and returns
// the events it derived from it.
func (m *Mapper) Await(ctx context.Context, seq uint64) ([]*rbv1.Event, error) {
	for {
		m.mu.Lock()
		applied, wake := m.applied, m.wake
		enc, ok := m.recent[seq]
		m.mu.Unlock()
		if applied >= seq {
			if !ok {
				return nil, readmodel.ErrForgotten
			}
			return decodeEvents(enc)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
}

func encodeEvents(evs []*rbv1.Event) [][]byte {
	out := make([][]byte, 0, len(evs))
	for _, ev := range evs {
		b, err := proto.Marshal(ev)
		if err != nil { // cannot happen: the event was appended in this encoding
			continue
		}
		out = append(out, b)
	}
	return out
}

func decodeEvents(enc [][]byte) ([]*rbv1.Event, error) {
	out := make([]*rbv1.Event, len(enc))
	for i, b := range enc {
		out[i] = new(rbv1.Event)
		if err := proto.Unmarshal(b, out[i]); err != nil {
			return nil, fmt.Errorf("mapper: decode event: %w", err)
		}
	}
	return out, nil
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// ErrBusy: the mapper's state was not free within the caller's context (a
// record is being applied, e.g. retried while the store refuses writes).
var ErrBusy = errors.New("the mapper is busy applying a record (if this lasts, see /readyz: the store may be refusing writes)")

func (m *Mapper) lockState()   { m.stateSem <- struct{}{} }
func (m *Mapper) unlockState() { <-m.stateSem }

// lockStateCtx takes the state for a reader, or fails with ErrBusy when
// ctx ends first.
func (m *Mapper) lockStateCtx(ctx context.Context) error {
	select {
	case m.stateSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ErrBusy
	}
}
