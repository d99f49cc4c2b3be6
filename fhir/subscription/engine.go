package subscription

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/eventlog"
	"radbridge/fanout"
	rbv1 "radbridge/proto/radbridge/v1"
)

// SignatureHeader carries the HMAC-SHA256 of a rest-hook body under the
// subscription's secret (ExtSecret): "sha256=" and 64 lower-case hex
// digits.
const SignatureHeader = "X-Radbridge-Signature"

// Config configures the delivery engine and the HTTP front.
type Config struct {
	Store *Store
	// Hub follows the event log; Log reads it ($events, redelivery).
	Hub *fanout.Hub
	Log eventlog.Log
	// BaseURL is the FHIR base of references in notifications
	// (https://host/fhir).
	BaseURL string
	// Allow is the rest-hook allow-list.
	Allow Allow
	// MaxFailures is how many consecutive failed deliveries (or
	// handshakes) move a subscription to status error (default 10).
	MaxFailures int
	// RetryBase and RetryMax bound the exponential backoff between
	// attempts (defaults 500 ms and 1 min), each with up to 50% jitter.
	RetryBase, RetryMax time.Duration
	// TLS verifies rest-hook servers (nil: the system roots).
	TLS *tls.Config
	// TokenTTL is how long a websocket binding token is valid (60 s).
	TokenTTL time.Duration
	// WriteTimeout bounds one websocket write (10 s).
	WriteTimeout time.Duration
	// MaxPerSubject and MaxTotal cap the subscriptions one token subject
	// may own and the bucket holds (defaults 100 and 10,000): a create
	// over a cap is a 429 OperationOutcome.
	MaxPerSubject, MaxTotal int
	Logger                  *slog.Logger
}

func (c *Config) defaults() {
	if c.MaxFailures <= 0 {
		c.MaxFailures = 10
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 500 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = time.Minute
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = time.Minute
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxPerSubject <= 0 {
		c.MaxPerSubject = 100
	}
	if c.MaxTotal <= 0 {
		c.MaxTotal = 10000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Engine delivers notifications: one worker per requested or active
// subscription. Run it in one process at a time (under a lease in a
// cluster).
type Engine struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client

	mu      sync.Mutex
	workers map[string]*worker
}

// NewEngine returns an engine; call Run.
func NewEngine(cfg Config) *Engine {
	cfg.defaults()
	tr := &http.Transport{
		Proxy:               nil, // never an environment proxy: the allow-list checks the real peer
		DialContext:         cfg.Allow.DialContext,
		TLSClientConfig:     cfg.TLS,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &Engine{
		cfg: cfg, log: cfg.Logger.With("component", "fhir-subscription"),
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is not a delivery
		}},
		workers: map[string]*worker{},
	}
}

// Active returns the number of running workers.
func (e *Engine) Active() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, w := range e.workers {
		select {
		case <-w.done:
		default:
			n++
		}
	}
	return n
}

// Run follows the subscription bucket and runs a worker per requested or
// active subscription until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	watch, err := e.cfg.Store.kv.Watch(ctx, "sub.*")
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while the watch was being set up
		}
		return fmt.Errorf("watch subscriptions: %w", err)
	}
	defer watch.Stop()
	var wg sync.WaitGroup
	defer func() {
		e.mu.Lock()
		for id, w := range e.workers {
			w.cancel()
			delete(e.workers, id)
		}
		e.mu.Unlock()
		wg.Wait()
	}()
	for {
		var ent jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case ent, ok = <-watch.Updates():
		}
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return errors.New("watch subscriptions: ended")
		}
		if ent == nil {
			continue // the initial values are in
		}
		id := strings.TrimPrefix(ent.Key(), "sub.")
		e.mu.Lock()
		w := e.workers[id]
		if ent.Operation() != jetstream.KeyValuePut {
			if w != nil {
				w.cancel()
				delete(e.workers, id)
			}
			e.mu.Unlock()
			continue
		}
		if w != nil {
			select {
			case <-w.done:
			default:
				e.mu.Unlock()
				continue // running: it wrote this itself
			}
		}
		st := new(Stored)
		if err := json.Unmarshal(ent.Value(), st); err != nil {
			e.mu.Unlock()
			e.log.Error("undecodable subscription; skipped", "subscription", id, "err", err)
			continue
		}
		if st.Status != StatusRequested && st.Status != StatusActive {
			e.mu.Unlock()
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w = &worker{e: e, st: st, rev: ent.Revision(), cancel: cancel, done: make(chan struct{}), events: map[uint64]*rbv1.Event{}}
		e.workers[id] = w
		e.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(w.done)
			w.loop(wctx)
		}()
	}
}

