package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"radbridge/auth"
	"radbridge/eventlog"
	"radbridge/fanout"
	rbv1 "radbridge/proto/radbridge/v1"
)

// The browser room protocol (DESIGN.md) on /ws: JSON text frames
// {"type":…,"data":{…}}. The server greets with welcome; the client may
// authenticate (auth), subscribe, unsubscribe and ping; the server answers
// with authenticated, subscription, unsubscribed, pong and error, pushes
// update messages for each subscription and heartbeat messages on an idle
// connection.

// Error codes of the room protocol's error messages.
const (
	roomAuthFailed      = "AUTH_FAILED"
	roomTokenExpired    = "TOKEN_EXPIRED"
	roomForbidden       = "FORBIDDEN"
	roomBadMessage      = "BAD_MESSAGE"
	roomUnknownType     = "UNKNOWN_TYPE"
	roomBadRequest      = "BAD_REQUEST"
	roomOutOfRange      = "OUT_OF_RANGE"
	roomDuplicate       = "DUPLICATE_SUBSCRIPTION"
	roomUnknownSub      = "UNKNOWN_SUBSCRIPTION"
	roomSubLimit        = "SUBSCRIPTION_LIMIT"
	roomRateLimited     = "RATE_LIMITED"
	roomSlowConsumer    = "SLOW_CONSUMER"
	roomUnavailable     = "UNAVAILABLE"
	roomShuttingDown    = "SHUTTING_DOWN"
	roomTokenCookie     = "radbridge_token"
	roomProtocolVersion = 1
)

// roomLimits bounds one room connection.
type roomLimits struct {
	maxMessage  int64         // bytes per client frame
	maxSubs     int           // subscriptions per connection
	maxPatients int           // patient ids per subscription
	rate        float64       // client messages per second, sustained
	burst       float64       // client messages at once
	overLimit   int           // messages dropped in a row before the socket is closed
	outbox      int           // replies queued for the sender
	heartbeat   time.Duration // idle time before a heartbeat
	authWait    time.Duration // time to authenticate when auth is required
	write       time.Duration // bound on one write
}

func defaultRoomLimits(cfg HTTPConfig, svc *Service) roomLimits {
	hb := 30 * time.Second
	if svc != nil && svc.DefaultHeartbeat > 0 {
		hb = svc.DefaultHeartbeat
	}
	wt := cfg.WriteTimeout
	if wt <= 0 {
		wt = 10 * time.Second
	}
	return roomLimits{
		maxMessage: 64 << 10, maxSubs: 20, maxPatients: 50,
		rate: 20, burst: 40, overLimit: 40,
		// The hub's window is the real buffer of a connection that falls
		// behind (its entries are shared by every connection); the
		// outbox only holds replies to client messages until the sender
		// takes them (all at once), and each slot costs every
		// connection 24 bytes, idle or not.
		outbox: 8, heartbeat: hb, authWait: 10 * time.Second, write: wt,
	}
}

// roomHandler serves the room protocol.
type roomHandler struct {
	svc     *Service
	cfg     HTTPConfig
	authn   auth.Authenticator
	anyone  bool // no authentication configured
	lim     roomLimits
	updates updateCache
}

func newRoomHandler(svc *Service, cfg HTTPConfig) *roomHandler {
	h := &roomHandler{svc: svc, cfg: cfg, authn: cfg.Auth, lim: defaultRoomLimits(cfg, svc)}
	switch cfg.Auth.(type) {
	case nil:
		h.authn, h.anyone = auth.None{}, true
	case auth.None, *auth.None:
		h.anyone = true
	}
	h.updates.init(1024)
	return h
}

// roomIn is a client message.
type roomIn struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	// Token is accepted here too on auth messages.
	Token string `json:"token"`
}

type roomAuthData struct {
	Token string `json:"token"`
}

type roomSubscribeData struct {
	SubscriptionID string   `json:"subscription_id"`
	PatientIDs     []string `json:"patient_ids"`
	ResourceTypes  []string `json:"resource_types"`
	EventTypes     []string `json:"event_types"`
	// Priorities ("stat", "critical") with all_patients make the
	// "critical findings" room.
	Priorities  []string    `json:"priorities"`
	Since       *roomCursor `json:"since"`
	AllPatients bool        `json:"all_patients"`
}

// roomCursor is a since value: a JSON number, or a decimal string as
// protojson writes uint64 (a client may pass on a REST sequence as is).
type roomCursor uint64

func (c *roomCursor) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("since %.32s is not a non-negative integer", b)
	}
	*c = roomCursor(n)
	return nil
}

type roomUnsubscribeData struct {
	SubscriptionID string `json:"subscription_id"`
}

