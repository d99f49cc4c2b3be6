// Package fanout delivers the event log to many subscribers at once. One
// Hub follows the log and keeps its newest events in a bounded in-memory
// window; every subscriber pulls from that window at its own pace, with its
// own cursor, and reads older history from the log itself. No subscriber
// has a queue the hub must fill, so a slow one never delays the log or the
// others: when it falls out of the window it is told so and can resume from
// its cursor.
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

// ErrSlow means a subscriber fell behind the in-memory window while
// following live events.
var ErrSlow = errors.New("subscriber too slow")

// Entry is one event with its encodings, computed once for all subscribers.
//
// Entries in the hub's window are compact: Event carries every field but
// the FHIR resource (enough to filter and route), and the whole event is
// kept as its protobuf encoding; Full decodes it when the resource is
// needed. A decoded resource (a structpb.Struct) takes about ten times its
// encoded size in memory, so this keeps the window's memory close to
// --subscriber-window-bytes.
type Entry struct {
	// Event is the event; in the hub's window without its Resource (see
	// Full).
	Event *rbv1.Event

	pbOnce, jsOnce sync.Once
	pb, js         []byte
	stripped       bool
}

// NewEntry returns ev as a compact entry (ev's Resource is dropped from
// ev itself: the entry owns ev from now on).
func NewEntry(ev *rbv1.Event) *Entry {
	e := &Entry{Event: ev}
	if ev.GetResource() != nil {
		pb, err := proto.Marshal(ev)
		if err == nil {
			e.pb, e.stripped = pb, true
			ev.Resource = nil
		}
	}
	return e
}

// entryFromWire is NewEntry for an event as the log stores it: only the
// fields the hub routes by are decoded, and the stored bytes (with the
// sequence added) are the entry's encoding, so the resource is neither
// decoded nor encoded again.
func entryFromWire(seq uint64, data []byte) (*Entry, error) {
	ev, hadResource, err := eventlog.DecodeRouting(data, seq)
	if err != nil {
		return nil, err
	}
	return &Entry{Event: ev, pb: eventlog.WithSequence(data, seq), stripped: hadResource}, nil
}

// Proto returns the event's binary protobuf encoding.
func (e *Entry) Proto() []byte {
	e.pbOnce.Do(func() {
		if e.pb == nil {
			e.pb, _ = proto.Marshal(e.Event)
		}
	})
	return e.pb
}

// Full returns the whole event, its resource included. On a compact entry
// it is decoded anew on every call: callers that use it often should keep
// what they derive from it.
func (e *Entry) Full() *rbv1.Event {
	if !e.stripped {
		return e.Event
	}
	ev := new(rbv1.Event)
	if err := proto.Unmarshal(e.pb, ev); err != nil {
		return e.Event
	}
	return ev
}

// JSON returns the event's protojson encoding.
func (e *Entry) JSON() []byte {
	e.jsOnce.Do(func() { e.js, _ = protojson.MarshalOptions{UseProtoNames: true}.Marshal(e.Full()) })
	return e.js
}

// size is the entry's share of --subscriber-window-bytes: its encoding and
// the routing fields kept decoded.
func (e *Entry) size() int {
	if e.stripped {
		return len(e.pb) + proto.Size(e.Event)
	}
	return proto.Size(e.Event)
}

// Config bounds the window.
type Config struct {
	// WindowEvents and WindowBytes bound the in-memory window.
	WindowEvents int
	WindowBytes  int
	Logger       *slog.Logger
	// WatchdogEvery is how often the hub checks that its watch of the log
	// still delivers (default 5 s); tests shorten it.
	WatchdogEvery time.Duration
}

// Hub follows an event log.
type Hub struct {
	log eventlog.Log
	cfg Config

	mu    sync.RWMutex
	ring  []*Entry // ring[i] has sequence base+1+i
	base  uint64
	bytes int
	wake  chan struct{}
	ready chan struct{}

	subs        int64
	live        map[*Subscription]struct{} // open subscriptions (retention warnings)
	notify      map[*Subscription]func()   // callbacks of Notify
	byTransport map[string]int64           // open subscriptions by transport
	slow        map[string]uint64          // subscriptions ended by ErrSlow, by transport
	floor       uint64                     // oldest sequence the log retains (SetFloor)
}

// Stats are the hub's subscriber counters, by the transport named in
// SubscribeOn (a bounded set chosen by the caller: grpc, websocket, room).
type Stats struct {
	Subscribers     map[string]int64  // open now
	SlowDisconnects map[string]uint64 // fell behind the window (ErrSlow) since start
}

