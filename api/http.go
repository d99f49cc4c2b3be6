package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"radbridge/auth"
	"radbridge/fanout"
	"radbridge/internal/httpjson"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/web"
)

// maxBody bounds REST request bodies.
const maxBody = 64 << 10

// HTTPConfig configures the HTTP front.
type HTTPConfig struct {
	// Ready reports readiness for /readyz: nil means ready.
	Ready func() error
	// WriteTimeout bounds one WebSocket write.
	WriteTimeout time.Duration
	Logger       *slog.Logger
	// Auth authenticates API clients; nil means auth.None.
	Auth auth.Authenticator
	// OriginPatterns are the cross-origin hosts browsers may open
	// WebSockets from (path.Match patterns on the Origin host); the
	// request's own host is always allowed.
	OriginPatterns []string
	// TrustedProxies are the peers whose X-Forwarded-For is believed for
	// the client address recorded with a published event (see ClientAddr).
	TrustedProxies []netip.Prefix
	// Extra mounts more handlers by ServeMux pattern (other fronts such as
	// DICOM notifications); each does its own authentication and body limit.
	Extra map[string]http.Handler
	// WSTickets, when set, serves POST /v1/ws-tickets (a single-use ticket
	// for the caller's bearer token) and accepts ?ticket= on /ws, for
	// WebSocket clients that cannot send a header.
	WSTickets *auth.Tickets
	// WSURLToken accepts a bearer token as ?token= on /ws (WintEHR's
	// client sends it so); URLs end up in proxy logs and history.
	WSURLToken bool
}

// WSTicketPath is where a client exchanges its bearer token for a /ws
// ticket (HTTPConfig.WSTickets).
const WSTicketPath = "/v1/ws-tickets"

// wsTicketHandler issues /ws tickets to clients authenticated by their
// Authorization header (never a cookie: another site's page could make a
// browser POST with it).
func wsTicketHandler(cfg HTTPConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "application/json")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			w.WriteHeader(http.StatusMethodNotAllowed)
			fmt.Fprintln(w, `{"code":12,"message":"POST with Authorization: Bearer <token>"}`)
			return
		}
		token := ""
		if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
			token = strings.TrimSpace(tok)
		}
		p, err := cfg.Auth.Authenticate(r.Context(), token)
		if err == nil && token == "" {
			if _, none := cfg.Auth.(auth.None); !none {
				err = auth.ErrUnauthenticated
			}
		}
		if err != nil {
			code := "AUTH_FAILED"
			if errors.Is(err, auth.ErrTokenExpired) {
				code = "TOKEN_EXPIRED"
			}
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"code":16,"message":"%s: a valid Authorization: Bearer token is required"}`+"\n", code)
			return
		}
		t, err := cfg.WSTickets.Issue(p)
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"code":8,"message":%q}`+"\n", err.Error())
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"ticket": t, "expires_in": int(cfg.WSTickets.TTL() / time.Second)})
	})
}

// NewHTTPHandler returns the HTTP front: grpc-gateway REST over conn (a
// connection to this process's gRPC server), the WebSocket event stream,
// /healthz and /readyz.
func NewHTTPHandler(ctx context.Context, svc *Service, conn *grpc.ClientConn, cfg HTTPConfig) (http.Handler, error) {
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Auth == nil {
		cfg.Auth = auth.None{}
	}
	gw := runtime.NewServeMux(
		runtime.SetQueryParameterParser(strictQuery{}),
		runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
			return metadata.Pairs(clientAddrKey, httpClientAddr(r, cfg.TrustedProxies))
		}),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, listsJSON{&runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}}),
	)
	if err := rbv1.RegisterEventServiceHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("register gateway: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/events:stream", &wsStream{svc: svc, cfg: cfg})
	mux.Handle("/ws", newRoomHandler(svc, cfg))
	if cfg.WSTickets != nil {
		mux.Handle(WSTicketPath, wsTicketHandler(cfg))
	}
	mux.Handle("/v1/", requireJSON(limitBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only the gateway itself says where the client is.
		r.Header.Del(runtime.MetadataHeaderPrefix + clientAddrKey)
		gw.ServeHTTP(w, r)
	}))))
	for pattern, h := range cfg.Extra {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "not ready:", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/", web.Handler())
	return mux, nil
}