// roomOut is a server message other than update.
type roomOut struct {
	Type      string `json:"type"`
	Error     string `json:"error,omitempty"`
	Message   string `json:"message,omitempty"`
	Data      any    `json:"data,omitempty"`
	Timestamp string `json:"timestamp"`
}

type roomSubID struct {
	SubscriptionID string `json:"subscription_id"`
	Since          uint64 `json:"since,omitzero"`
}

const roomTime = "2006-01-02T15:04:05.000Z07:00"

func encodeOut(m roomOut) []byte {
	m.Timestamp = time.Now().UTC().Format(roomTime)
	b, _ := json.Marshal(m)
	return b
}

func errorOut(code, msg string, data any) []byte {
	return encodeOut(roomOut{Type: "error", Error: code, Message: msg, Data: data})
}

// outMsg is a reply to a client message, queued for the sender.
type outMsg struct {
	b []byte
}

// closeReq ends the connection: the sender writes frame (when set) and
// closes with code and reason.
type closeReq struct {
	frame  []byte
	code   websocket.StatusCode
	reason string
	slow   bool // a slow consumer: the sender fills in the rest
}

type roomSub struct {
	id       string
	quotedID []byte   // id as a JSON string, for the update frames
	all      bool     // all_patients
	patients []string // or these
	since    uint64   // the start cursor
	f        eventlog.Filter

	mu        sync.Mutex           // guards opening hs against drop
	hs        *fanout.Subscription // the cursor on the hub, opened by the sender (hub)
	gone      atomic.Bool          // unsubscribed: nothing more is written for it
	delivered atomic.Uint64        // sequence of the last update written, or the start cursor
}

func (s *roomSub) resumeSince() uint64 { return s.delivered.Load() }

// roomConn is one connection. It has one goroutine of its own, the reader,
// which reads client messages and has each answered (its replies queued in
// out) before it reads the next. Everything
// is written by a sender goroutine from the pool (startSender), at most one
// at a time: the hub (a new event for a subscription), the heartbeat timer,
// a queued reply, a close request and the reader's end kick the connection,
// and a kick has a sender write the queued replies and then what each
// subscription has ready. An idle connection has no goroutine but its
// reader.
type roomConn struct {
	h      *roomHandler
	c      *websocket.Conn
	fw     *frameWriter
	ctx    context.Context
	cancel context.CancelFunc
	out    chan outMsg   // replies, in order; the reader waits while it is full
	closed chan closeReq // the first request to end the connection
	// wg counts the sender runs in progress (or about to start); the
	// reader waits for the last one before it ends.
	wg sync.WaitGroup

	// reader's state
	principal  *auth.Principal
	preAuthErr error // a handshake credential that was not accepted
	expiry     *time.Timer
	authTimer  *time.Timer
	noShutdown func() bool // stops the shutdown callback
	tokens     float64
	last       time.Time
	over       int

	mu   sync.Mutex // guards subs (the reader changes it, the sender reads it); nil once the connection is over
	subs map[string]*roomSub

	// sender's state
	state atomic.Uint32 // roomRunning, roomKicked, roomIdle
	hb    *time.Timer
	hbDue atomic.Bool
	list  []*roomSub // the subscriptions of a pass
}

const (
	// A connection that has not started counts as running: a kick before
	// start (or on a connection that is never started, in tests of the
	// message handler) starts no sender.
	roomRunning = iota // a sender runs
	roomKicked         // a sender runs, and must look again before ending
	roomIdle           // no sender
)

