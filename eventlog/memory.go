package eventlog

import (
	"context"
	"sync"

	"google.golang.org/protobuf/proto"

	rbv1 "radbridge/proto/radbridge/v1"
)

// Memory is an in-memory Log for tests of packages that use the log. It
// keeps everything and loses everything on exit.
type Memory struct {
	mu     sync.Mutex
	events []*rbv1.Event
	keys   map[Key]uint64
	last   Key
	wake   chan struct{}
}

// NewMemory returns an empty in-memory log.
func NewMemory() *Memory {
	return &Memory{keys: make(map[Key]uint64), wake: make(chan struct{})}
}

// Append implements Log.
func (m *Memory) Append(ctx context.Context, k Key, ev *rbv1.Event) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq, ok := m.keys[k]; ok {
		return seq, nil
	}
	c := proto.Clone(ev).(*rbv1.Event)
	c.Sequence = uint64(len(m.events) + 1)
	m.events = append(m.events, c)
	m.keys[k] = c.Sequence
	m.last = k
	close(m.wake)
	m.wake = make(chan struct{})
	return c.Sequence, nil
}

// Read implements Log.
func (m *Memory) Read(ctx context.Context, from uint64, f Filter, max int) ([]*rbv1.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if from == 0 {
		from = 1
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*rbv1.Event
	for i := from - 1; i < uint64(len(m.events)) && len(out) < max; i++ {
		if ev := m.events[i]; f.Match(ev) {
			out = append(out, proto.Clone(ev).(*rbv1.Event))
		}
	}
	return out, nil
}

// Bounds implements Log.
func (m *Memory) Bounds(ctx context.Context) (uint64, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 {
		return 0, 0, nil
	}
	return 1, uint64(len(m.events)), nil
}

// LastKey implements Log.
func (m *Memory) LastKey(ctx context.Context) (Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last, nil
}

// Watch implements Log.
func (m *Memory) Watch(ctx context.Context, from uint64, fn func(*rbv1.Event) error) error {
	if from == 0 {
		from = 1
	}
	for {
		m.mu.Lock()
		var batch []*rbv1.Event
		for i := from - 1; i < uint64(len(m.events)); i++ {
			batch = append(batch, m.events[i])
		}
		wake := m.wake
		m.mu.Unlock()
		for _, ev := range batch {
			if err := fn(proto.Clone(ev).(*rbv1.Event)); err != nil {
				return err
			}
			from = ev.Sequence + 1
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}
