package mapper

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper/rules"
	"radbridge/readmodel"
)

// SnapshotStore keeps the mapper's snapshots durably. A snapshot is named by
// the ingest sequence it covers (every record up to it is applied).
type SnapshotStore interface {
	// PutSnapshot stores data as the snapshot at ingest sequence applied
	// and keeps only the newest few.
	PutSnapshot(ctx context.Context, applied uint64, data []byte) error
	// Snapshots lists the stored snapshots' sequences, newest first.
	Snapshots(ctx context.Context) ([]uint64, error)
	// GetSnapshot reads the snapshot at applied.
	GetSnapshot(ctx context.Context, applied uint64) ([]byte, error)
}

// SnapshotFormat is the version of the snapshot encoding; a snapshot of
// another version is ignored (the mapper replays further instead).
const SnapshotFormat = 1

// Position is where a snapshot stands in the logs.
type Position struct {
	// Applied is the last ingest sequence applied.
	Applied uint64 `json:"applied"`
	// NextSeq is the sequence the next derived event has or gets.
	NextSeq uint64 `json:"next_seq"`
	// LastKey is the key of the newest event derived (zero when none).
	LastKey eventlog.Key `json:"last_key"`
	// Dirty lists patients whose read model may not be written yet.
	Dirty []string `json:"dirty,omitempty"`
}

// snapshotHeader is the first line of a snapshot; the state's JSON follows.
type snapshotHeader struct {
	Format int `json:"format"`
	Position
	// Mapping fingerprints the mapping options the state was built with.
	Mapping string    `json:"mapping,omitempty"`
	Taken   time.Time `json:"taken"`
	SHA256  string    `json:"sha256"` // of the state's JSON
	Size    int       `json:"size"`
}

// Snapshot is a decoded snapshot.
type Snapshot struct {
	Position
	Mapping string
	Taken   time.Time
	State   *rules.State
	// Raw is the state's JSON as stored.
	Raw []byte
}

// EncodeSnapshot encodes state st at position pos.
func EncodeSnapshot(st *rules.State, pos Position, mapping string, taken time.Time) ([]byte, error) {
	body, err := encodeState(st)
	if err != nil {
		return nil, fmt.Errorf("encode mapper state: %w", err)
	}
	return encodeSnapshot(body, pos, mapping, taken), nil
}

func encodeSnapshot(body []byte, pos Position, mapping string, taken time.Time) []byte {
	sum := sha256.Sum256(body)
	h, _ := json.Marshal(snapshotHeader{Format: SnapshotFormat, Position: pos, Mapping: mapping, Taken: taken.UTC(),
		SHA256: hex.EncodeToString(sum[:]), Size: len(body)})
	out := make([]byte, 0, len(h)+1+len(body))
	out = append(append(append(out, h...), '\n'), body...)
	return out
}

// DecodeSnapshot decodes and verifies a snapshot.
func DecodeSnapshot(b []byte) (*Snapshot, error) {
	line, body, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return nil, errors.New("snapshot: no header line")
	}
	var h snapshotHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, fmt.Errorf("snapshot header: %w", err)
	}
	if h.Format != SnapshotFormat {
		return nil, fmt.Errorf("snapshot format %d, this radbridge reads format %d", h.Format, SnapshotFormat)
	}
	if len(body) != h.Size {
		return nil, fmt.Errorf("snapshot state is %d bytes, header says %d (truncated)", len(body), h.Size)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != h.SHA256 {
		return nil, errors.New("snapshot checksum mismatch")
	}
	st := rules.NewState()
	st.ResourceIDs = 0 // absent from snapshots before per-patient ids
	if err := json.Unmarshal(body, st); err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	if st.Applied != h.Applied {
		return nil, fmt.Errorf("snapshot header says ingest sequence %d, state %d", h.Applied, st.Applied)
	}
	if st.Patients == nil {
		st.Patients = map[string]*readmodel.Patient{}
	}
	if st.Timers == nil {
		st.Timers = map[string]*ingest.Timer{}
	}
	if st.Studies == nil {
		st.Studies = map[string]*rules.StudyState{}
	}
	if st.Orders == nil {
		st.Orders = map[string]*rules.OrderState{}
	}
	return &Snapshot{Position: h.Position, Mapping: h.Mapping, Taken: h.Taken, State: st, Raw: body}, nil
}

// MemorySnapshots is an in-memory SnapshotStore (tests, dry runs).
type MemorySnapshots struct {
	Keep int // newest snapshots kept; 3 when 0

	mu   sync.Mutex
	data map[uint64][]byte
}

// PutSnapshot implements SnapshotStore.
func (s *MemorySnapshots) PutSnapshot(_ context.Context, applied uint64, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data == nil {
		s.data = map[uint64][]byte{}
	}
	s.data[applied] = slices.Clone(data)
	keep := s.Keep
	if keep <= 0 {
		keep = 3
	}
	seqs := s.sorted()
	for _, seq := range seqs[min(keep, len(seqs)):] {
		delete(s.data, seq)
	}
	return nil
}

func (s *MemorySnapshots) sorted() []uint64 {
	var seqs []uint64
	for k := range s.data {
		seqs = append(seqs, k)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] > seqs[j] })
	return seqs
}

// Snapshots implements SnapshotStore.
func (s *MemorySnapshots) Snapshots(context.Context) ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sorted(), nil
}