// worker delivers one subscription.
type worker struct {
	e      *Engine
	st     *Stored
	rev    uint64
	cancel context.CancelFunc
	done   chan struct{}

	cur    *Cursor
	curRev uint64
	// events holds the events of assigned, undelivered numbers by
	// sequence, as read from the hub.
	events map[uint64]*rbv1.Event
}

// errStopped: the subscription's status became error or off.
var errStopped = errors.New("subscription stopped")

// loop runs the worker until ctx ends or the subscription stops; a
// failure (the store unreachable, the cursor changed by another process)
// is retried from the stored cursor after a backoff.
func (w *worker) loop(ctx context.Context) {
	for n := 1; ; n++ {
		err := w.run(ctx)
		if ctx.Err() != nil || errors.Is(err, errStopped) {
			return
		}
		w.e.log.Warn("subscription delivery interrupted; resuming from the stored cursor", "subscription", w.st.ID, "err", err)
		if w.backoffFor(ctx, min(n, 7), time.Second, 30*time.Second) != nil {
			return
		}
		st, rev, gerr := w.e.cfg.Store.Get(ctx, w.st.ID)
		if gerr != nil {
			if errors.Is(gerr, ErrNotFound) {
				return
			}
			continue
		}
		if st.Status != StatusRequested && st.Status != StatusActive {
			return
		}
		w.st, w.rev = st, rev
		clear(w.events)
	}
}

func (w *worker) topic() Topic { t, _ := TopicByURL(w.st.Topic); return t }

func (w *worker) run(ctx context.Context) error {
	s := w.e.cfg.Store
	var err error
	if w.cur, w.curRev, err = s.Cursor(ctx, w.st.ID); err != nil {
		return err
	}
	rest := w.st.ChannelType == ChannelRestHook
	if w.st.Status == StatusRequested {
		if rest {
			if err := w.handshake(ctx); err != nil {
				return err
			}
		} else if err := w.setStatus(ctx, StatusActive, ""); err != nil {
			return err
		}
	}
	t := w.topic()
	f := eventlog.Filter{Types: t.Types, PatientIDs: Patients(w.st.Filters)}
	hub := w.e.cfg.Hub
	sub := hub.SubscribeOn("fhir-subscription", w.cur.Seq, f)
	defer func() { sub.Close() }()
	idle := time.Hour
	if rest && w.st.HeartbeatSeconds > 0 {
		idle = time.Duration(w.st.HeartbeatSeconds) * time.Second
	}
	needRes := needsResource(w.st.Filters)
	for {
		if w.st.End != "" {
			if end, err := time.Parse(time.RFC3339, w.st.End); err == nil && time.Now().After(end) {
				return w.setStatus(ctx, StatusOff, "")
			}
		}
		if rest && w.cur.Delivered < w.cur.Number {
			if err := w.deliverPending(ctx); err != nil {
				return err
			}
			continue
		}
		entries, err := sub.Next(ctx, idle)
		if errors.Is(err, fanout.ErrSlow) {
			sub.Close()
			sub = hub.SubscribeOn("fhir-subscription", w.cur.Seq, f)
			continue
		}
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			if rest && w.st.HeartbeatSeconds > 0 {
				if err := w.post(ctx, w.st.Bundle(w.e.cfg.BaseURL, TypeHeartbeat, w.cur.Number, w.st.Content, nil)); err != nil {
					w.e.log.Info("heartbeat not delivered", "subscription", w.st.ID, "err", err)
				}
			}
			if pos := sub.Position(); pos > w.cur.Seq {
				w.cur.Seq = pos
				if err := w.putCursor(ctx); err != nil {
					return err
				}
			}
			continue
		}
		assigned := false
		for _, en := range entries {
			ev := en.Event
			if needRes || (rest && w.st.Content == ContentFull) {
				ev = en.Full()
			}
			if !t.Match(ev, w.st.Filters) {
				continue
			}
			w.cur.assign(ev.GetSequence())
			if rest {
				w.events[ev.GetSequence()] = ev
			}
			assigned = true
		}
		pos := sub.Position()
		if !assigned && pos-w.cur.Seq < 1024 {
			w.cur.Seq = pos // stored with the next write
			continue
		}
		w.cur.Seq = pos
		if !rest {
			w.cur.Delivered = w.cur.Number
		}
		// The numbers are stored before anything carrying them is sent.
		if err := w.putCursor(ctx); err != nil {
			return err
		}
	}
}

func needsResource(fs []Filter) bool {
	for _, f := range fs {
		if f.Param != ParamPriority && !(f.Param == ParamPatient && !strings.Contains(strings.Join(f.Values, ","), "|")) {
			return true
		}
	}
	return false
}