// listsJSON is the REST marshaler: protojson without zero scalars (as
// before), but a radbridge.v1 response's empty lists and maps are present
// ("events": [], "body_region_counts": {}), so clients need no null checks.
type listsJSON struct{ *runtime.JSONPb }

// Marshal implements runtime.Marshaler.
func (j listsJSON) Marshal(v any) ([]byte, error) {
	b, err := j.JSONPb.Marshal(v)
	m, ok := v.(proto.Message)
	if err != nil || !ok || m.ProtoReflect().Descriptor().ParentFile().Package() != "radbridge.v1" ||
		len(b) < 2 || b[0] != '{' {
		return b, err
	}
	r := m.ProtoReflect()
	var empty []byte
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.IsList() && r.Get(fd).List().Len() == 0:
			empty = fmt.Appendf(empty, "%q:[],", fd.Name())
		case fd.IsMap() && r.Get(fd).Map().Len() == 0:
			empty = fmt.Appendf(empty, "%q:{},", fd.Name())
		}
	}
	if len(empty) == 0 {
		return b, nil
	}
	if strings.TrimSpace(string(b[1:])) == "}" {
		empty = empty[:len(empty)-1] // no field follows
	}
	return append(append([]byte{'{'}, empty...), b[1:]...), nil
}

func limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBody {
			httpjson.WriteError(w, http.StatusRequestEntityTooLarge, codes.InvalidArgument, fmt.Sprintf("request body larger than %d bytes", maxBody))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h.ServeHTTP(w, r)
	})
}

