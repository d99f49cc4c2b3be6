package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"radbridge/api"
	"radbridge/auth"
	"radbridge/ingest"
	"radbridge/internal/opsapi"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	"radbridge/readmodel"
)

// Where the exceptions worklist and operator corrections are served.
const (
	ExceptionsPattern = "GET /v1/exceptions"
	ReconcilePattern  = "POST /v1/reconcile"
	// reconcileWait bounds how long POST /v1/reconcile waits for the
	// mapper to apply the correction it recorded.
	reconcileWait = 10 * time.Second
)

// ExceptionsResponse is GET /v1/exceptions' answer.
type ExceptionsResponse struct {
	AppliedSequence uint64            `json:"applied_sequence"`
	Counts          map[string]int    `json:"counts"`
	Items           []rules.Exception `json:"items"`
}

// exceptions lists the worklist as pr may see it: the mapper's items of
// its patients and, for an unrestricted client, the dead letters.
func (s *Server) exceptions(ctx context.Context, m *mapper.Mapper, pr *auth.Principal) (ExceptionsResponse, error) {
	res := ExceptionsResponse{AppliedSequence: m.Applied(), Counts: map[string]int{}}
	items, err := m.Exceptions(ctx, time.Now(), s.cfg.Exceptions, pr.MayRead)
	if err != nil {
		return res, err
	}
	res.Items = items
	if !pr.Restricted() {
		if dls, err := s.cfg.DeadLetters.DeadLetters(ctx); err == nil {
			for _, dl := range dls {
				res.Items = append(res.Items, rules.Exception{
					ID: fmt.Sprintf("%s:%d", rules.ExceptionDeadLetter, dl.Seq), Kind: rules.ExceptionDeadLetter, IngestSeq: dl.Seq, Since: dl.At,
					Evidence: fmt.Sprintf("ingest record %d (%s) was not mapped: %s", dl.Seq, dl.Kind, dl.Reason),
					Action:   "fix the cause (a new release, a larger --max-event-bytes), then retry it",
					Resolve:  &rules.Resolve{Action: "retry", Seq: dl.Seq},
				})
			}
		}
	}
	for _, k := range rules.ExceptionKinds {
		res.Counts[k] = 0
	}
	for _, it := range res.Items {
		res.Counts[it.Kind]++
	}
	return res, nil
}

// mapperWait bounds how long a question to the mapper (explain, the
// worklist, a correction's check) waits for the record being applied.
const mapperWait = 5 * time.Second

// busy answers 503 when the mapper's state stayed busy (mapper.ErrBusy).
func busy(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "5")
	jsonError(w, http.StatusServiceUnavailable, err.Error())
}

// mapperEndpoint serves an endpoint that asks this process's mapper (the
// operator's explain, worklist and corrections). It authenticates the
// request with a; check reads it and answers a bad one itself (false); a
// follower of a cluster (no current mapper in ms) answers 503 and names
// where to ask; else answer runs with the running mapper and ctx, which
// bounds the wait for the mapper's state (mapperWait). An error from
// answer means that state stayed busy: 503 with Retry-After.
func mapperEndpoint[Req any](a auth.Authenticator, ms Mappers,
	check func(w http.ResponseWriter, r *http.Request, pr *auth.Principal) (Req, bool),
	answer func(ctx context.Context, w http.ResponseWriter, r *http.Request, pr *auth.Principal, m *mapper.Mapper, req Req) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pr, ok := auth.HTTP(w, r, a)
		if !ok {
			return
		}
		req, ok := check(w, r, pr)
		if !ok {
			return
		}
		m := ms.Current()
		if m == nil {
			jsonError(w, http.StatusServiceUnavailable, "this process does not map (a follower of a cluster): ask the mapper leader (radbridge status names it)")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), mapperWait)
		defer cancel()
		if err := answer(ctx, w, r, pr, m, req); err != nil {
			busy(w, err)
		}
	})
}

// exceptionsHandler serves GET /v1/exceptions to any authenticated client
// (a restricted one sees its patients' items only, and no dead letters).
func (s *Server) exceptionsHandler() http.Handler {
	return mapperEndpoint(s.cfg.Auth, s.cfg.Mapper,
		func(w http.ResponseWriter, r *http.Request, _ *auth.Principal) (struct{}, bool) {
			if len(r.URL.Query()) > 0 {
				jsonError(w, http.StatusBadRequest, "GET /v1/exceptions takes no parameters")
				return struct{}{}, false
			}
			return struct{}{}, true
		},
		func(ctx context.Context, w http.ResponseWriter, _ *http.Request, pr *auth.Principal, m *mapper.Mapper, _ struct{}) error {
			res, err := s.exceptions(ctx, m, pr)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, res)
			return nil
		})
}

// ReconcileRequest is POST /v1/reconcile's body: a correction (action
// link, unlink, move, entered-in-error: see ingest.Reconcile) or
// action "retry" of dead letter Seq. RequestID makes a retried request one
// correction.
type ReconcileRequest struct {
	Action    string `json:"action"`
	Study     string `json:"study,omitempty"`
	Order     string `json:"order,omitempty"`
	Patient   string `json:"patient,omitempty"`
	Seq       uint64 `json:"seq,omitempty"`
	Reason    string `json:"reason"`
	RequestID string `json:"request_id,omitempty"`
}

// ReconcileResponse says what the correction recorded and derived.
type ReconcileResponse struct {
	IngestSeq uint64                `json:"ingest_seq"`
	Duplicate bool                  `json:"duplicate,omitempty"`
	Events    []opsapi.ExplainEvent `json:"events"`
}