// New returns a hub for l; call Run.
func New(l eventlog.Log, cfg Config) *Hub {
	if cfg.WindowEvents <= 0 {
		cfg.WindowEvents = 8192
	}
	if cfg.WindowBytes <= 0 {
		cfg.WindowBytes = 64 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WatchdogEvery <= 0 {
		cfg.WatchdogEvery = 5 * time.Second
	}
	return &Hub{log: l, cfg: cfg, wake: make(chan struct{}), ready: make(chan struct{}),
		byTransport: map[string]int64{}, slow: map[string]uint64{}}
}

// Run follows the log from its current end until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	_, last, err := h.log.Bounds(ctx)
	if err != nil {
		return fmt.Errorf("fanout start: %w", err)
	}
	h.mu.Lock()
	h.base = last
	h.mu.Unlock()
	close(h.ready)
	for {
		wctx, stop := context.WithCancel(ctx)
		go h.watchdog(wctx, stop)
		var err error
		if wl, ok := h.log.(eventlog.WireWatcher); ok {
			err = wl.WatchWire(wctx, h.Head()+1, func(seq uint64, data []byte) error {
				e, err := entryFromWire(seq, data)
				if err != nil {
					return fmt.Errorf("event %d: %w", seq, err)
				}
				h.push(e)
				return nil
			})
		} else {
			err = h.log.Watch(wctx, h.Head()+1, func(ev *rbv1.Event) error {
				h.push(NewEntry(ev))
				return nil
			})
		}
		stop()
		if ctx.Err() != nil {
			return nil
		}
		h.cfg.Logger.Error("follow event log; retrying", "component", "fanout", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// watchdog ends a watch that has stopped delivering: the log has events
// past the hub's head and the head has not moved for a whole period (a
// watch whose server died can wait for ever without an error). Run then
// restarts the watch from the head; push drops anything seen twice.
func (h *Hub) watchdog(ctx context.Context, stop context.CancelFunc) {
	t := time.NewTicker(h.cfg.WatchdogEvery)
	defer t.Stop()
	behind, at := false, uint64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, last, err := h.log.Bounds(ctx)
		if err != nil {
			continue
		}
		head := h.Head()
		switch {
		case head >= last:
			behind = false
		case behind && head == at:
			h.cfg.Logger.Warn("the event log watch stopped delivering; restarting it", "component", "fanout", "head", head, "log_last", last)
			stop()
			return
		default:
			behind, at = true, head
		}
	}
}

// WaitReady blocks until Run has positioned the hub.
func (h *Hub) WaitReady(ctx context.Context) error {
	select {
	case <-h.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Hub) push(e *Entry) {
	h.mu.Lock()
	if e.Event.Sequence != h.base+uint64(len(h.ring))+1 {
		h.mu.Unlock()
		return // already have it (a retried watch)
	}
	h.ring = append(h.ring, e)
	h.bytes += e.size()
	for len(h.ring) > 1 && (len(h.ring) > h.cfg.WindowEvents || h.bytes > h.cfg.WindowBytes) {
		h.bytes -= h.ring[0].size()
		h.ring[0] = nil
		h.ring = h.ring[1:]
		h.base++
	}
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
	// Under the read lock only: the goroutines the callbacks start can
	// poll meanwhile.
	h.mu.RLock()
	for _, fn := range h.notify {
		fn()
	}
	h.mu.RUnlock()
}

// Head returns the newest sequence the hub has seen.
func (h *Hub) Head() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.base + uint64(len(h.ring))
}

// Covers reports whether since is a valid cursor inside the in-memory
// window (from its oldest event's predecessor to the head).
func (h *Hub) Covers(since uint64) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.ring) > 0 && since >= h.base && since <= h.base+uint64(len(h.ring)) && since+1 >= h.floor
}

// SetFloor tells the hub the oldest sequence the log still retains, so a
// cursor before it is not reported as covered by the in-memory window.
func (h *Hub) SetFloor(first uint64) {
	h.mu.Lock()
	h.floor = first
	h.mu.Unlock()
}

// Subscribers returns the number of open subscriptions.
func (h *Hub) Subscribers() int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.subs
}

// Stats returns a snapshot of the subscriber counters.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	st := Stats{Subscribers: make(map[string]int64, len(h.byTransport)), SlowDisconnects: make(map[string]uint64, len(h.slow))}
	for k, v := range h.byTransport {
		st.Subscribers[k] = v
	}
	for k, v := range h.slow {
		st.SlowDisconnects[k] = v
	}
	return st
}

// Subscription is one subscriber's cursor.
type Subscription struct {
	h         *Hub
	f         eventlog.Filter
	pos       uint64
	cur       atomic.Uint64 // pos, for other goroutines
	live      bool
	max       int
	timer     *time.Timer
	stop      <-chan struct{}
	transport string
	slow      bool
}

// Subscribe starts a cursor after sequence since (counted as transport
// "other"; see SubscribeOn).
func (h *Hub) Subscribe(since uint64, f eventlog.Filter) *Subscription {
	return h.SubscribeOn("other", since, f)
}