// ServeHTTP implements http.Handler.
func (h *roomHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token := handshakeToken(r)
	ticket, urlToken := h.urlCredentials(r)
	if token == "" && ticket == "" {
		token = urlToken
	}
	lean := &leanResponse{ResponseWriter: w}
	c, err := websocket.Accept(lean, r, &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns})
	if err != nil {
		return // Accept answered the HTTP request
	}
	c.SetReadLimit(h.lim.maxMessage)
	// The connection outlives this handler: returning releases net/http's
	// goroutine and request state, which every open connection would
	// otherwise keep. It keeps the request's values, not its end.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	rc := &roomConn{
		h: h, c: c, fw: lean.out, ctx: ctx, cancel: cancel,
		out: make(chan outMsg, max(h.lim.outbox, 1)), closed: make(chan closeReq, 1),
		tokens: h.lim.burst, last: time.Now(), subs: map[string]*roomSub{},
	}
	if h.svc != nil {
		rc.noShutdown = context.AfterFunc(h.svc.stopCtx, func() {
			rc.closeWith(closeReq{frame: errorOut(roomShuttingDown, "server shutting down; reconnect and resume with since", nil), code: websocket.StatusGoingAway, reason: "server shutting down"})
		})
	}

	if token != "" {
		p, err := h.authn.Authenticate(ctx, token)
		if err == nil {
			err = rc.setPrincipal(p)
		}
		rc.preAuthErr = err
	} else if ticket != "" {
		p, err := h.cfg.WSTickets.Redeem(ticket)
		if err == nil {
			err = rc.setPrincipal(p)
		}
		rc.preAuthErr = err
	} else if h.anyone {
		p, _ := h.authn.Authenticate(ctx, "")
		if p == nil {
			p = &auth.Principal{Subject: "anonymous"}
		}
		_ = rc.setPrincipal(p)
	}
	rc.send(encodeOut(roomOut{Type: "welcome", Data: map[string]any{
		"server": "radbridge", "protocol": roomProtocolVersion,
		"auth_required": !h.anyone, "authenticated": rc.principal != nil,
		"max_subscriptions": h.lim.maxSubs, "max_message_bytes": h.lim.maxMessage,
		"heartbeat_seconds": int(h.lim.heartbeat / time.Second),
	}}))
	if rc.principal == nil {
		rc.authTimer = time.AfterFunc(h.lim.authWait, func() {
			rc.closeWith(closeReq{frame: errorOut(roomAuthFailed, "no auth message in time", nil), code: websocket.StatusPolicyViolation, reason: roomAuthFailed})
		})
	}
	rc.start()
	go rc.read()
}

// read handles the client's messages until the connection ends.
func (rc *roomConn) read() {
	defer func() {
		rc.stopTimers()
		if rc.noShutdown != nil {
			rc.noShutdown()
		}
		rc.cancel()
		rc.kick() // the sender ends the connection
		// Once the reader is gone the connection has released everything:
		// wait for the run that ends it. No run starts after that one, so
		// none is counted after this Wait began.
		rc.wg.Wait()
	}()
	// The read ends when the connection is closed (the sender closes it
	// at the end), not with a context: a context would cost every idle
	// connection a callback registered on it.
	ctx := context.WithoutCancel(rc.ctx)
	for {
		typ, b, err := rc.c.Read(ctx)
		if err != nil {
			return
		}
		// Answered on a goroutine of its own while the reader waits:
		// decoding and answering a message takes a deep stack, which the
		// reader would otherwise keep, idle, for as long as the
		// connection is open.
		done := make(chan struct{})
		go func() {
			defer close(done)
			rc.receive(typ, b)
		}()
		<-done
	}
}

// receive handles one client frame.
func (rc *roomConn) receive(typ websocket.MessageType, b []byte) {
	if !rc.allow() {
		return
	}
	if typ != websocket.MessageText {
		rc.send(errorOut(roomBadMessage, "messages are JSON text frames", nil))
		return
	}
	rc.handle(b)
}

// urlCredentials takes the opt-in URL credentials out of the request
// (so that nothing after this point can log them): ?ticket= with
// HTTPConfig.WSTickets, ?token= with HTTPConfig.WSURLToken. Without the
// option the parameter is ignored (and left alone).
func (h *roomHandler) urlCredentials(r *http.Request) (ticket, token string) {
	if h.cfg.WSTickets == nil && !h.cfg.WSURLToken {
		return "", ""
	}
	q := r.URL.Query()
	if h.cfg.WSTickets != nil {
		ticket = q.Get("ticket")
		q.Del("ticket")
	}
	if h.cfg.WSURLToken {
		token = q.Get("token")
		q.Del("token")
	}
	r.URL.RawQuery = q.Encode()
	r.RequestURI = r.URL.RequestURI()
	return ticket, token
}

// handshakeToken returns the bearer token of the Authorization header or
// the radbridge_token cookie; never one from the URL, which ends up in
// logs and browser history (urlCredentials reads those, when opted in).
func handshakeToken(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	if ck, err := r.Cookie(roomTokenCookie); err == nil {
		return ck.Value
	}
	return ""
}

// allow applies the token bucket; a client over the rate gets one
// RATE_LIMITED error and its messages are dropped, and the socket closes
// if it keeps on.
func (rc *roomConn) allow() bool {
	now := time.Now()
	lim := rc.h.lim
	rc.tokens = min(lim.burst, rc.tokens+now.Sub(rc.last).Seconds()*lim.rate)
	rc.last = now
	if rc.tokens >= 1 {
		rc.tokens--
		rc.over = 0
		return true
	}
	rc.over++
	switch {
	case rc.over == 1:
		rc.send(errorOut(roomRateLimited, fmt.Sprintf("more than %g messages per second; messages are being dropped", lim.rate), nil))
	case rc.over >= lim.overLimit:
		rc.closeWith(closeReq{frame: errorOut(roomRateLimited, "kept on over the rate limit; closing", nil), code: websocket.StatusPolicyViolation, reason: "rate limit exceeded"})
	}
	return false
}

