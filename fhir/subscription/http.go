package subscription

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"radbridge/auth"
)

// FHIRContentType is the media type of every answer.
const FHIRContentType = "application/fhir+json"

// Paths the HTTP front serves (Routes).
const (
	PathSubscription = "/fhir/Subscription"
	PathWebSocket    = "/fhir/ws"
)

// maxEventsPerQuery bounds the events one $events answer carries.
const maxEventsPerQuery = 100

// Search page sizes (_count): the default and the most.
const (
	defaultSearchCount = 100
	maxSearchCount     = 1000
)

// Handler is the HTTP front of FHIR Subscriptions.
type Handler struct {
	cfg  Config
	auth auth.Authenticator
	mux  *http.ServeMux
	now  func() time.Time
	// owners knows who owns which subscription (Run follows the
	// bucket); createMu makes a cap check and its create one step in
	// this process.
	owners   *owners
	createMu sync.Mutex
}

// NewHandler returns the HTTP front; a authenticates callers (nil: none).
func NewHandler(cfg Config, a auth.Authenticator) *Handler {
	cfg.defaults()
	if a == nil {
		a = auth.None{}
	}
	h := &Handler{cfg: cfg, auth: a, mux: http.NewServeMux(), now: time.Now, owners: newOwners()}
	h.mux.HandleFunc("POST "+PathSubscription, h.create)
	h.mux.HandleFunc("GET "+PathSubscription, h.search)
	h.mux.HandleFunc("GET "+PathSubscription+"/{id}", h.read)
	h.mux.HandleFunc("DELETE "+PathSubscription+"/{id}", h.delete)
	h.mux.HandleFunc("GET "+PathSubscription+"/{id}/{op}", h.operation)
	h.mux.HandleFunc("POST "+PathSubscription+"/{id}/{op}", h.operation)
	h.mux.HandleFunc(PathWebSocket, h.websocket)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteOutcome(w, http.StatusMethodNotAllowed, "not-supported", fmt.Sprintf("%s %s is not supported", r.Method, r.URL.Path))
	})
	return h
}

