package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"radbridge/auth"
	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Base is the path the handler serves.
const Base = "/fhir"

// SeqHeader is the response header that names the event-log sequence a
// response reflects: every event up to it, none after it.
const SeqHeader = "X-Radbridge-Event-Seq"

// SeqExtension is the Bundle.meta extension with the same sequence
// (valueString: decimal digits, since a sequence may exceed the 2^31-1 of
// FHIR's unsignedInt).
const SeqExtension = "https://radbridge.dev/fhir/StructureDefinition/event-sequence"

// contentType is the media type of every answer.
const contentType = "application/fhir+json"

// Events is what the handler needs of the event log: its bounds, and the
// events from a sequence on as they are appended.
type Events interface {
	Bounds(ctx context.Context) (first, last uint64, err error)
	Watch(ctx context.Context, from uint64, fn func(*rbv1.Event) error) error
	Read(ctx context.Context, from uint64, f eventlog.Filter, max int) ([]*rbv1.Event, error)
}

// getter reads one event by sequence (store.EventLog.Get): cheaper than
// Read, used when the log has it.
type getter interface {
	Get(ctx context.Context, seq uint64) (*rbv1.Event, error)
}

// Config configures the handler.
type Config struct {
	// Events is the event log the resources are read from (required).
	Events Events
	// Auth authenticates clients as the rest of the API does; nil means
	// auth.None.
	Auth   auth.Authenticator
	Logger *slog.Logger
	// BaseURL is the absolute URL of this endpoint as clients reach it
	// (https://radbridge.example.org/fhir), for Bundle fullUrl and links;
	// empty: built from each request's scheme and Host.
	BaseURL string
	// Version is the software version the CapabilityStatement names.
	Version string
	// Wait bounds how long a request waits for the index to reach the
	// event log's newest sequence (default 2s); after it, the answer
	// reflects what is indexed (SeqHeader says which sequence).
	Wait time.Duration

	// The subscriptions hook (package fhir/subscription mounts here).
	//
	// Topics are the SubscriptionTopic canonical URLs offered: each is
	// listed on the CapabilityStatement's rest.resource Subscription with
	// the Subscriptions R5 Backport extension
	// capabilitystatement-subscriptiontopic-canonical (the Subscription
	// entry is created if Resources has none).
	Topics []string
	// Extra routes requests under /fhir by their first path segment
	// ("Subscription" for /fhir/Subscription and /fhir/Subscription/…,
	// "$get-ws-binding-token", "ws" …) to another handler, which gets the
	// request unchanged (full path) and does its own authentication (see
	// Authenticate) and answers (see WriteOutcome).
	Extra map[string]http.Handler
	// Resources are more CapabilityStatement rest.resource entries, as
	// FHIR R4 JSON objects ({"type": "Subscription", "interaction": […]}).
	Resources []map[string]any
}

// Handler serves the FHIR R4 read API under /fhir.
type Handler struct {
	cfg Config
	idx *index
	get func(ctx context.Context, seq uint64) (*rbv1.Event, error)
}

