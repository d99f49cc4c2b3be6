package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// KindReconcile is an operator's correction recorded through the API
// (POST /v1/reconcile); the body is a Reconcile. Recorded in the ingest log
// like any observation, so a replay and every cluster member apply it at
// the same point.
const KindReconcile = "api.reconcile"

// Reconcile actions.
const (
	// ReconcileLink joins Study to the order Order (ServiceRequest id or
	// accession number) of the study's patient: the study takes the
	// order's accession number.
	ReconcileLink = "link"
	// ReconcileUnlink detaches Study from every order.
	ReconcileUnlink = "unlink"
	// ReconcileMove moves Study to patient Patient (its images carried
	// the wrong Patient ID).
	ReconcileMove = "move"
	// ReconcileEnteredInError marks Study entered in error.
	ReconcileEnteredInError = "entered-in-error"
)

// Reconcile is the body of a KindReconcile observation.
type Reconcile struct {
	Action  string `json:"action"`
	Study   string `json:"study"`
	Order   string `json:"order,omitempty"`
	Patient string `json:"patient,omitempty"`
	// Actor is the authenticated subject of the token that asked, Reason
	// what the operator gave.
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
}

// reconcilePrefix is the key prefix of KindReconcile observations.
const reconcilePrefix = "reconcile:"

// Reconcile limits: what a request may carry.
const (
	MaxReconcileReason = 1000
	maxReconcileField  = 256
)

// Validate checks a correction's fields (not whether its study exists).
func (r Reconcile) Validate() error {
	switch r.Action {
	case ReconcileLink:
		if r.Order == "" {
			return errors.New("link: order required")
		}
	case ReconcileMove:
		if r.Patient == "" {
			return errors.New("move: patient required")
		}
	case ReconcileUnlink, ReconcileEnteredInError:
	default:
		return fmt.Errorf("unknown action %q (want %s, %s, %s or %s)", r.Action, ReconcileLink, ReconcileUnlink, ReconcileMove, ReconcileEnteredInError)
	}
	if r.Study == "" {
		return errors.New("study required")
	}
	if strings.TrimSpace(r.Reason) == "" {
		return errors.New("reason required")
	}
	if len(r.Reason) > MaxReconcileReason {
		return fmt.Errorf("reason longer than %d bytes", MaxReconcileReason)
	}
	for _, f := range []string{r.Study, r.Order, r.Patient, r.Actor} {
		if len(f) > maxReconcileField {
			return fmt.Errorf("a field is longer than %d bytes", maxReconcileField)
		}
	}
	return nil
}

// NewReconcile builds the observation of an operator's correction.
// requestID is the client's idempotency key (a retried request with the
// same id and content is one record); empty, each request is a record of
// its own.
func NewReconcile(r Reconcile, requestID, client string, at time.Time) (Observation, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return Observation{}, fmt.Errorf("encode reconcile: %w", err)
	}
	if requestID == "" {
		requestID = "@" + at.UTC().Format(time.RFC3339Nano)
	}
	return Observation{
		Kind: KindReconcile, Key: reconcilePrefix + url.PathEscape(r.Actor) + "/" + url.PathEscape(requestID) + contentSep + digestBytes(b, 8),
		Time: at.UTC(), Source: Source{Protocol: "api", Client: client}, Body: b,
	}, nil
}

// DecodeReconcile returns the body of a KindReconcile observation.
func DecodeReconcile(o Observation) (*Reconcile, error) {
	var v Reconcile
	return &v, decode(o, KindReconcile, &v)
}