func (rc *roomConn) handle(b []byte) {
	var m roomIn
	if err := json.Unmarshal(b, &m); err != nil {
		rc.send(errorOut(roomBadMessage, "not a JSON object: "+trimErr(err), nil))
		return
	}
	if m.Type == "" {
		rc.send(errorOut(roomBadMessage, "message has no type", nil))
		return
	}
	if m.Type == "auth" {
		rc.auth(m)
		return
	}
	if rc.principal == nil {
		code, msg := roomAuthFailed, "authenticate first: send {\"type\":\"auth\",\"data\":{\"token\":…}}"
		if errors.Is(rc.preAuthErr, auth.ErrTokenExpired) {
			code, msg = roomTokenExpired, "token expired"
		} else if rc.preAuthErr != nil {
			msg = "token not accepted"
		}
		rc.closeWith(closeReq{frame: errorOut(code, msg, nil), code: websocket.StatusPolicyViolation, reason: code})
		return
	}
	switch m.Type {
	case "ping":
		rc.send(encodeOut(roomOut{Type: "pong"}))
	case "subscribe":
		rc.subscribe(m.Data)
	case "unsubscribe":
		rc.unsubscribe(m.Data)
	default:
		rc.send(errorOut(roomUnknownType, fmt.Sprintf("unknown message type %.64q", m.Type), nil))
	}
}

func trimErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// auth authenticates the connection, or replaces its credential (a
// refreshed token) when the new one may still see every open
// subscription.
func (rc *roomConn) auth(m roomIn) {
	tok := m.Token
	if len(m.Data) > 0 {
		var d roomAuthData
		if err := json.Unmarshal(m.Data, &d); err != nil {
			rc.send(errorOut(roomBadMessage, "auth data: "+trimErr(err), nil))
			return
		}
		if d.Token != "" {
			tok = d.Token
		}
	}
	p, err := rc.h.authn.Authenticate(rc.ctx, tok)
	if err == nil && p == nil {
		err = auth.ErrUnauthenticated
	}
	if err == nil {
		err = rc.setPrincipal(p)
	}
	if err != nil {
		code, msg := roomAuthFailed, "token not accepted"
		if errors.Is(err, auth.ErrTokenExpired) {
			code, msg = roomTokenExpired, "token expired"
		}
		if errors.Is(err, errForbiddenReauth) {
			rc.send(errorOut(roomForbidden, err.Error(), nil))
			return
		}
		rc.closeWith(closeReq{frame: errorOut(code, msg, nil), code: websocket.StatusPolicyViolation, reason: code})
		return
	}
	rc.send(encodeOut(roomOut{Type: "authenticated", Data: map[string]any{"subject": p.Subject}}))
}

var errForbiddenReauth = errors.New("the new token may not see every open subscription")

// setPrincipal installs p (checking a replacement against the open
// subscriptions) and arms its expiry.
func (rc *roomConn) setPrincipal(p *auth.Principal) error {
	if !p.Expires.IsZero() && !time.Now().Before(p.Expires) {
		return auth.ErrTokenExpired
	}
	if rc.principal != nil {
		rc.mu.Lock()
		for _, s := range rc.subs {
			if !rc.mayRead(p, s) {
				rc.mu.Unlock()
				return errForbiddenReauth
			}
		}
		rc.mu.Unlock()
	}
	rc.principal = p
	if rc.authTimer != nil {
		rc.authTimer.Stop()
	}
	if rc.expiry != nil {
		rc.expiry.Stop()
		rc.expiry = nil
	}
	if !p.Expires.IsZero() {
		rc.expiry = time.AfterFunc(time.Until(p.Expires), func() {
			rc.closeWith(closeReq{frame: errorOut(roomTokenExpired, "token expired", nil), code: websocket.StatusPolicyViolation, reason: roomTokenExpired})
		})
	}
	return nil
}

// mayRead reports whether p may see everything s delivers.
func (rc *roomConn) mayRead(p *auth.Principal, s *roomSub) bool {
	if s.all {
		return !p.Restricted()
	}
	for _, id := range s.patients {
		if !p.MayRead(id) {
			return false
		}
	}
	return true
}

func (rc *roomConn) stopTimers() {
	if rc.expiry != nil {
		rc.expiry.Stop()
	}
	if rc.authTimer != nil {
		rc.authTimer.Stop()
	}
}