func (w *worker) putCursor(ctx context.Context) error {
	rev, err := w.e.cfg.Store.PutCursor(ctx, w.st.ID, w.cur, w.curRev)
	if err != nil {
		return err
	}
	w.curRev = rev
	return nil
}

func (w *worker) setStatus(ctx context.Context, status, reason string) error {
	w.st.Status, w.st.Error = status, reason
	rev, err := w.e.cfg.Store.Update(ctx, w.st, w.rev)
	if err != nil {
		return err
	}
	w.rev = rev
	w.e.log.Info("subscription status", "subscription", w.st.ID, "status", status, "reason", reason)
	if status == StatusError || status == StatusOff {
		return fmt.Errorf("%w: status %s %s", errStopped, status, reason)
	}
	return nil
}

// backoff waits before attempt n+1 (n ≥ 1): base·2^(n-1), at most max,
// plus up to 50% jitter.
func (w *worker) backoff(ctx context.Context, n int) error {
	return w.backoffFor(ctx, n, w.e.cfg.RetryBase, w.e.cfg.RetryMax)
}

func (w *worker) backoffFor(ctx context.Context, n int, base, max time.Duration) error {
	d := base << min(n-1, 20)
	if d > max || d <= 0 {
		d = max
	}
	d += time.Duration(rand.Int64N(int64(d)/2 + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (w *worker) handshake(ctx context.Context) error {
	for n := 1; ; n++ {
		err := w.post(ctx, w.st.Bundle(w.e.cfg.BaseURL, TypeHandshake, w.cur.Number, ContentEmpty, nil))
		if err == nil {
			return w.setStatus(ctx, StatusActive, "")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if n >= w.e.cfg.MaxFailures {
			return w.setStatus(ctx, StatusError, fmt.Sprintf("handshake failed %d times, last: %v", n, err))
		}
		if err := w.backoff(ctx, n); err != nil {
			return err
		}
	}
}

// event returns the event at seq: from memory, else the log.
func (w *worker) event(ctx context.Context, seq uint64) (*rbv1.Event, error) {
	if ev, ok := w.events[seq]; ok {
		return ev, nil
	}
	return readEvent(ctx, w.e.cfg.Log, seq)
}

func readEvent(ctx context.Context, l eventlog.Log, seq uint64) (*rbv1.Event, error) {
	evs, err := l.Read(ctx, seq, eventlog.Filter{}, 1)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 || evs[0].GetSequence() != seq {
		return nil, nil // removed by retention
	}
	return evs[0], nil
}

// deliverPending sends the assigned, undelivered numbers in order, at most
// MaxCount per notification, retrying each with backoff.
func (w *worker) deliverPending(ctx context.Context) error {
	from := w.cur.Delivered + 1
	to := min(w.cur.Number, w.cur.Delivered+uint64(w.st.MaxCount))
	var evs []Numbered
	for n := from; n <= to; n++ {
		nb := Numbered{N: n}
		if seq, ok := w.cur.SeqOf(n); ok {
			ev, err := w.event(ctx, seq)
			if err != nil {
				return err
			}
			nb.Event = ev
		}
		evs = append(evs, nb)
	}
	body := w.st.Bundle(w.e.cfg.BaseURL, TypeEvent, w.cur.Number, w.st.Content, evs)
	for {
		err := w.post(ctx, body)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.cur.Failures++
		w.cur.LastError = err.Error()
		if w.cur.Failures >= w.e.cfg.MaxFailures {
			if perr := w.putCursor(ctx); perr != nil {
				return perr
			}
			return w.setStatus(ctx, StatusError, fmt.Sprintf("%d deliveries failed in a row, last: %v", w.cur.Failures, err))
		}
		if err := w.backoff(ctx, w.cur.Failures); err != nil {
			return err
		}
	}
	for n := from; n <= to; n++ {
		if seq, ok := w.cur.SeqOf(n); ok {
			delete(w.events, seq)
		}
	}
	w.cur.Delivered, w.cur.Failures, w.cur.LastError = to, 0, ""
	return w.putCursor(ctx)
}

// post sends body to the rest-hook endpoint within the subscription's
// timeout; any 2xx is a delivery.
func (w *worker) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(w.st.TimeoutSeconds)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.st.Endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for _, h := range w.st.Headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("User-Agent", "radbridge-fhir-subscriptions")
	if w.st.Secret != "" {
		req.Header.Set(SignatureHeader, Sign(w.st.Secret, body))
	}
	resp, err := w.e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("endpoint answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// Sign is the SignatureHeader value of body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