// Routes returns the handlers by http.ServeMux pattern, to mount on the
// HTTP and HTTPS servers (api.HTTPConfig.Extra, or the FHIR front's
// fhir.Config.Extra).
func (h *Handler) Routes() map[string]http.Handler {
	return map[string]http.Handler{PathSubscription: h, PathSubscription + "/": h, PathWebSocket: h}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Run follows the subscription bucket (who owns which subscription, for
// the caps and for search) until ctx ends. Creates and searches wait for
// it.
func (h *Handler) Run(ctx context.Context) error {
	for n := 1; ; n++ {
		err := h.owners.run(ctx, h.cfg.Store)
		if ctx.Err() != nil {
			return nil
		}
		h.cfg.Logger.Warn("following the subscription bucket; retrying", "component", "fhir-subscription", "err", err)
		t := time.NewTimer(min(time.Duration(n)*time.Second, 30*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// waitOwners waits (at most 10 s) until Run has read the bucket.
func (h *Handler) waitOwners(w http.ResponseWriter, r *http.Request) bool {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := h.owners.wait(ctx); err != nil {
		WriteOutcome(w, http.StatusServiceUnavailable, "transient", "subscription store not read yet")
		return false
	}
	return true
}

// WriteOutcome writes an OperationOutcome with one issue (severity error,
// code an R4 IssueType code).
func WriteOutcome(w http.ResponseWriter, status int, code, diagnostics string) {
	b, _ := json.Marshal(map[string]any{
		"resourceType": "OperationOutcome",
		"issue":        []any{map[string]any{"severity": "error", "code": code, "diagnostics": diagnostics}},
	})
	w.Header().Set("Content-Type", FHIRContentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeFHIR(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", FHIRContentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (*auth.Principal, bool) {
	tok, err := auth.TokenFromRequest(r)
	var p *auth.Principal
	if err == nil {
		p, err = h.auth.Authenticate(r.Context(), tok)
	}
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="radbridge"`)
		msg := auth.ErrUnauthenticated.Error()
		if errors.Is(err, auth.ErrTokenExpired) {
			msg = auth.ErrTokenExpired.Error()
		}
		WriteOutcome(w, http.StatusUnauthorized, "login", msg)
		return nil, false
	}
	return p, true
}

// mayUse reports whether p may read, bind or delete st: its owner, with a
// patient scope covering the subscription's patients.
func mayUse(p *auth.Principal, st *Stored) bool {
	if p == nil || p.Subject != st.Owner {
		return false
	}
	if !p.Restricted() {
		return true
	}
	pats := Patients(st.Filters)
	if len(pats) == 0 {
		return false
	}
	for _, id := range pats {
		if !p.MayRead(id) {
			return false
		}
	}
	return true
}

// owned authenticates the request and loads the subscription its path
// names, which the caller must be allowed to use (mayUse); else it answers
// 401, 404 (unknown or not the caller's: the same answer) or 503 itself.
func (h *Handler) owned(w http.ResponseWriter, r *http.Request) (*auth.Principal, *Stored, bool) {
	p, ok := h.authenticate(w, r)
	if !ok {
		return nil, nil, false
	}
	st, _, err := h.cfg.Store.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, ErrNotFound) || (err == nil && !mayUse(p, st)) {
		WriteOutcome(w, http.StatusNotFound, "not-found", "Subscription/"+r.PathValue("id")+" is not known")
		return nil, nil, false
	}
	if err != nil {
		WriteOutcome(w, http.StatusServiceUnavailable, "transient", "subscription store unavailable")
		return nil, nil, false
	}
	return p, st, true
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	p, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != FHIRContentType && mt != "application/json" {
		WriteOutcome(w, http.StatusUnsupportedMediaType, "not-supported", "Content-Type must be application/fhir+json")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		WriteOutcome(w, http.StatusBadRequest, "invalid", "read body: "+err.Error())
		return
	}
	if len(body) > MaxBody {
		WriteOutcome(w, http.StatusRequestEntityTooLarge, "too-costly", fmt.Sprintf("a Subscription has at most %d bytes", MaxBody))
		return
	}
	spec, err := Parse(body)
	if err != nil {
		WriteOutcome(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if p.Restricted() {
		pats := Patients(spec.Filters)
		if len(pats) == 0 || slices.ContainsFunc(pats, func(id string) bool { return !p.MayRead(id) }) {
			WriteOutcome(w, http.StatusForbidden, "forbidden", "this token may subscribe only with a patient filter naming its own patients (?patient=Patient/<id>)")
			return
		}
	}
	if spec.ChannelType == ChannelRestHook {
		u, _ := url.Parse(spec.Endpoint)
		if err := h.cfg.Allow.CheckHost(u.Hostname()); err != nil {
			WriteOutcome(w, http.StatusBadRequest, "invalid", "channel.endpoint: "+err.Error())
			return
		}
	}
	// Events after the newest one stored now are notified (the hub may
	// not be positioned yet while the daemon starts).
	_, last, err := h.cfg.Log.Bounds(r.Context())
	if err != nil {
		WriteOutcome(w, http.StatusServiceUnavailable, "transient", "event log unavailable")
		return
	}
	if !h.waitOwners(w, r) {
		return
	}
	now := h.now().UTC()
	st := &Stored{ID: NewID(), Spec: *spec, Owner: p.Subject, Scope: p.Patients, Status: StatusRequested, Created: now, Updated: now, StartSeq: max(last, h.cfg.Hub.Head())}
	h.createMu.Lock()
	mine, all := h.owners.counts(p.Subject)
	if mine >= h.cfg.MaxPerSubject || all >= h.cfg.MaxTotal {
		h.createMu.Unlock()
		msg := fmt.Sprintf("this token's subject has %d subscriptions, the most allowed (--fhir-subscriptions-per-subject); delete one first", mine)
		if mine < h.cfg.MaxPerSubject {
			msg = fmt.Sprintf("radbridge holds %d subscriptions, the most allowed (--fhir-subscriptions-max); try again later", all)
		}
		w.Header().Set("Retry-After", "60")
		WriteOutcome(w, http.StatusTooManyRequests, "throttled", msg)
		return
	}
	err = h.cfg.Store.Create(r.Context(), st)
	if err == nil {
		h.owners.add(st.ID, st.Owner)
	}
	h.createMu.Unlock()
	if err != nil {
		WriteOutcome(w, http.StatusServiceUnavailable, "transient", "subscription not stored")
		return
	}
	b, _ := json.Marshal(st.Resource())
	w.Header().Set("Location", h.base(r)+"/Subscription/"+st.ID)
	writeFHIR(w, http.StatusCreated, b)
}

func (h *Handler) read(w http.ResponseWriter, r *http.Request) {
	_, st, ok := h.owned(w, r)
	if !ok {
		return
	}
	b, _ := json.Marshal(st.Resource())
	writeFHIR(w, http.StatusOK, b)
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	_, st, ok := h.owned(w, r)
	if !ok {
		return
	}
	if err := h.cfg.Store.Delete(r.Context(), st.ID); err != nil {
		WriteOutcome(w, http.StatusServiceUnavailable, "transient", "subscription not deleted")
		return
	}
	h.owners.remove(st.ID)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) search(w http.ResponseWriter, r *http.Request) {
	p, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	for k := range q {
		if k != "status" && k != "_format" && k != "_count" {
			WriteOutcome(w, http.StatusBadRequest, "not-supported", fmt.Sprintf("search parameter %q is not supported (status, _count)", k))
			return
		}
	}
	count := defaultSearchCount
	if q.Has("_count") {
		n, err := strconv.Atoi(q.Get("_count"))
		if err != nil || n < 0 {
			WriteOutcome(w, http.StatusBadRequest, "invalid", fmt.Sprintf("_count %q: want a number from 0 to %d", q.Get("_count"), maxSearchCount))
			return
		}
		count = min(n, maxSearchCount)
	}
	if !h.waitOwners(w, r) {
		return
	}
	// Only the caller's subscriptions are read (at most
	// --fhir-subscriptions-per-subject), never the whole bucket.
	entries := []any{}
	total := 0
	for _, id := range h.owners.of(p.Subject) {
		st, _, err := h.cfg.Store.Get(r.Context(), id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			WriteOutcome(w, http.StatusServiceUnavailable, "transient", "subscription store unavailable")
			return
		}
		if !mayUse(p, st) || (q.Has("status") && q.Get("status") != st.Status) {
			continue
		}
		total++
		if len(entries) < count {
			entries = append(entries, map[string]any{"fullUrl": h.base(r) + "/Subscription/" + st.ID, "resource": st.Resource(), "search": map[string]any{"mode": "match"}})
		}
	}
	b, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "id": uuid(), "type": "searchset", "total": total, "entry": entries})
	writeFHIR(w, http.StatusOK, b)
}

func (h *Handler) operation(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	if r.Method == http.MethodPost && op != "$get-ws-binding-token" {
		WriteOutcome(w, http.StatusMethodNotAllowed, "not-supported", "POST "+op+" is not supported")
		return
	}
	switch op {
	case "$status", "$events", "$get-ws-binding-token":
	default:
		WriteOutcome(w, http.StatusNotFound, "not-supported", fmt.Sprintf("operation %q is not supported ($status, $events, $get-ws-binding-token)", op))
		return
	}
	p, st, ok := h.owned(w, r)
	if !ok {
		return
	}
	switch op {
	case "$status":
		cur, _, err := h.cfg.Store.Cursor(r.Context(), st.ID)
		if err != nil {
			WriteOutcome(w, http.StatusServiceUnavailable, "transient", "subscription store unavailable")
			return
		}
		if st.Error == "" && cur.LastError != "" && st.Status == StatusActive {
			st.Error = "retrying: " + cur.LastError
		}
		writeFHIR(w, http.StatusOK, st.StatusBundle(h.base(r), cur.Number))
	case "$events":
		h.events(w, r, st)
	case "$get-ws-binding-token":
		if st.ChannelType != ChannelWebSocket {
			WriteOutcome(w, http.StatusBadRequest, "invalid", "Subscription/"+st.ID+" has no websocket channel")
			return
		}
		tok, exp, err := h.cfg.Store.IssueToken(r.Context(), st.ID, p, h.cfg.TokenTTL)
		if err != nil {
			WriteOutcome(w, http.StatusServiceUnavailable, "transient", "binding token not stored")
			return
		}
		scheme := "ws"
		if r.TLS != nil {
			scheme = "wss"
		}
		b, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": []any{
			map[string]any{"name": "token", "valueString": tok},
			map[string]any{"name": "expiration", "valueDateTime": exp.Format(time.RFC3339)},
			map[string]any{"name": "subscription", "valueString": h.base(r) + "/Subscription/" + st.ID},
			map[string]any{"name": "websocket-url", "valueUrl": scheme + "://" + r.Host + PathWebSocket},
		}})
		w.Header().Set("Cache-Control", "no-store")
		writeFHIR(w, http.StatusOK, b)
	}
}

func (h *Handler) events(w http.ResponseWriter, r *http.Request, st *Stored) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "eventsSinceNumber", "eventsUntilNumber", "content", "_format":
		default:
			WriteOutcome(w, http.StatusBadRequest, "invalid", fmt.Sprintf("parameter %q is not supported (eventsSinceNumber, eventsUntilNumber, content)", k))
			return
		}
	}
	cur, _, err := h.cfg.Store.Cursor(r.Context(), st.ID)
	if err != nil {
		WriteOutcome(w, http.StatusServiceUnavailable, "transient", "subscription store unavailable")
		return
	}
	num := func(k string, def uint64) (uint64, bool) {
		if !q.Has(k) {
			return def, true
		}
		n, err := strconv.ParseUint(q.Get(k), 10, 64)
		if err != nil || n == 0 {
			WriteOutcome(w, http.StatusBadRequest, "invalid", fmt.Sprintf("%s %q: want a positive integer", k, q.Get(k)))
			return 0, false
		}
		return n, true
	}
	first := uint64(1)
	if len(cur.Map) > 0 {
		first = cur.Map[0].N
	}
	since, ok := num("eventsSinceNumber", first)
	if !ok {
		return
	}
	until, ok := num("eventsUntilNumber", cur.Number)
	if !ok {
		return
	}
	if until < since && q.Has("eventsUntilNumber") {
		WriteOutcome(w, http.StatusBadRequest, "invalid", "eventsUntilNumber is before eventsSinceNumber")
		return
	}
	until = min(until, cur.Number, since+maxEventsPerQuery-1)
	content := st.Content
	if q.Has("content") {
		content = q.Get("content")
		if content != ContentEmpty && content != ContentIDs && content != ContentFull {
			WriteOutcome(w, http.StatusBadRequest, "invalid", "content: want empty, id-only or full-resource")
			return
		}
	}
	var evs []Numbered
	for n := since; n <= until; n++ {
		seq, ok := cur.SeqOf(n)
		if !ok {
			continue // older than the numbers kept
		}
		ev, err := readEvent(r.Context(), h.cfg.Log, seq)
		if err != nil {
			WriteOutcome(w, http.StatusServiceUnavailable, "transient", "event log unavailable")
			return
		}
		evs = append(evs, Numbered{N: n, Event: ev})
	}
	writeFHIR(w, http.StatusOK, st.Bundle(h.base(r), TypeQueryEvent, cur.Number, content, evs))
}

// base is the FHIR base URL of references in answers.
func (h *Handler) base(r *http.Request) string {
	if h.cfg.BaseURL != "" {
		return h.cfg.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/fhir"
}

// numbered reads the events of numbers from..to of cursor cur.
func numbered(ctx context.Context, h *Handler, cur *Cursor, from, to uint64) ([]Numbered, error) {
	var out []Numbered
	for n := from; n <= to; n++ {
		nb := Numbered{N: n}
		if seq, ok := cur.SeqOf(n); ok {
			ev, err := readEvent(ctx, h.cfg.Log, seq)
			if err != nil {
				return nil, err
			}
			nb.Event = ev
		}
		out = append(out, nb)
	}
	return out, nil
}

// CapabilityResource is this package's CapabilityStatement.rest.resource
// entry (fhir.Config.Resources): the interactions and the backport's
// operations it serves.
func CapabilityResource() map[string]any {
	const def = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
	op := func(name, id string) any { return map[string]any{"name": name, "definition": def + id} }
	return map[string]any{
		"type":    "Subscription",
		"profile": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription",
		"interaction": []any{
			map[string]any{"code": "create"}, map[string]any{"code": "read"},
			map[string]any{"code": "search-type"}, map[string]any{"code": "delete"},
		},
		"operation": []any{
			op("status", "backport-subscription-status"),
			op("events", "backport-subscription-events"),
			op("get-ws-binding-token", "backport-subscription-get-ws-binding-token"),
		},
		"documentation": "Channels rest-hook and websocket (" + PathWebSocket + ", bind-with-token); payloads empty, id-only and full-resource.",
	}
}
