package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"

	"radbridge/auth"
	"radbridge/ingest"
	"radbridge/internal/httpjson"
)

// Path is where the handler is mounted.
const Path = "/v1/dicom/notifications"

// CallingAE is the Peer.CallingAE of what a notification records.
const CallingAE = "JSON-NOTIFY"

// Recorder durably records observations, like scp.Handler.
type Recorder interface {
	StoreInstance(ctx context.Context, inst *ingest.Instance) error
	InstanceAvailability(ctx context.Context, ian *ingest.IAN) error
}

// Handler serves POST Path.
type Handler struct {
	rec    Recorder
	authn  auth.Authenticator
	logger *slog.Logger
}

// NewHandler returns the notification endpoint. authn checks the
// Authorization header (nil means auth.None); logger may be nil.
func NewHandler(rec Recorder, authn auth.Authenticator, logger *slog.Logger) *Handler {
	if authn == nil {
		authn = auth.None{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{rec: rec, authn: authn, logger: logger}
}

// Response is the answer to a recorded notification.
type Response struct {
	Stored            int      `json:"stored"`
	StudyInstanceUIDs []string `json:"study_instance_uids"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpjson.WriteError(w, http.StatusMethodNotAllowed, codes.Unimplemented, "method "+r.Method+" not allowed: POST a notification")
		return
	}
	if !httpjson.IsJSON(r) {
		// A cross-site form can send no other type without a CORS preflight.
		httpjson.WriteError(w, http.StatusUnsupportedMediaType, codes.InvalidArgument, "Content-Type must be application/json")
		return
	}
	ctx, p, ok := auth.HTTP(w, r, h.authn)
	if !ok {
		return
	}
	if p.Restricted() {
		// A token limited to some patients is a viewer's; ingest needs an
		// unrestricted one.
		httpjson.WriteError(w, http.StatusForbidden, codes.PermissionDenied, "this token is limited to some patients and may not announce instances")
		return
	}
	if r.ContentLength > MaxBody {
		httpjson.WriteError(w, http.StatusBadRequest, codes.InvalidArgument, fmt.Sprintf("%v: body of %d bytes is larger than %d", ErrInvalid, r.ContentLength, MaxBody))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, codes.InvalidArgument, fmt.Sprintf("read body: %v", err))
		return
	}
	n, err := Parse(body)
	if err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, codes.InvalidArgument, err.Error())
		return
	}
	now := time.Now().UTC()
	peer := ingest.Peer{CallingAE: CallingAE, RemoteAddr: r.RemoteAddr}
	for _, inst := range n.Instances {
		inst.Peer, inst.ReceivedAt = peer, now
		if err := h.rec.StoreInstance(ctx, inst); err != nil {
			h.fail(w, "record instance", err)
			return
		}
	}
	if ian := n.IAN(); ian != nil {
		ian.Peer, ian.ReceivedAt = peer, now
		if err := h.rec.InstanceAvailability(ctx, ian); err != nil {
			h.fail(w, "record availability", err)
			return
		}
	}
	uids := n.StudyUIDs()
	h.logger.Info("dicom notification", "component", "notify", "remote", r.RemoteAddr,
		"instances", len(n.Instances), "complete", n.Complete, "study_uid", uids)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Response{Stored: len(n.Instances), StudyInstanceUIDs: uids})
}

// fail answers a recording error: the sender may resend the whole
// notification (recording is idempotent).
func (h *Handler) fail(w http.ResponseWriter, what string, err error) {
	h.logger.Error("dicom notification not recorded", "component", "notify", "err", err)
	httpjson.WriteError(w, http.StatusServiceUnavailable, codes.Unavailable, fmt.Sprintf("%s: %v; resend the notification", what, err))
}