// New returns the handler. Run must run for it to see events.
func New(cfg Config) *Handler {
	if cfg.Auth == nil {
		cfg.Auth = auth.None{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Wait == 0 {
		cfg.Wait = 2 * time.Second
	}
	cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	h := &Handler{cfg: cfg, idx: newIndex()}
	if g, ok := cfg.Events.(getter); ok {
		h.get = g.Get
	} else {
		h.get = func(ctx context.Context, seq uint64) (*rbv1.Event, error) {
			evs, err := cfg.Events.Read(ctx, seq, eventlog.Filter{}, 1)
			if err != nil || len(evs) == 0 || evs[0].GetSequence() != seq {
				return nil, err
			}
			return evs[0], nil
		}
	}
	return h
}

// Run indexes the event log from its first event and follows it until ctx
// ends. A failed watch is resumed after the last event indexed.
func (h *Handler) Run(ctx context.Context) error {
	log := h.cfg.Logger.With("component", "fhir")
	for {
		from := h.idx.position() + 1
		err := h.cfg.Events.Watch(ctx, from, func(ev *rbv1.Event) error {
			h.idx.add(ev)
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("event log watch ended; resuming", "err", err, "from", h.idx.position()+1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// Position returns the newest event sequence the handler has indexed.
func (h *Handler) Position() uint64 { return h.idx.position() }

// fhirID is the syntax of a FHIR R4 id.
var fhirID = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.cfg.Logger.Error("FHIR request panicked", "component", "fhir", "panic", fmt.Sprint(v))
			WriteOutcome(w, http.StatusInternalServerError, "exception", "internal error")
		}
	}()
	rest, ok := strings.CutPrefix(r.URL.Path, Base)
	if !ok || (rest != "" && rest[0] != '/') {
		WriteOutcome(w, http.StatusNotFound, "not-found", "not a FHIR path")
		return
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if parts[0] != "" {
		if x := h.cfg.Extra[parts[0]]; x != nil {
			x.ServeHTTP(w, r)
			return
		}
	}
	if !acceptable(w, r) {
		return
	}
	switch {
	case parts[0] == "":
		WriteOutcome(w, http.StatusNotFound, "not-supported", "no system-level interaction here; the CapabilityStatement is at "+Base+"/metadata")
	case parts[0] == "metadata" && len(parts) == 1:
		if !onlyGet(w, r) {
			return
		}
		h.metadata(w, r)
	case !served(parts[0]):
		WriteOutcome(w, http.StatusNotFound, "not-supported", fmt.Sprintf("resource type %q is not served (see %s/metadata)", trunc(parts[0]), Base))
	case len(parts) == 1 || (len(parts) == 2 && parts[1] == "_search"):
		h.search(w, r, parts[0], len(parts) == 2)
	case len(parts) == 2:
		if !onlyGet(w, r) {
			return
		}
		h.read(w, r, parts[0], parts[1])
	default:
		WriteOutcome(w, http.StatusNotFound, "not-supported", "only read and search-type interactions are supported (no history, vread or operations)")
	}
}

func onlyGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	WriteOutcome(w, http.StatusMethodNotAllowed, "not-supported", fmt.Sprintf("method %s is not allowed here", r.Method))
	return false
}

// acceptable checks _format and Accept: JSON only (406 otherwise).
func acceptable(w http.ResponseWriter, r *http.Request) bool {
	if fs := r.URL.Query()["_format"]; len(fs) > 0 {
		if _, ok := formatOf(fs[0]); ok {
			return true
		}
		WriteOutcome(w, http.StatusNotAcceptable, "not-supported", fmt.Sprintf("_format %q: only JSON (json, application/fhir+json) is served", trunc(fs[0])))
		return false
	}
	acc := r.Header.Values("Accept")
	if len(acc) == 0 {
		return true
	}
	for _, a := range strings.Split(strings.Join(acc, ","), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(a))
		if err != nil {
			continue
		}
		switch mt {
		case "*/*", "application/*", "application/fhir+json", "application/json", "application/json+fhir":
			return true
		}
	}
	WriteOutcome(w, http.StatusNotAcceptable, "not-supported", "only application/fhir+json (or application/json) is served")
	return false
}

// Authenticate checks a request's bearer token as the rest of the API
// does; on failure it has answered 401 with an OperationOutcome. For
// Config.Extra handlers.
func Authenticate(w http.ResponseWriter, r *http.Request, a auth.Authenticator) (*auth.Principal, bool) {
	tok, err := auth.TokenFromRequest(r)
	var p *auth.Principal
	if err == nil {
		p, err = a.Authenticate(r.Context(), tok)
	}
	if err != nil {
		msg := auth.ErrUnauthenticated.Error()
		if errors.Is(err, auth.ErrTokenExpired) {
			msg = auth.ErrTokenExpired.Error()
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="radbridge"`)
		WriteOutcome(w, http.StatusUnauthorized, "login", msg)
		return nil, false
	}
	return p, true
}

// WriteOutcome answers status with an OperationOutcome of one issue
// (severity error, the FHIR issue type code, the text).
func WriteOutcome(w http.ResponseWriter, status int, code, text string) {
	writeJSON(w, status, outcome("error", code, text))
}

func outcome(severity, code, text string) map[string]any {
	return map[string]any{
		"resourceType": "OperationOutcome",
		"issue":        []any{map[string]any{"severity": severity, "code": code, "diagnostics": text}},
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","diagnostics":"encode"}]}`)
	}
	w.Header().Set("Content-Type", contentType+"; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// catchUp waits (bounded by Config.Wait) until the index holds every event
// the log held when the request came, and returns the sequence the answer
// reflects.
func (h *Handler) catchUp(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	_, last, err := h.cfg.Events.Bounds(r.Context())
	if err != nil {
		h.unavailable(w, err)
		return 0, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Wait)
	defer cancel()
	_ = h.idx.await(ctx, last)
	return h.idx.position(), true
}

// unavailable answers 503 for an event log error (logged: it names no
// patient data).
func (h *Handler) unavailable(w http.ResponseWriter, err error) {
	h.cfg.Logger.Warn("FHIR request: event log unavailable", "component", "fhir", "err", err)
	w.Header().Set("Retry-After", "1")
	WriteOutcome(w, http.StatusServiceUnavailable, "transient", "the event log is unavailable")
}

// principal authenticates the request.
func (h *Handler) principal(w http.ResponseWriter, r *http.Request) (*auth.Principal, bool) {
	return Authenticate(w, r, h.cfg.Auth)
}

func versionID(seq uint64) string { return strconv.FormatUint(seq, 10) }

// fhirInstant formats a FHIR instant to the microsecond: the precision
// _lastUpdated compares at, so gt<a lastUpdated seen> never matches the
// resource that showed it.
func fhirInstant(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z")
}

// read answers GET /fhir/Type/id.
func (h *Handler) read(w http.ResponseWriter, r *http.Request, typ, id string) {
	p, ok := h.principal(w, r)
	if !ok {
		return
	}
	for k := range r.URL.Query() {
		if k != "_format" {
			WriteOutcome(w, http.StatusBadRequest, "not-supported", fmt.Sprintf("parameter %q is not supported on read", trunc(k)))
			return
		}
	}
	if !fhirID.MatchString(id) {
		WriteOutcome(w, http.StatusBadRequest, "invalid", fmt.Sprintf("%q is not a FHIR id", trunc(id)))
		return
	}
	pos, ok := h.catchUp(w, r)
	if !ok {
		return
	}
	w.Header().Set(SeqHeader, versionID(pos))
	v, found := h.idx.lookup(typ, id, pos)
	if !found || !p.MayRead(v.patient) {
		// A resource of a patient the client may not see is not found:
		// its existence is not disclosed.
		WriteOutcome(w, http.StatusNotFound, "not-found", fmt.Sprintf("%s/%s is not known", typ, id))
		return
	}
	etag := `W/"` + versionID(v.seq) + `"`
	w.Header().Set("ETag", etag)
	if v.unixNano != 0 {
		w.Header().Set("Last-Modified", v.time().Format(http.TimeFormat))
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && (inm == etag || inm == `"`+versionID(v.seq)+`"`) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	ev, err := h.get(r.Context(), v.seq)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	if ev == nil {
		WriteOutcome(w, http.StatusGone, "not-found", fmt.Sprintf("version %d of %s/%s was removed by the event log's retention", v.seq, typ, id))
		return
	}
	res, err := resourceJSON(ev)
	if err != nil {
		WriteOutcome(w, http.StatusInternalServerError, "exception", "encode resource")
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// maxSearchBody bounds a POST _search body.
const maxSearchBody = 16 << 10

// search answers GET /fhir/Type?… and POST /fhir/Type/_search.
func (h *Handler) search(w http.ResponseWriter, r *http.Request, typ string, post bool) {
	params := r.URL.Query()
	switch {
	case post && r.Method == http.MethodPost:
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt != "application/x-www-form-urlencoded" {
			WriteOutcome(w, http.StatusUnsupportedMediaType, "not-supported", "POST _search takes application/x-www-form-urlencoded")
			return
		}
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSearchBody))
		if err != nil {
			WriteOutcome(w, http.StatusRequestEntityTooLarge, "too-costly", fmt.Sprintf("search body larger than %d bytes", maxSearchBody))
			return
		}
		form, err := url.ParseQuery(string(b))
		if err != nil {
			WriteOutcome(w, http.StatusBadRequest, "invalid", "search body is not a form")
			return
		}
		for k, vs := range form {
			params[k] = append(params[k], vs...)
		}
	case post:
		w.Header().Set("Allow", "POST")
		WriteOutcome(w, http.StatusMethodNotAllowed, "not-supported", fmt.Sprintf("method %s is not allowed here", r.Method))
		return
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		WriteOutcome(w, http.StatusMethodNotAllowed, "not-supported", fmt.Sprintf("method %s is not allowed here (only read and search)", r.Method))
		return
	}
	p, ok := h.principal(w, r)
	if !ok {
		return
	}
	q, err := parseQuery(typ, params, lenient(r))
	if err != nil {
		WriteOutcome(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if q.patient != "" && !p.MayRead(q.patient) {
		WriteOutcome(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s may not see patient %q", p.Subject, q.patient))
		return
	}
	pos, ok := h.catchUp(w, r)
	if !ok {
		return
	}
	asOf, offset := pos, 0
	if q.cursor != nil {
		if q.cursor.AsOf > pos {
			WriteOutcome(w, http.StatusBadRequest, "invalid", "_cursor is not one this server issued")
			return
		}
		asOf, offset = q.cursor.AsOf, q.cursor.Offset
	}
	hits, kept := h.idx.search(q, asOf, p.MayRead)
	if !kept {
		WriteOutcome(w, http.StatusGone, "not-found", fmt.Sprintf("this search's pages expired (more than %d events, or %d superseded versions, since its first page): search again without _cursor", PagingWindow, SupersededKept))
		return
	}
	w.Header().Set(SeqHeader, versionID(asOf))
	base := h.baseURL(r)
	bundle := map[string]any{
		"resourceType": "Bundle",
		"meta": map[string]any{
			"extension": []any{map[string]any{"url": SeqExtension, "valueString": versionID(asOf)}},
		},
		"type":  "searchset",
		"total": len(hits),
	}
	page := hits[min(offset, len(hits)):]
	if len(page) > q.count {
		page = page[:q.count]
	}
	links := []any{map[string]any{"relation": "self", "url": h.pageURL(base, typ, q, cursor{AsOf: asOf, Offset: offset})}}
	if end := offset + len(page); end < len(hits) && q.count > 0 {
		links = append(links, map[string]any{"relation": "next", "url": h.pageURL(base, typ, q, cursor{AsOf: asOf, Offset: end})})
	}
	if offset > 0 && q.count > 0 {
		links = append(links, map[string]any{"relation": "previous", "url": h.pageURL(base, typ, q, cursor{AsOf: asOf, Offset: max(0, offset-q.count)})})
	}
	bundle["link"] = links
	evs, err := h.events(r.Context(), page)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	entries := make([]any, 0, len(page)+1)
	for i, hit := range page {
		if evs[i] == nil {
			WriteOutcome(w, http.StatusGone, "not-found", "a version this page lists was removed by the event log's retention: search again without _cursor")
			return
		}
		res, err := resourceJSON(evs[i])
		if err != nil {
			WriteOutcome(w, http.StatusInternalServerError, "exception", "encode resource")
			return
		}
		entries = append(entries, map[string]any{
			"fullUrl":  base + "/" + typ + "/" + hit.e.id,
			"resource": res,
			"search":   map[string]any{"mode": "match"},
		})
	}
	var notes []string
	if q.capped {
		notes = append(notes, fmt.Sprintf("_count was capped at %d", MaxCount))
	}
	if len(q.ignored) > 0 {
		notes = append(notes, "unknown parameters ignored (Prefer: handling=lenient): "+strings.Join(q.ignored, ", "))
	}
	if len(notes) > 0 {
		entries = append(entries, map[string]any{
			"resource": outcome("warning", "informational", strings.Join(notes, "; ")),
			"search":   map[string]any{"mode": "outcome"},
		})
	}
	if len(entries) > 0 {
		bundle["entry"] = entries
	}
	writeJSON(w, http.StatusOK, bundle)
}

// fetchParallel bounds the event reads of one page in flight.
const fetchParallel = 8

// events reads the events of a page's versions (nil where retention
// removed one), a few at a time.
func (h *Handler) events(ctx context.Context, page []hit) ([]*rbv1.Event, error) {
	evs := make([]*rbv1.Event, len(page))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fetchParallel)
	for i, hit := range page {
		g.Go(func() error {
			ev, err := h.get(gctx, hit.v.seq)
			evs[i] = ev
			return err
		})
	}
	return evs, g.Wait()
}

// lenient reports Prefer: handling=lenient.
func lenient(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.ReplaceAll(strings.TrimSpace(p), " ", ""), "handling=lenient") {
				return true
			}
		}
	}
	return false
}

// pageURL is the search URL of a page.
func (h *Handler) pageURL(base, typ string, q *query, c cursor) string {
	v := url.Values{}
	for k, vs := range q.params {
		if k == "_count" {
			continue
		}
		v[k] = vs
	}
	v.Set("_count", strconv.Itoa(q.count))
	v.Set("_cursor", c.encode())
	return base + "/" + typ + "?" + v.Encode()
}

// hostSyntax is what a Host header may hold for links built from it.
var hostSyntax = regexp.MustCompile(`^[A-Za-z0-9.\-:\[\]]{1,255}$`)

// baseURL is the endpoint's absolute URL: Config.BaseURL, else the
// request's scheme and Host.
func (h *Handler) baseURL(r *http.Request) string {
	if h.cfg.BaseURL != "" {
		return h.cfg.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if !hostSyntax.MatchString(host) {
		host = "localhost"
	}
	return scheme + "://" + host + Base
}
