// Package leased runs the mapper under the cluster's mapper lease. On the
// embedded store the process is alone and always maps. On an external
// store several processes may share the logs, and only the holder of the
// mapper lease maps: the event log has a single writer. Every term starts
// a fresh mapper, which rebuilds its state from the newest snapshot and
// the ingest log after it, so a new leader continues exactly where the old
// one's appended events end.
package leased

import (
	"context"
	"errors"
	"sync"

	"radbridge/leader"
	"radbridge/mapper"
	rbv1 "radbridge/proto/radbridge/v1"
)

// ErrNotLeading means this process does not run the mapper now.
var ErrNotLeading = errors.New("this process is not the mapper leader")

// Mapper runs a fresh mapper in every term of the mapper lease, or once
// for the whole run when the process is alone.
type Mapper struct {
	newMapper func() *mapper.Mapper
	elector   *leader.Elector // nil: always the leader

	mu   sync.Mutex
	cur  *mapper.Mapper
	last *mapper.Mapper // the newest mapper, kept for its counters
	// changed is closed (and replaced) whenever cur changes.
	changed chan struct{}
}

// New returns a Mapper that builds each term's mapper with newMapper. A
// nil elector means the process is alone and maps for the whole run.
func New(newMapper func() *mapper.Mapper, elector *leader.Elector) *Mapper {
	return &Mapper{newMapper: newMapper, elector: elector, changed: make(chan struct{})}
}

// Run maps until ctx ends: at once when alone, else in every term this
// process wins.
func (s *Mapper) Run(ctx context.Context) error {
	if s.elector == nil {
		return s.term(ctx)
	}
	return s.elector.Run(ctx, s.term)
}

func (s *Mapper) term(ctx context.Context) error {
	m := s.newMapper()
	s.set(m)
	defer s.set(nil)
	return m.Run(ctx)
}

func (s *Mapper) set(m *mapper.Mapper) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = m
	if m != nil {
		s.last = m
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Current returns the running mapper (nil on a follower).
func (s *Mapper) Current() *mapper.Mapper {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Latest returns the newest mapper this process ran (nil if none yet).
func (s *Mapper) Latest() *mapper.Mapper {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Leading reports whether this process maps now.
func (s *Mapper) Leading() bool { return s.Current() != nil }

// Clustered reports whether the process shares its store with others.
func (s *Mapper) Clustered() bool { return s.elector != nil }

// Ready reports whether the process can serve: a follower serves from the
// event log at once; the leader once its mapper has caught up.
func (s *Mapper) Ready() bool {
	m := s.Current()
	if m == nil {
		return s.elector != nil
	}
	return m.Ready()
}

// WaitReady returns once Ready would report true, or with ctx's error.
func (s *Mapper) WaitReady(ctx context.Context) error {
	for {
		s.mu.Lock()
		m, changed := s.cur, s.changed
		s.mu.Unlock()
		var caughtUp <-chan struct{}
		switch {
		case m != nil:
			caughtUp = m.ReadyNotify()
		case s.elector != nil:
			return nil // a follower
		}
		select {
		case <-caughtUp:
			return nil
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Applied is the last ingest sequence the running mapper applied (0 on a
// follower).
func (s *Mapper) Applied() uint64 {
	if m := s.Current(); m != nil {
		return m.Applied()
	}
	return 0
}

// Await implements api.Awaiter on the leader; a follower answers
// ErrNotLeading and the API waits for the event in the event log instead.
func (s *Mapper) Await(ctx context.Context, seq uint64) ([]*rbv1.Event, error) {
	m := s.Current()
	if m == nil {
		return nil, ErrNotLeading
	}
	return m.Await(ctx, seq)
}

// Status is the election's state ("single" role and no holder when alone).
func (s *Mapper) Status() (role, holder string) {
	if s.elector == nil {
		return "single", ""
	}
	st := s.elector.Status()
	if st.Leading {
		return "leader", st.Holder
	}
	return "follower", st.Holder
}

// Terms counts the terms this process has won (1 when alone: one term for
// the whole run).
func (s *Mapper) Terms() uint64 {
	if s.elector == nil {
		return 1
	}
	return s.elector.Status().Terms
}