// requireJSON answers 415 to a request that may change state (any method
// but GET, HEAD and OPTIONS) unless its Content-Type is application/json:
// a cross-site HTML form can only send x-www-form-urlencoded, multipart or
// text/plain, and a page's fetch with application/json needs a CORS
// preflight this server never grants.
func requireJSON(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			if !httpjson.IsJSON(r) {
				httpjson.WriteError(w, http.StatusUnsupportedMediaType, codes.InvalidArgument, "Content-Type must be application/json")
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// strictQuery rejects query parameters that name no request field (a typo
// in a filter must not silently widen it) and accepts event types by their
// dotted names too (imaging.study.available).
type strictQuery struct{}

func (strictQuery) Parse(msg proto.Message, values url.Values, filter *utilities.DoubleArray) error {
	fields := msg.ProtoReflect().Descriptor().Fields()
	for k, vs := range values {
		name := strings.SplitN(k, ".", 2)[0]
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			fd = fields.ByJSONName(name)
		}
		if fd == nil {
			return fmt.Errorf("unknown query parameter %q", k)
		}
		if fd.Enum() != nil && fd.Enum().FullName() == "radbridge.v1.Priority" {
			for i, v := range vs {
				if p, ok := PriorityByName(v); ok {
					vs[i] = p.String()
				}
			}
		}
		if fd.Enum() != nil && fd.Enum().FullName() == "radbridge.v1.EventType" {
			for i, v := range vs {
				if t, ok := EventTypeByName(v); ok {
					vs[i] = t.String()
				}
			}
		}
	}
	return (&runtime.DefaultQueryParser{}).Parse(msg, values, filter)
}

// dotted maps event types to the browser room protocol's names.
var dotted = map[rbv1.EventType]string{
	rbv1.EventType_IMAGING_STUDY_AVAILABLE: "imaging.study.available",
	rbv1.EventType_IMAGING_STUDY_UPDATED:   "imaging.study.updated",
	rbv1.EventType_IMAGING_STUDY_PROGRESS:  "imaging.study.progress",
	rbv1.EventType_IMAGING_REPORT_READY:    "imaging.report.ready",
	rbv1.EventType_RESULT_RECEIVED:         "result.received",
	rbv1.EventType_ORDER_PLACED:            "order.placed",
	rbv1.EventType_ORDER_UPDATED:           "order.updated",
	rbv1.EventType_ORDER_CANCELLED:         "order.cancelled",
	rbv1.EventType_IMAGING_STUDY_VIEWED:    "imaging.study.viewed",
	rbv1.EventType_IMAGING_REPORT_UPDATED:  "imaging.report.updated",
}

// DottedName returns the room protocol name of t.
func DottedName(t rbv1.EventType) string { return dotted[t] }

// EventTypeByName accepts IMAGING_STUDY_AVAILABLE or imaging.study.available.
func EventTypeByName(s string) (rbv1.EventType, bool) {
	if v, ok := rbv1.EventType_value[s]; ok && v != 0 {
		return rbv1.EventType(v), true
	}
	for t, d := range dotted {
		if d == s {
			return t, true
		}
	}
	return 0, false
}

// wsStream serves /v1/events:stream: the events as protojson text
// messages, one per frame, resumable with since.
type wsStream struct {
	svc *Service
	cfg HTTPConfig
}

func (h *wsStream) parse(q url.Values) (*rbv1.SubscribeRequest, error) {
	r := &rbv1.SubscribeRequest{}
	for k, vs := range q {
		switch k {
		case "patient_id":
			r.PatientId = append(r.PatientId, vs...)
		case "type":
			for _, v := range vs {
				t, ok := EventTypeByName(v)
				if !ok {
					return nil, invalid("unknown event type %q", v)
				}
				r.Type = append(r.Type, t)
			}
		case "resource_type":
			r.ResourceType = append(r.ResourceType, vs...)
		case "priority":
			for _, v := range vs {
				p, ok := PriorityByName(v)
				if !ok {
					return nil, invalid("unknown priority %q", v)
				}
				r.Priority = append(r.Priority, p)
			}
		case "since", "heartbeat_seconds":
			if len(vs) != 1 {
				return nil, invalid("%s given %d times", k, len(vs))
			}
			n, err := strconv.ParseUint(vs[0], 10, 64)
			if err != nil {
				return nil, invalid("%s %q is not a non-negative integer", k, vs[0])
			}
			if k == "since" {
				r.SinceSequence = n
			} else {
				if n > 3600 {
					return nil, invalid("heartbeat_seconds %d is more than 3600", n)
				}
				r.HeartbeatSeconds = uint32(n)
			}
		case "from_now":
			r.FromNow = len(vs) > 0 && (vs[0] == "true" || vs[0] == "1")
		default:
			return nil, invalid("unknown query parameter %q", k)
		}
	}
	return r, nil
}

// WebSocket close for an expired token: 1008 (policy violation) with the
// reason TOKEN_EXPIRED.
const (
	CloseTokenExpired       = websocket.StatusPolicyViolation
	CloseReasonTokenExpired = "TOKEN_EXPIRED"
)

func (h *wsStream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := checkOrigin(r, h.cfg.OriginPatterns); err != nil {
		// Before the cookie is read: a foreign page learns nothing, not
		// even whether the user's cookie is valid.
		httpjson.WriteError(w, http.StatusForbidden, codes.PermissionDenied, err.Error())
		return
	}
	actx, principal, ok := auth.HTTPHandshake(w, r, h.cfg.Auth)
	if !ok {
		return
	}
	req, err := h.parse(r.URL.Query())
	var p subscribeParams
	if err == nil {
		p, err = h.svc.validateSubscribe(actx, req)
	}
	if err != nil {
		st := status.Convert(err)
		httpjson.WriteError(w, runtime.HTTPStatusFromCode(st.Code()), st.Code(), st.Message())
		return
	}
	lean := &leanResponse{ResponseWriter: w}
	c, err := websocket.Accept(lean, r, &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns})
	if err != nil {
		return // Accept wrote the HTTP error (403 for a foreign Origin)
	}
	// The connection outlives this handler: returning releases net/http's
	// request state and this goroutine's stack, which every idle
	// subscriber would otherwise keep. Its only goroutine while idle is
	// the reader of CloseRead; the stream runs when there is something to
	// send (see wsSub), until the client leaves, its token expires or the
	// service stops (as a request's context would at shutdown).
	ctx, cancel := auth.WithExpiry(c.CloseRead(h.svc.stopCtx), principal)
	s := &wsSub{h: h, c: c, out: lean.out, ctx: ctx, cancel: cancel, heartbeat: p.heartbeat,
		sub: h.svc.hub.SubscribeOn("websocket", p.since, p.f)}
	s.start()
}