func (rc *roomConn) subscribe(raw json.RawMessage) {
	var d roomSubscribeData
	if err := json.Unmarshal(raw, &d); err != nil || len(raw) == 0 {
		msg := "subscribe needs data"
		if err != nil {
			msg = "subscribe data: " + trimErr(err)
		}
		rc.send(errorOut(roomBadMessage, msg, nil))
		return
	}
	ref := roomSubID{SubscriptionID: d.SubscriptionID}
	fail := func(code, format string, a ...any) {
		rc.send(errorOut(code, fmt.Sprintf(format, a...), ref))
	}
	if err := checkID("subscription_id", d.SubscriptionID); err != nil {
		ref.SubscriptionID = ""
		fail(roomBadRequest, "%s", status.Convert(err).Message())
		return
	}
	rc.mu.Lock()
	_, dup := rc.subs[d.SubscriptionID]
	n := len(rc.subs)
	rc.mu.Unlock()
	switch {
	case dup:
		fail(roomDuplicate, "subscription %q is already open", d.SubscriptionID)
		return
	case n >= rc.h.lim.maxSubs:
		fail(roomSubLimit, "at most %d subscriptions per connection", rc.h.lim.maxSubs)
		return
	case d.AllPatients && len(d.PatientIDs) > 0:
		fail(roomBadRequest, "all_patients and patient_ids exclude each other")
		return
	case !d.AllPatients && len(d.PatientIDs) == 0:
		fail(roomBadRequest, "patient_ids is required (1 to %d ids)", rc.h.lim.maxPatients)
		return
	case len(d.PatientIDs) > rc.h.lim.maxPatients:
		fail(roomBadRequest, "at most %d patient_ids per subscription", rc.h.lim.maxPatients)
		return
	}
	p := rc.principal
	if d.AllPatients && p.Restricted() {
		fail(roomForbidden, "this token may not subscribe to all patients")
		return
	}
	for _, id := range d.PatientIDs {
		if !p.MayRead(id) {
			fail(roomForbidden, "this token may not see patient %.64q", id)
			return
		}
	}
	req := &rbv1.SubscribeRequest{PatientId: d.PatientIDs, ResourceType: d.ResourceTypes}
	for _, t := range d.EventTypes {
		et, ok := EventTypeByName(t)
		if !ok {
			fail(roomBadRequest, "unknown event type %.64q", t)
			return
		}
		req.Type = append(req.Type, et)
	}
	for _, v := range d.Priorities {
		pr, ok := PriorityByName(v)
		if !ok {
			fail(roomBadRequest, "unknown priority %.64q", v)
			return
		}
		req.Priority = append(req.Priority, pr)
	}
	if d.Since != nil {
		req.SinceSequence = uint64(*d.Since)
	} else {
		req.FromNow = true
	}
	params, err := rc.h.svc.validateSubscribe(auth.WithPrincipal(rc.ctx, p), req)
	if err != nil {
		st := status.Convert(err)
		code := roomBadRequest
		switch st.Code() {
		case codes.OutOfRange:
			code = roomOutOfRange
		case codes.PermissionDenied:
			code = roomForbidden
		case codes.Unauthenticated:
			code = roomAuthFailed
		case codes.Unavailable, codes.Internal, codes.DeadlineExceeded, codes.Canceled:
			code = roomUnavailable
		}
		fail(code, "%s", st.Message())
		return
	}
	quoted, _ := json.Marshal(d.SubscriptionID)
	s := &roomSub{id: d.SubscriptionID, quotedID: quoted, all: d.AllPatients, patients: d.PatientIDs, since: params.since, f: params.f}
	s.delivered.Store(params.since)
	ref.Since = params.since
	// The confirmation is queued before the sender can see the
	// subscription (a pass takes the subscriptions, then the replies
	// queued until then), so it precedes the subscription's first update.
	rc.send(encodeOut(roomOut{Type: "subscription", Data: ref}))
	rc.mu.Lock()
	if rc.subs != nil { // nil: the connection is over
		rc.subs[s.id] = s
	}
	rc.mu.Unlock()
	rc.kick() // the sender opens its cursor on the hub
}

func (rc *roomConn) unsubscribe(raw json.RawMessage) {
	var d roomUnsubscribeData
	if err := json.Unmarshal(raw, &d); err != nil || len(raw) == 0 {
		rc.send(errorOut(roomBadMessage, "unsubscribe needs data with a subscription_id", nil))
		return
	}
	rc.mu.Lock()
	s, ok := rc.subs[d.SubscriptionID]
	delete(rc.subs, d.SubscriptionID)
	rc.mu.Unlock()
	ref := roomSubID{SubscriptionID: d.SubscriptionID}
	if !ok {
		rc.send(errorOut(roomUnknownSub, fmt.Sprintf("no open subscription %.64q", d.SubscriptionID), ref))
		return
	}
	// Gone before the answer is queued: the sender writes no update of s
	// after it, not even one it is about to write.
	s.drop()
	rc.send(encodeOut(roomOut{Type: "unsubscribed", Data: ref}))
}

