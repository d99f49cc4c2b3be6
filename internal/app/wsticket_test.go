package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"radbridge/internal/testkit"
)

// TestWSURLCredentials: with --ws-tickets a client exchanges its token for
// a ticket (POST /v1/ws-tickets, Authorization header only) and opens /ws
// with ?ticket=, once; with --ws-url-token /ws takes ?token= (WintEHR's
// client). Neither the ticket nor the token appears in the log, even at
// debug level.
func TestWSURLCredentials(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(fullToken+" reader\n"+patientToken+" nurse patient=P1\n"), 0o600)
	var logs testkit.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := startDaemonLog(t, filepath.Join(dir, "data"), log, "--auth", "tokens", "--auth-tokens-file", tokens, "--ws-tickets", "--ws-url-token", "--log-level", "debug")
	base := "http://" + d.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if code, body := httpDo(t, "POST", base+"/v1/ws-tickets", "", ""); code != http.StatusUnauthorized || !strings.Contains(body, "AUTH_FAILED") {
		t.Errorf("ticket without a token: %d %s", code, body)
	}
	if code, _ := httpDo(t, "GET", base+"/v1/ws-tickets", patientToken, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET ticket: %d, want 405", code)
	}
	ticket := func() string {
		t.Helper()
		code, body := httpDo(t, "POST", base+"/v1/ws-tickets", patientToken, "")
		var r struct {
			Ticket    string `json:"ticket"`
			ExpiresIn int    `json:"expires_in"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &r) != nil || len(r.Ticket) < 40 || r.ExpiresIn != 30 {
			t.Fatalf("POST /v1/ws-tickets: %d %s", code, body)
		}
		return r.Ticket
	}
	// welcome dials /ws with query and returns the connection and whether
	// the welcome said authenticated.
	welcome := func(query string) (*websocket.Conn, bool) {
		t.Helper()
		c, _, err := websocket.Dial(ctx, "ws://"+d.HTTPAddr()+"/ws?"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		if json.Unmarshal(b, &m); m.Type != "welcome" {
			t.Fatalf("first message %s", b)
		}
		return c, m.Data["authenticated"] == true
	}
	tk := ticket()
	c, ok := welcome("ticket=" + tk)
	if !ok {
		t.Fatal("/ws?ticket=: not authenticated")
	}
	// The ticket stands for the nurse's token: patient P1 only.
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","data":{"subscription_id":"s1","patient_ids":["P2"]}}`))
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"error"`) {
		t.Errorf("subscribe to another patient with the nurse's ticket: %s %v", b, err)
	}
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","data":{"subscription_id":"s2","patient_ids":["P1"]}}`))
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"subscription"`) {
		t.Fatalf("subscribe to P1: %s %v", b, err)
	}
	publishAs(t, base, fullToken, "P1")
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("no update over the ticket's socket: %v", err)
		}
		if strings.Contains(string(b), `"update"`) {
			break
		}
	}
	if _, ok := welcome("ticket=" + tk); ok {
		t.Error("a spent ticket authenticated again")
	}
	if _, ok := welcome("ticket=made-up"); ok {
		t.Error("a made-up ticket authenticated")
	}
	if _, ok := welcome("token=" + fullToken); !ok {
		t.Error("/ws?token= with --ws-url-token: not authenticated")
	}
	if _, ok := welcome("token=wrong-token-0123456789"); ok {
		t.Error("/ws?token= with a wrong token authenticated")
	}
	for _, secret := range []string{tk, fullToken, patientToken} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds a credential %q:\n%s", secret, logs.String())
		}
	}
}

// TestWSURLCredentialsOff: without the options /ws ignores ?ticket= and
// ?token= and there is no ticket endpoint.
func TestWSURLCredentialsOff(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(fullToken+" reader\n"), 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, _ := httpDo(t, "POST", "http://"+d.HTTPAddr()+"/v1/ws-tickets", fullToken, ""); code == http.StatusOK {
		t.Error("POST /v1/ws-tickets answered 200 without --ws-tickets")
	}
	c, _, err := websocket.Dial(ctx, "ws://"+d.HTTPAddr()+"/ws?token="+fullToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, b, err := c.Read(ctx)
	if err != nil || !strings.Contains(string(b), `"authenticated":false`) {
		t.Errorf("/ws?token= without --ws-url-token: %s %v", b, err)
	}
}
