package fanout_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"radbridge/eventlog"
	"radbridge/fanout"
	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

func appendN(t *testing.T, l eventlog.Log, from, n int, patient string) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := l.Append(context.Background(), eventlog.Key{IngestSeq: uint64(i)}, &rbv1.Event{Type: rbv1.EventType_ORDER_PLACED, PatientId: patient}); err != nil {
			t.Fatal(err)
		}
	}
}

func startHub(t *testing.T, l eventlog.Log, window int) *fanout.Hub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := fanout.New(l, fanout.Config{WindowEvents: window})
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

// collect reads from a subscription until it has seen sequence last.
func collect(ctx context.Context, s *fanout.Subscription, last uint64) ([]uint64, error) {
	return collectAt(ctx, s, last, nil)
}

// collectAt is collect that also publishes the newest sequence read to pos,
// so that a producer can pace itself by its subscribers.
func collectAt(ctx context.Context, s *fanout.Subscription, last uint64, pos *atomic.Uint64) ([]uint64, error) {
	var got []uint64
	for {
		es, err := s.Next(ctx, time.Second)
		if err != nil {
			return got, err
		}
		for _, e := range es {
			got = append(got, e.Event.Sequence)
			if pos != nil {
				pos.Store(e.Event.Sequence)
			}
			if e.Event.Sequence >= last {
				return got, nil
			}
		}
	}
}

// TestCatchUpThenLiveNoGapNoDuplicate has subscribers start at every cursor
// from history (older than the window) while events keep arriving: each
// must see exactly since+1..last, in order. The producer never runs more
// than half a window ahead of the slowest subscriber: the test is about the
// hand-over from catch-up to live, not about how fast a subscriber goroutine
// is scheduled on a loaded machine (cutting off a subscriber that does fall
// behind is TestSlowSubscriberIsCutOffNotTheOthers).
func TestCatchUpThenLiveNoGapNoDuplicate(t *testing.T) {
	l := eventlog.NewMemory()
	appendN(t, l, 1, 100, "P1") // history before the hub started
	const window = 32
	h := startHub(t, l, window)
	const last = 300
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	results := make(map[uint64][]uint64)
	var mu sync.Mutex
	sinces := []uint64{0, 1, 50, 99, 100, 150}
	positions := make([]atomic.Uint64, len(sinces))
	for i, since := range sinces {
		positions[i].Store(since)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A subscriber that stops early must not hold the producer up.
			defer positions[i].Store(last)
			s := h.Subscribe(since, eventlog.Filter{})
			defer s.Close()
			got, err := collectAt(ctx, s, last, &positions[i])
			if err != nil {
				t.Errorf("since %d: %v", since, err)
			}
			mu.Lock()
			results[since] = got
			mu.Unlock()
		}()
	}
	slowest := func() uint64 {
		m := uint64(last)
		for i := range positions {
			m = min(m, positions[i].Load())
		}
		return m
	}
	for i := 101; i <= last; i++ {
		for uint64(i) > slowest()+window/2 && ctx.Err() == nil {
			time.Sleep(100 * time.Microsecond) // the writer's pace: within half a window of the slowest reader
		}
		appendN(t, l, i, 1, "P1")
		if i%10 == 0 {
			time.Sleep(time.Millisecond) // the writer's pace, not a wait
		}
	}
	wg.Wait()
	for since, got := range results {
		if uint64(len(got)) != last-since {
			t.Errorf("since %d: got %d events, want %d", since, len(got), last-since)
			continue
		}
		for i, seq := range got {
			if seq != since+uint64(i)+1 {
				t.Errorf("since %d: event %d has sequence %d, want %d", since, i, seq, since+uint64(i)+1)
				break
			}
		}
	}
}