// hub returns s's cursor on the hub, opening it on first use (by the
// sender, so that a connection's message handler alone opens none), or
// nil once s is gone.
func (rc *roomConn) hub(s *roomSub) *fanout.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone.Load() {
		return nil
	}
	if s.hs == nil {
		s.hs = rc.h.svc.hub.SubscribeOn("room", s.since, s.f)
		s.hs.Notify(rc.kick)
	}
	return s.hs
}

// drop ends s: no update of it is written after this returns, and its
// cursor is closed.
func (s *roomSub) drop() {
	s.mu.Lock()
	s.gone.Store(true)
	hs := s.hs
	s.mu.Unlock()
	if hs != nil {
		hs.Close()
	}
}

// closeSlow ends a connection that does not keep up.
func (rc *roomConn) closeSlow() { rc.closeWith(closeReq{slow: true}) }

// slowReq is closeSlow's request, built by the sender once nothing more
// is written: the error names each subscription's resume cursor (its last
// update written), and the close reason the lowest.
func (rc *roomConn) slowReq() closeReq {
	rc.mu.Lock()
	resume := map[string]uint64{}
	low := uint64(0)
	first := true
	for id, s := range rc.subs {
		n := s.resumeSince()
		resume[id] = n
		if first || n < low {
			low, first = n, false
		}
	}
	rc.mu.Unlock()
	return closeReq{
		frame: errorOut(roomSlowConsumer, "client too slow; reconnect and resume each subscription with since", map[string]any{"resume": resume}),
		code:  websocket.StatusTryAgainLater, reason: fmt.Sprintf("too slow: resume with since=%d", low),
	}
}

// send queues a reply; it waits while the queue is full (the sender's
// write timeout ends a client that does not read).
func (rc *roomConn) send(b []byte) {
	select {
	case rc.out <- outMsg{b: b}:
	default:
		// Full: wait (rc.ctx.Done makes a channel; most connections never
		// need one).
		select {
		case rc.out <- outMsg{b: b}:
		case <-rc.ctx.Done():
			return
		}
	}
	rc.kick()
}

// closeWith asks the sender to end the connection; the first request wins.
func (rc *roomConn) closeWith(r closeReq) {
	select {
	case rc.closed <- r:
	default:
	}
	rc.kick()
}

// start arms the heartbeat and has a sender write the welcome.
func (rc *roomConn) start() {
	rc.hb = time.AfterFunc(rc.h.lim.heartbeat, func() {
		rc.hbDue.Store(true)
		rc.kick()
	})
	rc.wg.Add(1)
	startSender(rc) // the state is running already: no kick starts another
}

// kick makes sure a sender looks at the connection soon.
func (rc *roomConn) kick() {
	for {
		switch rc.state.Load() {
		case roomIdle:
			// Counted before the run can start: whoever waits for the
			// runs sees this one once it is running.
			rc.wg.Add(1)
			if rc.state.CompareAndSwap(roomIdle, roomRunning) {
				startSender(rc)
				return
			}
			rc.wg.Done()
		case roomRunning:
			if rc.state.CompareAndSwap(roomRunning, roomKicked) {
				return
			}
		default:
			return
		}
	}
}

// run implements sendTask.
func (rc *roomConn) run() {
	defer rc.wg.Done()
	for {
		if !rc.sendReady() {
			// Over: the state stays running, so no kick starts another.
			rc.end()
			return
		}
		if rc.state.CompareAndSwap(roomRunning, roomIdle) {
			return
		}
		rc.state.Store(roomRunning) // kicked meanwhile: look again
	}
}

// end releases what the connection holds; the reader ends with the
// connection.
func (rc *roomConn) end() {
	rc.hb.Stop()
	rc.mu.Lock()
	subs := rc.subs
	rc.subs = nil
	rc.mu.Unlock()
	for _, s := range subs {
		s.drop()
	}
	rc.cancel()
	rc.c.CloseNow()
}

