package mapper

import (
	"bytes"
	"context"
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// From is the first ingest sequence to map again: the state is rebuilt
	// from the newest snapshot before it (from an empty state when From is
	// 1 or no snapshot is old enough).
	From uint64
	// DryRun rebuilds in memory only: nothing is appended, no read model
	// or snapshot is written.
	DryRun bool
}

// ReplayReport says what a replay found.
type ReplayReport struct {
	// StartedFrom is the snapshot's ingest sequence the rebuild started
	// from (0: an empty state); Head the last ingest record replayed.
	StartedFrom, Head uint64
	// Applied counts the records mapped again.
	Applied uint64
	// Compared counts re-derived events whose key is in the event log and
	// was compared with the logged event; Differ those that differ, by
	// event type and by resource type. These corrections are NOT sent to
	// subscribers (the log keeps what they already have).
	Compared, Differ int
	DifferByType     map[string]int
	DifferByResource map[string]int
	// Missing counts events the current mapping derives for observations
	// already mapped, at keys the event log lacks (not sent); Dropped counts
	// logged events after the starting point that it no longer derives.
	Missing, Dropped int
	// Unverifiable counts re-derived events whose logged counterpart was
	// removed by retention.
	Unverifiable int
	// Appended counts events for observations the event log had not
	// covered yet (appended, or in a dry run, that would be).
	Appended int
	// StateDiffers lists the stored snapshots whose state differs from the
	// rebuilt state at the same ingest sequence.
	StateDiffers []uint64
	// StatesCompared counts the stored snapshots compared.
	StatesCompared int
	// PatientsWritten counts read models written (not in a dry run).
	PatientsWritten int
	// Snapshot is the ingest sequence of the snapshot written (0: none).
	Snapshot uint64
}

// Clean reports whether the rebuilt state and events match what is stored.
func (r *ReplayReport) Clean() bool {
	return r.Differ == 0 && r.Missing == 0 && r.Dropped == 0 && len(r.StateDiffers) == 0
}

// dryEvents is an event log that numbers appends without storing them.
type dryEvents struct {
	eventlog.Log
	next uint64
}

func (d *dryEvents) Append(_ context.Context, _ eventlog.Key, _ *rbv1.Event) (uint64, error) {
	d.next++
	return d.next, nil
}

// Replay rebuilds the state from the newest snapshot before o.From by
// mapping the ingest log again with the current rules, up to the records
// present when it starts, and returns. Events whose key is already in the
// event log are not appended again (they are compared with the logged ones
// and the differences reported); events of observations the log has not
// covered yet are appended as the daemon would. Unless o.DryRun, every
// patient's read model of the rebuilt state is written and a snapshot of it
// stored. Run it while no daemon maps the same store.
func (m *Mapper) Replay(ctx context.Context, o ReplayOptions) (*ReplayReport, error) {
	rep := &ReplayReport{DifferByType: map[string]int{}, DifferByResource: map[string]int{}}
	first, lastSeq, err := m.cfg.Events.Bounds(ctx)
	if err != nil {
		return nil, err
	}
	// The logged events, by id (the id is a function of the key).
	logged := map[string]*rbv1.Event{}
	for from := first; first > 0 && from <= lastSeq; {
		evs, err := m.cfg.Events.Read(ctx, from, eventlog.Filter{}, 4096)
		if err != nil {
			return nil, fmt.Errorf("read event log: %w", err)
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			logged[ev.Id] = ev
		}
		from = evs[len(evs)-1].Sequence + 1
	}
	matched := map[string]bool{}
	// Stored snapshots, to compare the rebuilt state with.
	stored := map[uint64][]byte{}
	if m.cfg.Snapshots != nil {
		seqs, err := m.cfg.Snapshots.Snapshots(ctx)
		if err != nil {
			return nil, err
		}
		for _, s := range seqs {
			if b, err := m.cfg.Snapshots.GetSnapshot(ctx, s); err == nil {
				if snap, err := DecodeSnapshot(b); err == nil {
					stored[s] = snap.Raw
				}
			}
		}
	}
	events := m.cfg.Events
	if o.DryRun {
		m.cfg.Events = &dryEvents{Log: events, next: lastSeq}
		m.cfg.ReadModel = nil
		archive := m.cfg.Archive
		if archive != nil {
			// Evicted patients are read from the archive; what this run
			// evicts stays in memory.
			m.cfg.Archive = &OverlayArchive{Base: archive}
		}
		defer func() { m.cfg.Events, m.cfg.Archive = events, archive }()
	}
	var runErr error
	ro := runOpts{stopAtHead: true, noTimers: true}
	if o.From <= 1 {
		ro.noSnapshot = true
	} else {
		ro.limit = o.From - 1
	}
	ro.derived = func(ev *rbv1.Event, isLogged bool) {
		if !isLogged {
			rep.Appended++
			return
		}
		old := logged[ev.Id]
		if old == nil {
			if first == 0 || ev.Sequence < first {
				rep.Unverifiable++
			} else {
				rep.Missing++
			}
			return
		}
		matched[ev.Id] = true
		rep.Compared++
		c := proto.Clone(old).(*rbv1.Event)
		c.Sequence = ev.Sequence
		if !proto.Equal(c, ev) {
			rep.Differ++
			rep.DifferByType[ev.Type.String()]++
			rt := ev.ResourceType
			if rt == "" {
				rt = "(none)"
			}
			rep.DifferByResource[rt]++
		}
	}
	ro.applied = func(seq uint64) {
		rep.Applied++
		want, ok := stored[seq]
		if !ok {
			return
		}
		rep.StatesCompared++
		got, err := encodeState(m.state)
		if err != nil || !bytes.Equal(got, want) {
			rep.StateDiffers = append(rep.StateDiffers, seq)
		}
	}
	r, runErr := m.run(ctx, ro)
	if runErr != nil {
		return nil, runErr
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.StartedFrom = m.snapStats.Loaded
	rep.Head = r.replayEnd
	startSeq := r.startNextSeq
	for id, ev := range logged {
		if ev.Sequence >= startSeq && !matched[id] {
			rep.Dropped++
		}
	}
	sort.Slice(rep.StateDiffers, func(i, j int) bool { return rep.StateDiffers[i] < rep.StateDiffers[j] })
	if o.DryRun {
		return rep, nil
	}
	if m.cfg.ReadModel != nil {
		for _, p := range m.state.Patients {
			if err := m.putPatient(ctx, p); err != nil {
				return rep, fmt.Errorf("write read model: %w", err)
			}
			rep.PatientsWritten++
		}
	}
	if m.cfg.Snapshots != nil && m.state.Applied > 0 {
		pos := Position{Applied: m.state.Applied, NextSeq: r.nextSeq, LastKey: r.pos.LastKey}
		data, err := EncodeSnapshot(m.state, pos, m.cfg.Mapping, m.cfg.Now())
		if err != nil {
			return rep, err
		}
		if err := m.seen.write(ctx, m.seen.handOff()); err != nil {
			return rep, fmt.Errorf("write observation keys: %w", err)
		}
		if err := m.cfg.Snapshots.PutSnapshot(ctx, pos.Applied, data); err != nil {
			return rep, fmt.Errorf("write snapshot: %w", err)
		}
		rep.Snapshot = pos.Applied
	}
	return rep, nil
}