func TestFilterSkipsOtherPatients(t *testing.T) {
	l := eventlog.NewMemory()
	h := startHub(t, l, 64)
	s := h.Subscribe(0, eventlog.Filter{PatientIDs: []string{"P2"}})
	defer s.Close()
	appendN(t, l, 1, 5, "P1")
	appendN(t, l, 6, 1, "P2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := collect(ctx, s, 6)
	if err != nil || len(got) != 1 || got[0] != 6 {
		t.Fatalf("got %v, %v; want [6]", got, err)
	}
}

// TestSlowSubscriberIsCutOffNotTheOthers: a live subscriber that stops
// reading falls out of the window and gets ErrSlow with a resumable
// position; a reading subscriber and the appender are not held up.
func TestSlowSubscriberIsCutOffNotTheOthers(t *testing.T) {
	l := eventlog.NewMemory()
	h := startHub(t, l, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	slow := h.SubscribeOn("websocket", 0, eventlog.Filter{})
	defer slow.Close()
	fast := h.SubscribeOn("grpc", 0, eventlog.Filter{})
	defer fast.Close()
	appendN(t, l, 1, 1, "P1")
	if got, err := collect(ctx, slow, 1); err != nil || len(got) != 1 {
		t.Fatalf("slow first read: %v %v", got, err)
	}
	progress := make(chan uint64, 128)
	done := make(chan error, 1)
	go func() {
		for {
			es, err := fast.Next(ctx, time.Second)
			if err != nil {
				done <- err
				return
			}
			for _, e := range es {
				progress <- e.Event.Sequence
				if e.Event.Sequence == 100 {
					done <- nil
					return
				}
			}
		}
	}()
	// The slow one is not reading; the fast one keeps pace with the appender.
	for i := 1; i <= 100; i++ {
		if i > 1 {
			appendN(t, l, i, 1, "P1")
		}
		if seq := <-progress; seq != uint64(i) {
			t.Fatalf("fast subscriber got %d, want %d", seq, i)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("fast subscriber: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "hub head at 100", func() bool { return h.Head() >= 100 })
	_, err := slow.Next(ctx, time.Second)
	if !errors.Is(err, fanout.ErrSlow) {
		t.Fatalf("slow subscriber got %v, want ErrSlow", err)
	}
	if slow.Position() != 1 {
		t.Errorf("slow subscriber resumes from %d, want 1", slow.Position())
	}
	// A second Next reports ErrSlow again but counts one disconnect.
	if _, err := slow.Next(ctx, time.Second); !errors.Is(err, fanout.ErrSlow) {
		t.Fatalf("slow subscriber again: %v", err)
	}
	st := h.Stats()
	if diff := cmp.Diff(st.SlowDisconnects, map[string]uint64{"websocket": 1}); diff != "" {
		t.Errorf("SlowDisconnects (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(st.Subscribers, map[string]int64{"websocket": 1, "grpc": 1}); diff != "" {
		t.Errorf("Subscribers (-got +want):\n%s", diff)
	}
	// Resuming from its position catches up from the log.
	again := h.Subscribe(slow.Position(), eventlog.Filter{})
	defer again.Close()
	got, err := collect(ctx, again, 100)
	if err != nil || len(got) != 99 || got[0] != 2 {
		t.Fatalf("resume: %d events from %v, %v", len(got), got[:min(1, len(got))], err)
	}
}

func TestIdleReturnsForHeartbeat(t *testing.T) {
	l := eventlog.NewMemory()
	h := startHub(t, l, 16)
	s := h.Subscribe(0, eventlog.Filter{})
	defer s.Close()
	es, err := s.Next(context.Background(), 20*time.Millisecond)
	if err != nil || len(es) != 0 {
		t.Fatalf("idle Next = %v, %v; want nothing, nil", es, err)
	}
	if n := h.Subscribers(); n != 1 {
		t.Errorf("Subscribers = %d, want 1", n)
	}
}

// TestCompactEntry: the window keeps an event's resource only encoded;
// every encoding and Full still carry it.
func TestCompactEntry(t *testing.T) {
	res, err := structpb.NewStruct(map[string]any{"resourceType": "DiagnosticReport", "id": "dr-1", "conclusion": "No acute abnormality."})
	if err != nil {
		t.Fatal(err)
	}
	orig := &rbv1.Event{Sequence: 7, Id: "e7", PatientId: "P1", Type: rbv1.EventType_IMAGING_REPORT_READY, ResourceType: "DiagnosticReport", Resource: res}
	want := proto.Clone(orig).(*rbv1.Event)
	e := fanout.NewEntry(orig)
	if e.Event.GetResource() != nil {
		t.Error("the window entry still holds the decoded resource")
	}
	if e.Event.GetPatientId() != "P1" || e.Event.GetSequence() != 7 || e.Event.GetType() != rbv1.EventType_IMAGING_REPORT_READY {
		t.Errorf("routing fields lost: %v", e.Event)
	}
	if got := e.Full(); !proto.Equal(got, want) {
		t.Errorf("Full() = %v, want %v", got, want)
	}
	var fromPB rbv1.Event
	if err := proto.Unmarshal(e.Proto(), &fromPB); err != nil || !proto.Equal(&fromPB, want) {
		t.Errorf("Proto() decodes to %v (%v), want %v", &fromPB, err, want)
	}
	if !strings.Contains(string(e.JSON()), `"conclusion":"No acute abnormality."`) {
		t.Errorf("JSON() lacks the resource: %s", e.JSON())
	}
}

// TestCountBehindAndFloor: the hub counts open subscriptions whose cursor
// is before a sequence (the retention edge soon), and a cursor before the
// log's retained floor is not covered by the window.
func TestCountBehindAndFloor(t *testing.T) {
	l := eventlog.NewMemory()
	h := startHub(t, l, 64)
	appendN(t, l, 1, 20, "P1")
	testkit.Eventually(t, 10*time.Second, "hub head at 20", func() bool { return h.Head() >= 20 })
	old := h.Subscribe(2, eventlog.Filter{})
	defer old.Close()
	cur := h.Subscribe(15, eventlog.Filter{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := collect(ctx, cur, 20); err != nil {
		t.Fatal(err)
	}
	if n := h.CountBehind(10); n != 1 {
		t.Errorf("CountBehind(10) = %d, want 1 (the subscription at 2)", n)
	}
	if n := h.CountBehind(3); n != 0 {
		t.Errorf("CountBehind(3) = %d, want 0 (next events 3 and 21 are kept)", n)
	}
	cur.Close()
	if n := h.CountBehind(30); n != 1 {
		t.Errorf("after a close CountBehind(30) = %d, want 1", n)
	}
	if !h.Covers(2) {
		t.Fatal("window does not cover cursor 2")
	}
	h.SetFloor(10)
	if h.Covers(2) || !h.Covers(9) {
		t.Errorf("with the log retaining from 10: Covers(2) %v (want false), Covers(9) %v (want true)", h.Covers(2), h.Covers(9))
	}
}

// stallingLog is an event log whose first watch stops delivering after
// stallAfter without returning an error, as an ordered consumer whose
// JetStream server died can.
type stallingLog struct {
	*eventlog.Memory
	stallAfter uint64
	mu         sync.Mutex
	watches    int
}

func (l *stallingLog) Watch(ctx context.Context, from uint64, fn func(*rbv1.Event) error) error {
	l.mu.Lock()
	l.watches++
	first := l.watches == 1
	l.mu.Unlock()
	if !first {
		return l.Memory.Watch(ctx, from, fn)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := l.Memory.Watch(wctx, from, func(ev *rbv1.Event) error {
		if ev.Sequence > l.stallAfter {
			<-ctx.Done() // silent: neither an event nor an error
			return ctx.Err()
		}
		return fn(ev)
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// TestWatchThatStopsDeliveringIsRestarted: when the hub's watch of the log
// goes silent while the log grows, the watchdog restarts it and subscribers
// get every event once, in order.
func TestWatchThatStopsDeliveringIsRestarted(t *testing.T) {
	l := &stallingLog{Memory: eventlog.NewMemory(), stallAfter: 5}
	ctx, cancel := context.WithCancel(context.Background())
	h := fanout.New(l, fanout.Config{WindowEvents: 64, WatchdogEvery: 50 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	s := h.Subscribe(0, eventlog.Filter{})
	defer s.Close()
	appendN(t, l, 1, 20, "P1")
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	got, err := collect(rctx, s, 20)
	if err != nil {
		t.Fatalf("after %v: %v", got, err)
	}
	for i, seq := range got {
		if seq != uint64(i)+1 {
			t.Fatalf("sequences %v, want 1..20 once each", got)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watches < 2 {
		t.Errorf("%d watches, want the stalled one restarted", l.watches)
	}
}

// TestLiveEntrySharedByAllSubscribers: every live subscriber gets the same
// Entry for an event, so its protojson encoding (what /v1/events:stream
// writes) is computed once and the same bytes go to every socket; a
// subscriber filtered to another patient does not get it.
func TestLiveEntrySharedByAllSubscribers(t *testing.T) {
	l := eventlog.NewMemory()
	h := startHub(t, l, 64)
	const n = 50
	subs := make([]*fanout.Subscription, n)
	for i := range subs {
		subs[i] = h.Subscribe(h.Head(), eventlog.Filter{PatientIDs: []string{"P1"}})
		defer subs[i].Close()
	}
	other := h.Subscribe(h.Head(), eventlog.Filter{PatientIDs: []string{"P2"}})
	defer other.Close()
	res, _ := structpb.NewStruct(map[string]any{"resourceType": "ImagingStudy", "id": "1.2.3"})
	if _, err := l.Append(context.Background(), eventlog.Key{IngestSeq: 1}, &rbv1.Event{Type: rbv1.EventType_IMAGING_STUDY_AVAILABLE, PatientId: "P1", Resource: res}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var first *fanout.Entry
	var js []byte
	for i, s := range subs {
		es, err := s.Next(ctx, time.Minute)
		if err != nil || len(es) != 1 {
			t.Fatalf("subscriber %d: %d entries, %v", i, len(es), err)
		}
		b := es[0].JSON()
		if first == nil {
			first, js = es[0], b
			if !strings.Contains(string(b), `"resourceType":"ImagingStudy"`) {
				t.Fatalf("JSON %s has no resource", b)
			}
			continue
		}
		if es[0] != first || len(b) == 0 || &b[0] != &js[0] {
			t.Errorf("subscriber %d got its own entry or encoding", i)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if es, err := other.Next(short, time.Minute); len(es) != 0 {
		t.Errorf("P2 subscriber got %d entries (%v)", len(es), err)
	}
}

// TestNotifyThenPoll: a subscriber without a goroutine in Next is told of
// each new event and polls it (catch-up from the log first, then the
// window), in order and once; Poll never waits; after Close it is no
// longer told.
func TestNotifyThenPoll(t *testing.T) {
	l := eventlog.NewMemory()
	appendN(t, l, 1, 5, "P1") // history before the hub starts: read from the log
	h := startHub(t, l, 64)
	s := h.Subscribe(0, eventlog.Filter{PatientIDs: []string{"P1"}})
	kicks := make(chan struct{}, 100)
	s.Notify(func() { kicks <- struct{}{} })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []uint64
	poll := func() {
		t.Helper()
		for {
			es, err := s.Poll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) == 0 {
				return
			}
			for _, e := range es {
				got = append(got, e.Event.Sequence)
			}
		}
	}
	poll()
	appendN(t, l, 6, 3, "P1")
	appendN(t, l, 9, 1, "P2")
	for len(got) < 8 {
		select {
		case <-kicks:
		case <-ctx.Done():
			t.Fatalf("got %v; no notification for the rest", got)
		}
		poll()
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8}; !cmp.Equal(got, want) {
		t.Fatalf("polled %v, want %v", got, want)
	}
	for len(kicks) > 0 {
		<-kicks
	}
	s.Close()
	appendN(t, l, 10, 1, "P1")
	for h.Head() < 10 {
		if ctx.Err() != nil {
			t.Fatal("event 10 never reached the hub")
		}
		time.Sleep(time.Millisecond)
	}
	if len(kicks) != 0 {
		t.Errorf("notified after Close")
	}
}

// TestStopOn: a closed stop channel ends Next at once, whether it waits for
// live events or still has history to catch up on.
func TestStopOn(t *testing.T) {
	l := eventlog.NewMemory()
	appendN(t, l, 1, 600, "P1")
	h := startHub(t, l, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := make(chan struct{})
	live := h.Subscribe(h.Head(), eventlog.Filter{})
	defer live.Close()
	live.StopOn(stop)
	behind := h.Subscribe(0, eventlog.Filter{})
	defer behind.Close()
	behind.StopOn(stop)
	if es, err := behind.Next(ctx, time.Minute); err != nil || len(es) == 0 {
		t.Fatalf("catch-up: %d events, %v", len(es), err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := live.Next(ctx, time.Minute)
		done <- err
	}()
	close(stop)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("waiting Next after stop: %v, want context.Canceled", err)
	}
	if es, err := behind.Next(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("catch-up Next after stop: %d events, %v; want context.Canceled", len(es), err)
	}
}

// wireLog is a memory log that also hands watchers each event as a log
// stores it (eventlog.WireWatcher), as the JetStream log does.
type wireLog struct{ *eventlog.Memory }

func (w wireLog) WatchWire(ctx context.Context, from uint64, fn func(uint64, []byte) error) error {
	return w.Memory.Watch(ctx, from, func(ev *rbv1.Event) error {
		data, err := eventlog.EncodeStored(ev)
		if err != nil {
			return err
		}
		return fn(ev.Sequence, data)
	})
}

// TestWireEntriesMatchDecoded: a hub that takes the log's stored encoding
// (no decoding of the resource, no encoding again) gives its subscribers
// the same entries as one that takes decoded events: the same routing
// fields, Full events, protobuf and JSON, with and without a resource, and
// the same filtering.
func TestWireEntriesMatchDecoded(t *testing.T) {
	plain := eventlog.NewMemory()
	wire := wireLog{eventlog.NewMemory()}
	hubs := []*fanout.Hub{startHub(t, plain, 64), startHub(t, wire, 64)}
	res, err := structpb.NewStruct(map[string]any{"resourceType": "DiagnosticReport", "id": "dr-1", "conclusion": "No acute abnormality.", "status": "final"})
	if err != nil {
		t.Fatal(err)
	}
	events := []*rbv1.Event{
		{Id: "e1", PatientId: "P1", Type: rbv1.EventType_IMAGING_REPORT_READY, ResourceType: "DiagnosticReport", ResourceId: "dr-1", Resource: res, Priority: rbv1.Priority_PRIORITY_STAT},
		{Id: "e2", PatientId: "P2", Type: rbv1.EventType_ORDER_PLACED},
		{Id: "e3", PatientId: "P1", Type: rbv1.EventType_ORDER_PLACED, AccessionNumber: "ACC1"},
	}
	for i, ev := range events {
		for _, l := range []eventlog.Log{plain, wire} {
			if _, err := l.Append(context.Background(), eventlog.Key{IngestSeq: uint64(i + 1)}, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	read := func(h *fanout.Hub) []*fanout.Entry {
		s := h.Subscribe(0, eventlog.Filter{PatientIDs: []string{"P1"}})
		defer s.Close()
		var out []*fanout.Entry
		for len(out) < 2 {
			es, err := s.Next(ctx, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, es...)
		}
		return out
	}
	want, got := read(hubs[0]), read(hubs[1])
	if len(got) != 2 || got[0].Event.GetSequence() != 1 || got[1].Event.GetSequence() != 3 {
		t.Fatalf("wire hub gave P1 %d entries: %v", len(got), got)
	}
	for i := range want {
		w, g := want[i], got[i]
		if !proto.Equal(g.Event, w.Event) {
			t.Errorf("entry %d routing fields %v, want %v", i, g.Event, w.Event)
		}
		if !proto.Equal(g.Full(), w.Full()) {
			t.Errorf("entry %d Full %v, want %v", i, g.Full(), w.Full())
		}
		var gp, wp rbv1.Event
		if err := proto.Unmarshal(g.Proto(), &gp); err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(w.Proto(), &wp); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&gp, &wp) {
			t.Errorf("entry %d Proto decodes to %v, want %v", i, &gp, &wp)
		}
		var gj, wj rbv1.Event
		if err := protojson.Unmarshal(g.JSON(), &gj); err != nil {
			t.Fatal(err)
		}
		if err := protojson.Unmarshal(w.JSON(), &wj); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&gj, &wj) {
			t.Errorf("entry %d JSON %s, want %s", i, g.JSON(), w.JSON())
		}
	}
	if got[0].Event.GetResource() != nil || got[0].Full().GetResource() == nil {
		t.Error("the wire entry should keep its resource only encoded, and give it back in Full")
	}
}

// BenchmarkHubEntry: what the hub does with each new event from the log,
// decoded in full and encoded again for the window (NewEntry), against
// taking the stored encoding (entryFromWire, through a WireWatcher).
func BenchmarkHubEntry(b *testing.B) {
	res, err := structpb.NewStruct(map[string]any{
		"resourceType": "DiagnosticReport", "id": "dr-LOAD0001-ACC1", "status": "final",
		"code":          map[string]any{"coding": []any{map[string]any{"system": "urn:oid:1.2.3.4.5.6", "code": "CTCHEST", "display": "CT CHEST"}}, "text": "CT CHEST"},
		"subject":       map[string]any{"reference": "Patient/LOAD0001", "identifier": map[string]any{"system": "urn:radbridge:TEST", "value": "LOAD0001"}},
		"identifier":    []any{map[string]any{"value": "ACC1"}, map[string]any{"value": "PLC1"}},
		"basedOn":       []any{map[string]any{"reference": "ServiceRequest/sr-LOAD0001-ACC1"}},
		"conclusion":    "IMPRESSION: nothing, this is a load test.",
		"presentedForm": []any{map[string]any{"contentType": "text/plain", "data": "U3ludGhldGljIGxvYWQtdGVzdCByZXBvcnQgbGluZSBvbmUuCklNUFJFU1NJT046IG5vdGhpbmcsIHRoaXMgaXMgYSBsb2FkIHRlc3Qu"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	ev := &rbv1.Event{Id: "ev-1", PatientId: "LOAD0001", Type: rbv1.EventType_IMAGING_REPORT_READY, ResourceType: "DiagnosticReport", Resource: res}
	data, err := eventlog.EncodeStored(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode-NewEntry", func(b *testing.B) {
		for b.Loop() {
			e := new(rbv1.Event)
			if err := proto.Unmarshal(data, e); err != nil {
				b.Fatal(err)
			}
			e.Sequence = 1
			fanout.NewEntry(e)
		}
	})
	b.Run("wire", func(b *testing.B) {
		for b.Loop() {
			if _, err := fanout.EntryFromWire(1, data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