// sendReady writes what is ready: the queued replies, then each
// subscription's updates, again while there were any; or a heartbeat when
// one is due and nothing was written. It returns false when the
// connection is over.
func (rc *roomConn) sendReady() bool {
	wrote := false
	for {
		select {
		case r := <-rc.closed:
			rc.finish(r)
			return false
		default:
		}
		if rc.ctx.Err() != nil {
			return false
		}
		// The subscriptions first, then the replies: a subscription's
		// confirmation is queued before it is added, so one seen here has
		// its confirmation among the replies written next.
		rc.mu.Lock()
		list := rc.list[:0]
		for _, s := range rc.subs {
			list = append(list, s)
		}
		rc.list = list
		rc.mu.Unlock()
		for n := len(rc.out); n > 0; n-- {
			m := <-rc.out
			if !rc.put(m.b) {
				return false
			}
			wrote = true
		}
		more := false
		for _, s := range list {
			hs := rc.hub(s)
			if hs == nil {
				continue
			}
			entries, err := hs.Poll(rc.ctx)
			if err != nil {
				switch {
				case s.gone.Load() || rc.ctx.Err() != nil:
				case errors.Is(err, fanout.ErrSlow):
					rc.closeSlow()
				default:
					rc.closeWith(closeReq{frame: errorOut(roomUnavailable, "reading events failed; reconnect and resume with since", roomSubID{SubscriptionID: s.id, Since: s.resumeSince()}),
						code: websocket.StatusInternalError, reason: "read events failed"})
				}
				more = true // the close request is handled at the top
				break
			}
			// A page cut short (a catch-up from the log, or more than a
			// page in the window): look again. A later event kicks.
			if len(entries) > 0 && hs.Position() < rc.h.svc.hub.Head() {
				more = true
			}
			for _, e := range entries {
				if s.gone.Load() {
					break // unsubscribed meanwhile
				}
				if !rc.putUpdate(s, e) {
					return false
				}
				wrote = true
			}
		}
		clear(rc.list) // no subscription is kept alive by the next pass's slice
		if !more {
			break
		}
	}
	if wrote {
		// The heartbeat counts from the last write.
		rc.hbDue.Store(false)
		rc.hb.Reset(rc.h.lim.heartbeat)
		return true
	}
	if !rc.hbDue.Swap(false) {
		return true
	}
	if !rc.put(encodeOut(roomOut{Type: "heartbeat"})) {
		return false
	}
	ctx, cancel := context.WithTimeout(rc.ctx, rc.h.lim.write)
	err := rc.c.Ping(ctx)
	cancel()
	if err != nil {
		return false
	}
	rc.hb.Reset(rc.h.lim.heartbeat)
	return true
}

// updateBufs holds the buffers update frames are built in.
var updateBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// putUpdate writes e as s's update.
func (rc *roomConn) putUpdate(s *roomSub, e *fanout.Entry) bool {
	bp := updateBufs.Get().(*[]byte)
	b := rc.h.updates.appendUpdate((*bp)[:0], e, s.quotedID)
	ok := rc.put(b)
	*bp = b[:0]
	updateBufs.Put(bp)
	if ok {
		s.delivered.Store(e.Event.GetSequence())
	}
	return ok
}

// put writes one frame and reports whether it went out; on false the
// sender ends the connection. A write that times out (a client that
// stopped reading, whose socket buffer is full) or fails part-way leaves
// no way to send even a close frame: the connection is dropped, and the
// client resumes from the last sequence it read. A client that reads too
// slowly for the hub's window is closed with SLOW_CONSUMER and 1013
// instead (sendReady), since its socket still takes frames.
func (rc *roomConn) put(b []byte) bool {
	return rc.write(b, rc.h.lim.write) == nil
}

// write sends b as one text frame within timeout. Every frame of the room
// protocol is written here, whole, with one write(2) (writeText);
// coder/websocket writes only its control frames: pings, pongs, closes.
func (rc *roomConn) write(b []byte, timeout time.Duration) error {
	_, err := rc.fw.writeText(b, timeout)
	return err
}

// finish writes r's frame, briefly, and closes with its code.
func (rc *roomConn) finish(r closeReq) {
	if r.slow {
		r = rc.slowReq()
	}
	if r.frame != nil {
		_ = rc.write(r.frame, time.Second)
	}
	_ = rc.c.Close(r.code, r.reason)
}

// roomUpdateData is an update's data, less its subscription_id.
type roomUpdateData struct {
	EventType        string          `json:"event_type"`
	Action           string          `json:"action"`
	PatientID        string          `json:"patient_id"`
	ResourceType     string          `json:"resource_type"`
	ResourceID       string          `json:"resource_id"`
	Resource         json.RawMessage `json:"resource"`
	Sequence         uint64          `json:"sequence"`
	EventID          string          `json:"event_id"`
	Time             string          `json:"time"`
	Severity         string          `json:"severity"`
	Priority         string          `json:"priority"`
	Message          string          `json:"message"`
	AccessionNumber  string          `json:"accession_number,omitempty"`
	StudyInstanceUID string          `json:"study_instance_uid,omitempty"`
}