// GetSnapshot implements SnapshotStore.
func (s *MemorySnapshots) GetSnapshot(_ context.Context, applied uint64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.data[applied]
	if !ok {
		return nil, fmt.Errorf("snapshot %d not found", applied)
	}
	return slices.Clone(b), nil
}

// Corrupt flips a byte of the snapshot at applied (tests).
func (s *MemorySnapshots) Corrupt(applied uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.data[applied]; len(b) > 0 {
		b[len(b)-2] ^= 0x55
	}
}

// SnapshotStats describes the mapper's snapshots.
type SnapshotStats struct {
	// Taken and Failed count snapshots written and failed since start.
	Taken, Failed uint64
	// LastApplied is the ingest sequence of the newest snapshot written
	// or loaded; LastBytes its size (of the state, when loaded).
	LastApplied uint64
	LastBytes   int
	// LastEncode is how long the mapper stopped to encode the newest
	// snapshot; LastWrite how long its background write took.
	LastEncode, LastWrite time.Duration
	// Loaded is the ingest sequence of the snapshot Run started from (0:
	// full replay).
	Loaded uint64
}

// SnapshotStats returns the snapshot counters.
func (m *Mapper) SnapshotStats() SnapshotStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapStats
}

// loadSnapshot returns the newest usable snapshot at or before limit (no
// limit when 0), or nil.
func (m *Mapper) loadSnapshot(ctx context.Context, limit, head, lastSeq uint64) *Snapshot {
	if m.cfg.Snapshots == nil {
		return nil
	}
	seqs, err := m.cfg.Snapshots.Snapshots(ctx)
	if err != nil {
		m.log.Error("list snapshots; replaying the whole ingest log", "err", err)
		return nil
	}
	for _, seq := range seqs {
		if limit > 0 && seq > limit {
			continue
		}
		b, err := m.cfg.Snapshots.GetSnapshot(ctx, seq)
		if err != nil {
			m.log.Error("read snapshot; trying an older one", "ingest_seq", seq, "err", err)
			continue
		}
		s, err := DecodeSnapshot(b)
		if err != nil {
			m.log.Error("snapshot is unusable; trying an older one", "ingest_seq", seq, "err", err)
			continue
		}
		if s.Applied > head || s.NextSeq == 0 || s.NextSeq-1 > lastSeq {
			m.log.Error("snapshot is ahead of the logs (were they restored from an older backup?); trying an older one",
				"ingest_seq", s.Applied, "ingest_head", head, "snapshot_events", s.NextSeq-1, "events", lastSeq)
			continue
		}
		if m.cfg.Mapping != "" && s.Mapping != "" && s.Mapping != m.cfg.Mapping {
			m.log.Warn("the mapping options changed since this snapshot: state and events before it keep the old mapping (radbridge replay rebuilds them)",
				"ingest_seq", s.Applied)
		}
		return s
	}
	return nil
}

// snapshotter writes snapshots in the background, one at a time.
type snapshotter struct {
	m        *Mapper
	wg       sync.WaitGroup
	busy     bool // guarded by m.mu
	since    int  // records applied since the last snapshot
	lastTime time.Time
}

// take encodes the state (on the mapper's goroutine, so it is consistent)
// and writes it in the background. Every event derived up to pos.Applied is
// in the event log, so the snapshot is never ahead of it.
func (s *snapshotter) take(ctx context.Context, pos Position) {
	m := s.m
	m.mu.Lock()
	if s.busy {
		m.mu.Unlock()
		return // the previous one is still being written; try again later
	}
	s.busy = true
	m.mu.Unlock()
	start := time.Now()
	seen := m.seen.handOff()
	body, err := encodeState(m.state)
	if err != nil {
		m.log.Error("encode snapshot", "err", err)
		m.mu.Lock()
		s.busy = false
		m.snapStats.Failed++
		m.mu.Unlock()
		return
	}
	taken := m.cfg.Now()
	encode := time.Since(start)
	s.since = 0
	s.lastTime = time.Now()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		start := time.Now()
		// The checksum and header are computed here, off the mapper's
		// goroutine: body is not shared with the state.
		data := encodeSnapshot(body, pos, m.cfg.Mapping, taken)
		// The keys the state relies on are stored first: a snapshot never
		// needs a key the store lacks.
		err := m.seen.write(wctx, seen)
		if err != nil {
			err = fmt.Errorf("observation keys: %w", err)
		} else {
			err = m.cfg.Snapshots.PutSnapshot(wctx, pos.Applied, data)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		s.busy = false
		if err != nil {
			m.snapStats.Failed++
			m.log.Error("write snapshot", "ingest_seq", pos.Applied, "err", err)
			return
		}
		m.snapStats.Taken++
		m.snapStats.LastApplied = pos.Applied
		m.snapStats.LastBytes = len(data)
		m.snapStats.LastEncode = encode
		m.snapStats.LastWrite = time.Since(start)
		m.log.Debug("snapshot written", "ingest_seq", pos.Applied, "bytes", len(data), "encode", encode, "write", time.Since(start))
	}()
	if m.cfg.SnapshotWait {
		s.wg.Wait()
	}
}

// due reports whether a snapshot should be taken now.
func (s *snapshotter) due() bool {
	cfg := s.m.cfg
	return s.since > 0 && (s.since >= cfg.SnapshotEvery || time.Since(s.lastTime) >= cfg.SnapshotInterval)
}
