package subscription

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"
)

// Websocket close codes and reasons after a failed bind.
const (
	// CloseBindFailed (4001): the token is unknown, used, expired, or its
	// subscription gone. The reason says which.
	CloseBindFailed websocket.StatusCode = 4001
	// CloseBadMessage (1008, policy violation): the first message was not
	// a bind.
	CloseBadMessage = websocket.StatusPolicyViolation
)

// bindTimeout is how long a client has to send its bind message.
const bindTimeout = 10 * time.Second

// maxBindMessage bounds the bind message.
const maxBindMessage = 4096

// ErrBadBind: a message that is not a bind-with-token.
var ErrBadBind = errors.New("not a bind-with-token message")

// ParseBind returns the token of a bind message: the text
// "bind-with-token <token>", or the JSON {"type":"bind-with-token",
// "payload":{"token":"…"}} (or with "token" at the top level).
func ParseBind(msg []byte) (string, error) {
	if len(msg) > maxBindMessage {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadBind, maxBindMessage)
	}
	s := strings.TrimSpace(string(msg))
	if strings.HasPrefix(s, "{") {
		var m struct {
			Type    string `json:"type"`
			Token   string `json:"token"`
			Payload struct {
				Token string `json:"token"`
			} `json:"payload"`
		}
		if err := json.Unmarshal([]byte(s), &m); err != nil || m.Type != "bind-with-token" {
			return "", ErrBadBind
		}
		tok := m.Payload.Token
		if tok == "" {
			tok = m.Token
		}
		if !validBindToken(tok) {
			return "", ErrBadBind
		}
		return tok, nil
	}
	cmd, tok, ok := strings.Cut(s, " ")
	tok = strings.TrimSpace(tok)
	if !ok || cmd != "bind-with-token" || !validBindToken(tok) {
		return "", ErrBadBind
	}
	return tok, nil
}

func validBindToken(t string) bool {
	if t == "" || len(t) > 256 {
		return false
	}
	for _, c := range t {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// websocket serves the FHIR websocket channel: the client binds with a
// token from $get-ws-binding-token and receives the handshake, then the
// event notifications as their numbers are assigned, and heartbeats.
func (h *Handler) websocket(w http.ResponseWriter, r *http.Request) {
	// The binding token is the credential, sent in a message: no cookie
	// or header is read, so any page's origin may connect.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(maxBindMessage)
	ctx := r.Context()
	rctx, cancel := context.WithTimeout(ctx, bindTimeout)
	_, msg, err := c.Read(rctx)
	cancel()
	if err != nil {
		c.Close(CloseBadMessage, "no bind-with-token within 10s")
		return
	}
	fail := func(code websocket.StatusCode, reason string) {
		wctx, cancel := context.WithTimeout(ctx, h.cfg.WriteTimeout)
		defer cancel()
		oo, _ := json.Marshal(map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{"severity": "error", "code": "security", "diagnostics": reason}}})
		_ = c.Write(wctx, websocket.MessageText, oo)
		c.Close(code, reason)
	}
	tok, err := ParseBind(msg)
	if err != nil {
		fail(CloseBadMessage, "BAD_MESSAGE: want bind-with-token <token>")
		return
	}
	b, err := h.cfg.Store.RedeemToken(ctx, tok)
	switch {
	case errors.Is(err, ErrTokenExpired):
		fail(CloseBindFailed, "TOKEN_EXPIRED")
		return
	case errors.Is(err, ErrTokenUnknown):
		fail(CloseBindFailed, "TOKEN_INVALID: unknown or already used")
		return
	case err != nil:
		fail(websocket.StatusTryAgainLater, "store unavailable")
		return
	}
	st, _, err := h.cfg.Store.Get(ctx, b.Subscription)
	if err != nil || st.Owner != b.Subject {
		fail(CloseBindFailed, "SUBSCRIPTION_GONE")
		return
	}
	if st.Status == StatusError || st.Status == StatusOff {
		fail(CloseBindFailed, "SUBSCRIPTION_"+strings.ToUpper(st.Status))
		return
	}
	if !b.CredentialExpires.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, b.CredentialExpires)
		defer cancel()
	}
	ctx = c.CloseRead(ctx) // later client messages are not read; a close ends ctx
	h.follow(ctx, c, st, h.base(r))
}

func (h *Handler) follow(ctx context.Context, c *websocket.Conn, st *Stored, base string) {
	write := func(b []byte) error {
		wctx, cancel := context.WithTimeout(ctx, h.cfg.WriteTimeout)
		defer cancel()
		return c.Write(wctx, websocket.MessageText, b)
	}
	watch, err := h.cfg.Store.WatchCursor(ctx, st.ID)
	if err != nil {
		c.Close(websocket.StatusTryAgainLater, "store unavailable")
		return
	}
	defer watch.Stop()
	cur, _, err := h.cfg.Store.Cursor(ctx, st.ID)
	if err != nil {
		c.Close(CloseBindFailed, "SUBSCRIPTION_GONE")
		return
	}
	sent := cur.Number
	if err := write(st.Bundle(base, TypeHandshake, sent, ContentEmpty, nil)); err != nil {
		return
	}
	hb := time.Duration(st.HeartbeatSeconds) * time.Second
	if hb <= 0 {
		hb = 30 * time.Second
	}
	tick := time.NewTicker(hb)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				c.Close(websocket.StatusPolicyViolation, "TOKEN_EXPIRED")
			}
			return
		case <-tick.C:
			if err := write(st.Bundle(base, TypeHeartbeat, sent, ContentEmpty, nil)); err != nil {
				return
			}
		case e, ok := <-watch.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				c.Close(CloseBindFailed, "SUBSCRIPTION_GONE")
				return
			}
			nc := new(Cursor)
			if json.Unmarshal(e.Value(), nc) != nil {
				continue
			}
			for sent < nc.Number {
				to := min(nc.Number, sent+uint64(st.MaxCount))
				evs, err := numbered(ctx, h, nc, sent+1, to)
				if err != nil {
					c.Close(websocket.StatusTryAgainLater, "event log unavailable")
					return
				}
				if err := write(st.Bundle(base, TypeEvent, nc.Number, st.Content, evs)); err != nil {
					return
				}
				sent = to
			}
			tick.Reset(hb)
		}
	}
}