// wsHeartbeat is the heartbeat frame of /v1/events:stream.
var wsHeartbeat = []byte(`{"heartbeat":true}`)

// wsSub is one /v1/events:stream subscriber. It has no goroutine of its own
// while idle: the hub (a new event), its heartbeat timer and the end of its
// context kick it, and a kick has a sender goroutine send what is ready. At
// most one sends for it at a time, so events go out in order; a kick while
// one sends makes it look again before it stops.
type wsSub struct {
	h         *wsStream
	c         *websocket.Conn
	out       *frameWriter
	sub       *fanout.Subscription
	ctx       context.Context
	cancel    context.CancelFunc
	heartbeat time.Duration

	hb    *time.Timer
	hbDue atomic.Bool
	state atomic.Uint32 // wsIdle, wsRunning, wsKicked
}

const (
	wsIdle    = iota // no goroutine
	wsRunning        // a goroutine sends
	wsKicked         // a goroutine sends, and must look again before ending
)

func (s *wsSub) start() {
	s.state.Store(wsRunning) // the first run below; no kick may start another
	s.hb = time.AfterFunc(s.heartbeat, func() {
		s.hbDue.Store(true)
		s.kick()
	})
	s.sub.Notify(s.kick)
	context.AfterFunc(s.ctx, s.kick)
	startSender(s)
}

// kick makes sure a goroutine looks at the subscription soon.
func (s *wsSub) kick() {
	for {
		switch s.state.Load() {
		case wsIdle:
			if s.state.CompareAndSwap(wsIdle, wsRunning) {
				startSender(s)
				return
			}
		case wsRunning:
			if s.state.CompareAndSwap(wsRunning, wsKicked) {
				return
			}
		default:
			return
		}
	}
}

func (s *wsSub) run() {
	for {
		if !s.send() {
			// Over: the state stays running, so no kick starts another.
			s.hb.Stop()
			s.sub.Close()
			s.cancel()
			s.c.CloseNow()
			return
		}
		if s.state.CompareAndSwap(wsRunning, wsIdle) {
			return
		}
		s.state.Store(wsRunning) // kicked meanwhile: look again
	}
}

// send writes the events that are ready, or a heartbeat when one is due and
// there are none; it returns false when the stream is over.
func (s *wsSub) send() bool {
	c, ctx := s.c, s.ctx
	// A write that times out (a peer that stopped reading) has a full
	// socket buffer behind it: no close frame could get out either, so the
	// connection is dropped (run), and the client resumes from the last
	// event it read.
	write := func(b []byte) error {
		_, err := s.out.writeText(b, s.h.cfg.WriteTimeout)
		return err
	}
	for {
		entries, err := s.sub.Poll(ctx)
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			switch {
			case errors.Is(err, fanout.ErrSlow):
				c.Close(websocket.StatusTryAgainLater, fmt.Sprintf("subscriber too slow: resume with since=%d", s.sub.Position()))
			case auth.Expired(ctx):
				c.Close(CloseTokenExpired, CloseReasonTokenExpired)
			case ctx.Err() != nil:
			default:
				c.Close(websocket.StatusInternalError, "read events failed")
			}
			return false
		}
		if len(entries) == 0 {
			if !s.hbDue.Swap(false) {
				return true
			}
			if err := write(wsHeartbeat); err != nil {
				return false
			}
			s.hb.Reset(s.heartbeat)
			return true
		}
		for _, e := range entries {
			if err := write(e.JSON()); err != nil {
				return false
			}
		}
		// The heartbeat counts from the last write, as a wait in Next
		// would.
		s.hbDue.Store(false)
		s.hb.Reset(s.heartbeat)
	}
}

// checkOrigin applies websocket.Accept's Origin rule before a handler reads
// a cookie: no Origin (not a browser), the request's own host, or one of
// patterns (path.Match on the Origin's host, or on scheme://host for a
// pattern with a scheme).
func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return fmt.Errorf("Origin %q is not a URL with a host", origin)
	}
	if strings.EqualFold(r.Host, u.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return nil
		}
	}
	return fmt.Errorf("Origin %q may not open this WebSocket (see --allowed-origins)", u.Host)
}