// roomAction is an update's action: "created" when the event introduces
// its resource (a study first available, a new order, a first preliminary
// result, a viewing record), "updated" for every later change of it
// (study updates and progress, final and corrected reports, order
// changes and cancellations). A final report with no preliminary before
// it is "updated" too: the event alone does not say whether a preliminary
// was sent, and clients key resources by resource_type and resource_id.
func roomAction(t rbv1.EventType) string {
	switch t {
	case rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.EventType_ORDER_PLACED, rbv1.EventType_RESULT_RECEIVED, rbv1.EventType_IMAGING_STUDY_VIEWED:
		return "created"
	}
	return "updated"
}

func enumWord(name, prefix, unspecified string) string {
	w := strings.ToLower(strings.TrimPrefix(name, prefix))
	if w == "unspecified" || w == "" || strings.Trim(w, "0123456789") == "" {
		return unspecified
	}
	return w
}

// updatePrefix encodes everything of ev's update up to its
// subscription_id's value.
func updatePrefix(ev *rbv1.Event) []byte {
	res := json.RawMessage("null")
	if ev.GetResource() != nil {
		if b, err := protojson.Marshal(ev.GetResource()); err == nil {
			res = b
		}
	}
	when := ""
	if ev.GetTime() != nil {
		when = ev.GetTime().AsTime().UTC().Format(roomTime)
	}
	d := roomUpdateData{
		EventType: DottedName(ev.GetType()), Action: roomAction(ev.GetType()),
		PatientID: ev.GetPatientId(), ResourceType: ev.GetResourceType(), ResourceID: ev.GetResourceId(), Resource: res,
		Sequence: ev.GetSequence(), EventID: ev.GetId(), Time: when,
		Severity: enumWord(ev.GetSeverity().String(), "SEVERITY_", "info"),
		Priority: enumWord(ev.GetPriority().String(), "PRIORITY_", "routine"),
		Message:  ev.GetMessage(), AccessionNumber: ev.GetAccessionNumber(), StudyInstanceUID: ev.GetStudyInstanceUid(),
	}
	if d.EventType == "" {
		d.EventType = strings.ToLower(ev.GetType().String())
	}
	data, err := json.Marshal(d)
	if err != nil { // a resource that is not valid JSON
		d.Resource = json.RawMessage("null")
		data, _ = json.Marshal(d)
	}
	if when == "" {
		when = time.Now().UTC().Format(roomTime)
	}
	b := make([]byte, 0, len(data)+96)
	b = append(b, `{"type":"update","timestamp":"`...)
	b = append(b, when...)
	b = append(b, `","data":`...)
	b = append(b, data[:len(data)-1]...)
	b = append(b, `,"subscription_id":`...)
	return b
}

// updateCache keeps the newest events' update encodings, so an event
// going to many connections is encoded once: the first connection to ask
// for an entry encodes it, the others wait for that encoding (sync.Once)
// and share its bytes. Only the JSON-quoted subscription id and the
// closing braces are added per connection.
type updateCache struct {
	m       sync.Map   // *fanout.Entry → *cachedUpdate; read without a lock
	mu      sync.Mutex // guards adding to m, ring and next
	ring    []*fanout.Entry
	next    int
	encodes atomic.Int64 // updatePrefix calls, for tests
}

// cachedUpdate is one entry's update prefix, encoded once.
type cachedUpdate struct {
	once sync.Once
	b    []byte
}

func (c *updateCache) init(n int) {
	c.ring = make([]*fanout.Entry, n)
}

// prefix returns e's update up to its subscription_id's value.
func (c *updateCache) prefix(e *fanout.Entry) []byte {
	v, ok := c.m.Load(e)
	if !ok {
		c.mu.Lock()
		v, ok = c.m.Load(e)
		if !ok {
			v = &cachedUpdate{}
			if old := c.ring[c.next]; old != nil {
				c.m.Delete(old)
			}
			c.ring[c.next] = e
			c.next = (c.next + 1) % len(c.ring)
			c.m.Store(e, v)
		}
		c.mu.Unlock()
	}
	u := v.(*cachedUpdate)
	u.once.Do(func() {
		c.encodes.Add(1)
		u.b = updatePrefix(e.Full())
	})
	return u.b
}

// encode returns e's update frame for the subscription whose JSON-quoted
// id is quotedID.
func (c *updateCache) encode(e *fanout.Entry, quotedID []byte) []byte {
	return c.appendUpdate(nil, e, quotedID)
}

// appendUpdate appends e's update frame for the subscription whose
// JSON-quoted id is quotedID to dst.
func (c *updateCache) appendUpdate(dst []byte, e *fanout.Entry, quotedID []byte) []byte {
	p := c.prefix(e)
	dst = append(dst, p...)
	dst = append(dst, quotedID...)
	return append(dst, '}', '}')
}