// reconcileHandler serves POST /v1/reconcile: operators only (a token
// with the operator role, not restricted to patients). The correction is
// checked against the mapper's state, recorded in the ingest log with the
// token's subject, and the answer waits (bounded) for its events.
func (s *Server) reconcileHandler() http.Handler {
	return mapperEndpoint(s.cfg.Auth, s.cfg.Mapper, checkReconcile,
		func(ctx context.Context, w http.ResponseWriter, r *http.Request, pr *auth.Principal, m *mapper.Mapper, req ReconcileRequest) error {
			var o ingest.Observation
			var err error
			client := api.ClientAddr(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), s.cfg.TrustedProxies)
			if req.Action == "retry" {
				if _, err := s.deadLetter(r.Context(), req.Seq); err != nil {
					jsonError(w, http.StatusNotFound, err.Error())
					return nil
				}
				o, err = ingest.NewRetryBy(req.Seq, pr.Subject, req.Reason, client, time.Now())
			} else {
				rc := ingest.Reconcile{Action: req.Action, Study: req.Study, Order: req.Order, Patient: req.Patient, Actor: pr.Subject, Reason: req.Reason}
				if err := rc.Validate(); err != nil {
					jsonError(w, http.StatusBadRequest, err.Error())
					return nil
				}
				err = m.CheckReconcile(ctx, rc)
				if errors.Is(err, mapper.ErrBusy) {
					return err
				}
				if err != nil {
					jsonError(w, http.StatusConflict, err.Error())
					return nil
				}
				o, err = ingest.NewReconcile(rc, req.RequestID, client, time.Now())
			}
			if err != nil {
				jsonError(w, http.StatusInternalServerError, err.Error())
				return nil
			}
			seq, dup, err := s.cfg.Corrections.Append(r.Context(), o)
			if err != nil {
				jsonError(w, http.StatusServiceUnavailable, "not recorded: "+err.Error())
				return nil
			}
			// Audit: who did what, never the reason text (it may name a patient).
			s.log.Info("operator correction recorded", "component", "reconcile", "subject", pr.Subject, "action", req.Action, "ingest_seq", seq, "study_uid", req.Study, "duplicate", dup)
			res := ReconcileResponse{IngestSeq: seq, Duplicate: dup, Events: []opsapi.ExplainEvent{}}
			wait, cancel := context.WithTimeout(r.Context(), reconcileWait)
			defer cancel()
			evs, err := m.Await(wait, seq)
			if err != nil && !errors.Is(err, readmodel.ErrForgotten) {
				writeJSON(w, http.StatusAccepted, res) // recorded; the mapper applies it later
				return nil
			}
			for _, ev := range evs {
				if pr.MayRead(ev.PatientId) {
					res.Events = append(res.Events, explainEvent(ev))
				}
			}
			writeJSON(w, http.StatusOK, res)
			return nil
		})
}

// checkReconcile admits operators only and reads the correction.
func checkReconcile(w http.ResponseWriter, r *http.Request, pr *auth.Principal) (ReconcileRequest, bool) {
	if !pr.MayOperate() {
		jsonError(w, http.StatusForbidden, "corrections need a token with the operator role that is not restricted to some patients")
		return ReconcileRequest{}, false
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		jsonError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return ReconcileRequest{}, false
	}
	req, err := decodeReconcile(http.MaxBytesReader(w, r.Body, 16<<10))
	if err != nil {
		jsonError(w, http.StatusBadRequest, err.Error())
		return ReconcileRequest{}, false
	}
	return req, true
}

func decodeReconcile(r io.Reader) (ReconcileRequest, error) {
	var req ReconcileRequest
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("body: %w", err)
	}
	req.Action = strings.TrimSpace(req.Action)
	if req.Action == "retry" {
		if req.Seq == 0 {
			return req, errors.New("retry: seq (the dead letter's ingest sequence) required")
		}
		if strings.TrimSpace(req.Reason) == "" || len(req.Reason) > ingest.MaxReconcileReason {
			return req, errors.New("reason required (at most 1000 bytes)")
		}
	}
	return req, nil
}

// deadLetter returns the dead letter of ingest record seq.
func (s *Server) deadLetter(ctx context.Context, seq uint64) (mapper.DeadLetter, error) {
	dls, err := s.cfg.DeadLetters.DeadLetters(ctx)
	if err != nil {
		return mapper.DeadLetter{}, err
	}
	for _, dl := range dls {
		if dl.Seq == seq {
			return dl, nil
		}
	}
	return mapper.DeadLetter{}, fmt.Errorf("no dead letter for ingest record %d", seq)
}

// exceptionsCollector exports radbridge_exceptions{kind}: the worklist's
// items by kind, computed at each scrape (dead letters included).
type exceptionsCollector struct {
	s    *Server
	desc *prometheus.Desc
	// last are the counts of the last scrape that could read the state:
	// a scrape while the mapper is busy (e.g. retrying while the store
	// refuses writes) reports them instead of hanging.
	mu   sync.Mutex
	last map[string]int
}

func newExceptionsCollector(s *Server) *exceptionsCollector {
	return &exceptionsCollector{s: s, desc: prometheus.NewDesc("radbridge_exceptions", "Items of the exceptions worklist (GET /v1/exceptions) by kind; empty on a cluster follower.", []string{"kind"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *exceptionsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *exceptionsCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.cfg.Mapper.Current()
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := c.s.exceptions(ctx, m, &auth.Principal{Subject: "metrics"})
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.last = res.Counts
	}
	for _, k := range rules.ExceptionKinds {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(c.last[k]), k)
	}
}