// SubscribeOn starts a cursor after sequence since for a subscriber on
// transport, which names it in Stats.
func (h *Hub) SubscribeOn(transport string, since uint64, f eventlog.Filter) *Subscription {
	h.mu.Lock()
	h.subs++
	h.byTransport[transport]++
	sub := &Subscription{h: h, f: f, pos: since, max: 256, transport: transport}
	sub.cur.Store(since)
	if h.live == nil {
		h.live = map[*Subscription]struct{}{}
	}
	h.live[sub] = struct{}{}
	h.mu.Unlock()
	return sub
}

// CountBehind returns how many open subscriptions have not yet passed
// sequence seq-1 (their next event is older than seq): with seq the
// retention edge soon, those are about to lose history they still need.
func (h *Hub) CountBehind(seq uint64) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for s := range h.live {
		if s.cur.Load()+1 < seq {
			n++
		}
	}
	return n
}

// Close releases the subscription.
func (s *Subscription) Close() {
	if s.timer != nil {
		s.timer.Stop()
	}
	s.h.mu.Lock()
	s.h.subs--
	s.h.byTransport[s.transport]--
	delete(s.h.live, s)
	delete(s.h.notify, s)
	s.h.mu.Unlock()
}

// Notify makes the hub call fn each time an event enters the window, until
// Close: a subscriber that has no goroutine waiting in Next learns there
// may be something for Poll. fn runs on the hub's goroutine with the hub
// read-locked: it must return at once and not call the hub.
func (s *Subscription) Notify(fn func()) {
	s.h.mu.Lock()
	if s.h.notify == nil {
		s.h.notify = map[*Subscription]func(){}
	}
	s.h.notify[s] = fn
	s.h.mu.Unlock()
}

// Poll returns the next matching events without waiting: what the window
// holds after the cursor, or a page of older events from the log while
// catching up. An empty result means nothing is there yet. Like Next, it
// must not be called by two goroutines at once.
func (s *Subscription) Poll(ctx context.Context) ([]*Entry, error) {
	out, _, err := s.poll(ctx)
	return out, err
}

// Position is the last sequence the subscription has passed (delivered or
// skipped by its filter).
func (s *Subscription) Position() uint64 { return s.pos }

// StopOn makes Next return context.Canceled once done is closed (the end
// of a whole service, without a context of its own per subscriber).
func (s *Subscription) StopOn(done <-chan struct{}) { s.stop = done }

// Next returns the next matching events, waiting up to idle for one. An
// empty result with a nil error means idle passed (send a heartbeat).
func (s *Subscription) Next(ctx context.Context, idle time.Duration) ([]*Entry, error) {
	if s.timer == nil {
		s.timer = time.NewTimer(idle)
	} else {
		s.timer.Reset(idle)
	}
	timer := s.timer
	defer timer.Stop()
	for {
		select {
		case <-s.stop: // also between the pages of a catch-up
			return nil, context.Canceled
		default:
		}
		out, wake, err := s.poll(ctx)
		if err != nil || len(out) > 0 {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.stop:
			return nil, context.Canceled
		case <-timer.C:
			return nil, nil
		case <-wake:
		}
	}
}

func (s *Subscription) poll(ctx context.Context) ([]*Entry, <-chan struct{}, error) {
	h := s.h
	h.mu.RLock()
	base, head, wake := h.base, h.base+uint64(len(h.ring)), h.wake
	if s.pos >= base {
		var out []*Entry
		i := s.pos - base
		for ; i < uint64(len(h.ring)) && len(out) < s.max; i++ {
			if e := h.ring[i]; s.f.Match(e.Event) {
				out = append(out, e)
			}
		}
		h.mu.RUnlock()
		s.pos = base + i
		s.cur.Store(s.pos)
		s.live = true
		return out, wake, nil
	}
	h.mu.RUnlock()
	if s.live {
		if !s.slow {
			s.slow = true
			h.mu.Lock()
			h.slow[s.transport]++
			h.mu.Unlock()
		}
		return nil, nil, fmt.Errorf("%w: fell more than the in-memory window behind at sequence %d", ErrSlow, s.pos)
	}
	// Catch up from the log. Everything up to head is scanned by Read.
	evs, err := h.log.Read(ctx, s.pos+1, s.f, s.max)
	if err != nil {
		return nil, nil, err
	}
	out := make([]*Entry, len(evs))
	for i, ev := range evs {
		out[i] = &Entry{Event: ev} // not kept: no need to compact
	}
	if len(evs) == s.max {
		s.pos = evs[len(evs)-1].Sequence
	} else {
		s.pos = head
		if n := len(evs); n > 0 && evs[n-1].Sequence > head {
			s.pos = evs[n-1].Sequence
		}
	}
	s.cur.Store(s.pos)
	return out, wake, nil
}
