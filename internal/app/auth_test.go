package app_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"radbridge/internal/config"
	rbv1 "radbridge/proto/radbridge/v1"
)

// httpDo sends a request with an optional bearer token and returns the
// status and body.
func httpDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func bearerCtx(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func publishAs(t *testing.T, base, token, patient string) {
	t.Helper()
	code, body := httpDo(t, "POST", base+"/v1/events", token,
		`{"type":"IMAGING_STUDY_VIEWED","patient_id":"`+patient+`","study_instance_uid":"1.2.3","viewer_name":"Dr Test"}`)
	if code != 200 {
		t.Fatalf("publish for %s: %d %s", patient, code, body)
	}
}

// wsDial opens /v1/events:stream with the header h and returns the
// handshake's HTTP status.
func wsDial(ctx context.Context, addr, query string, h http.Header) (*websocket.Conn, int, error) {
	c, resp, err := websocket.Dial(ctx, "ws://"+addr+"/v1/events:stream?"+query, &websocket.DialOptions{HTTPHeader: h})
	code := 0
	if resp != nil {
		code = resp.StatusCode
	}
	return c, code, err
}

func bearerHeader(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("%s: %v; want %v with %q", what, err, code, msg)
	}
}

const (
	fullToken    = "reader-token-0123456789"
	patientToken = "nurse-token-P1-0123456789"
)

// TestStaticTokens: with --auth tokens every front wants a token, health
// stays open, a patient-scoped token sees its patient only, and a foreign
// Origin cannot open a WebSocket.
func TestStaticTokens(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("# test tokens\n"+fullToken+" reader\n\n"+patientToken+" nurse patient=P1\n"), 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens, "--allowed-origins", "ehr.example.org")
	base := "http://" + d.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, conn := grpcClient(t, d.GRPCAddr())

	// No token.
	_, err := client.ListEvents(ctx, &rbv1.ListEventsRequest{})
	wantCode(t, "gRPC ListEvents without a token", err, codes.Unauthenticated, "AUTH_FAILED")
	_, err = client.ListEvents(bearerCtx(ctx, "not-a-token-at-all-0000"), &rbv1.ListEventsRequest{})
	wantCode(t, "gRPC ListEvents with an unknown token", err, codes.Unauthenticated, "AUTH_FAILED")
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{})
	if err == nil {
		_, err = sub.Recv()
	}
	wantCode(t, "gRPC Subscribe without a token", err, codes.Unauthenticated, "AUTH_FAILED")
	if hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without a token: %v %v", hc, err)
	}
	if code, body := httpDo(t, "GET", base+"/v1/events", "", ""); code != 401 || !strings.Contains(body, "AUTH_FAILED") {
		t.Errorf("REST without a token: %d %s; want 401 AUTH_FAILED", code, body)
	}
	if code, body := httpDo(t, "GET", base+"/v1/events", "wrong-token-0123456789", ""); code != 401 {
		t.Errorf("REST with a wrong token: %d %s; want 401", code, body)
	}
	if _, code, err := wsDial(ctx, d.HTTPAddr(), "since=0", nil); err == nil || code != 401 {
		t.Errorf("WebSocket without a token: %d %v; want 401", code, err)
	}

	// A full token.
	publishAs(t, base, fullToken, "P1")
	publishAs(t, base, fullToken, "P2")
	if code, body := httpDo(t, "GET", base+"/v1/events", fullToken, ""); code != 200 || strings.Count(body, `"sequence"`) != 2 {
		t.Errorf("REST with a token: %d %s", code, body)
	}
	list, err := client.ListEvents(bearerCtx(ctx, fullToken), &rbv1.ListEventsRequest{})
	if err != nil || len(list.Events) != 2 {
		t.Errorf("gRPC ListEvents with a token: %v %v", list, err)
	}
	ws, _, err := wsDial(ctx, d.HTTPAddr(), "since=0", bearerHeader(fullToken))
	if err != nil {
		t.Fatalf("WebSocket with a bearer header: %v", err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || !strings.Contains(string(msg), `"P1"`) {
		t.Errorf("WebSocket first event: %s %v", msg, err)
	}
	ws.CloseNow()
	ws, _, err = wsDial(ctx, d.HTTPAddr(), "since=0", http.Header{"Cookie": {"radbridge_token=" + fullToken}})
	if err != nil {
		t.Fatalf("WebSocket with the cookie: %v", err)
	}
	ws.CloseNow()

	// Origins: a foreign page is refused, an allowed one is not.
	h := bearerHeader(fullToken)
	h.Set("Origin", "https://evil.example.com")
	if _, code, err := wsDial(ctx, d.HTTPAddr(), "since=0", h); err == nil || code != 403 {
		t.Errorf("WebSocket from a foreign origin: %d %v; want 403", code, err)
	}
	h.Set("Origin", "https://ehr.example.org")
	if ws, code, err := wsDial(ctx, d.HTTPAddr(), "since=0", h); err != nil {
		t.Errorf("WebSocket from an allowed origin: %d %v", code, err)
	} else {
		ws.CloseNow()
	}

	// A token scoped to P1.
	pctx := bearerCtx(ctx, patientToken)
	sub, err = client.Subscribe(pctx, &rbv1.SubscribeRequest{PatientId: []string{"P2"}})
	if err == nil {
		_, err = sub.Recv()
	}
	wantCode(t, "Subscribe to P2 with a P1 token", err, codes.PermissionDenied, "")
	sub, err = client.Subscribe(pctx, &rbv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := sub.Recv(); err != nil || ev.PatientId != "P1" {
		t.Errorf("Subscribe without a filter with a P1 token: first %v %v", ev, err)
	}
	list, err = client.ListEvents(pctx, &rbv1.ListEventsRequest{})
	if err != nil || len(list.Events) != 1 || list.Events[0].PatientId != "P1" {
		t.Errorf("ListEvents with a P1 token: %v %v; want P1's event only", list, err)
	}
	_, err = client.GetPatientImaging(pctx, &rbv1.GetPatientImagingRequest{PatientId: "P2"})
	wantCode(t, "GetPatientImaging of P2 with a P1 token", err, codes.PermissionDenied, "")
	if code, body := httpDo(t, "GET", base+"/v1/patients/P2/imaging", patientToken, ""); code != 403 {
		t.Errorf("REST imaging of P2 with a P1 token: %d %s; want 403", code, body)
	}
	if code, body := httpDo(t, "GET", base+"/v1/patients/P1/imaging", patientToken, ""); code != 200 {
		t.Errorf("REST imaging of P1 with a P1 token: %d %s; want 200", code, body)
	}
	if code, body := httpDo(t, "POST", base+"/v1/events", patientToken, `{"type":"IMAGING_STUDY_VIEWED","patient_id":"P2","study_instance_uid":"1.2.3"}`); code != 403 {
		t.Errorf("publish for P2 with a P1 token: %d %s; want 403", code, body)
	}
	if _, code, err := wsDial(ctx, d.HTTPAddr(), "patient_id=P2", bearerHeader(patientToken)); err == nil || code != 403 {
		t.Errorf("WebSocket for P2 with a P1 token: %d %v; want 403", code, err)
	}
	ws, _, err = wsDial(ctx, d.HTTPAddr(), "since=0", bearerHeader(patientToken))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if _, msg, err := ws.Read(ctx); err != nil || !strings.Contains(string(msg), `"P1"`) {
		t.Errorf("WebSocket with a P1 token: first %s %v", msg, err)
	}
}

// TestJWT: an HS256 token with a SMART patient claim, an expired token,
// and a token that expires during a stream.
func TestJWT(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("0123456789abcdef0123456789abcdef-test-secret")
	keyFile := filepath.Join(dir, "jwt.key")
	os.WriteFile(keyFile, append(secret, '\n'), 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "jwt", "--auth-jwt-key-file", keyFile, "--auth-jwt-issuer", "https://idp.test")
	base := "http://" + d.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, _ := grpcClient(t, d.GRPCAddr())
	sign := func(exp time.Time, extra jwt.MapClaims) string {
		c := jwt.MapClaims{"sub": "dr-who", "iss": "https://idp.test", "exp": exp.Unix()}
		for k, v := range extra {
			c[k] = v
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	full := sign(time.Now().Add(time.Hour), nil)
	p1 := sign(time.Now().Add(time.Hour), jwt.MapClaims{"patient": "P1"})
	expired := sign(time.Now().Add(-time.Minute), nil)

	_, err := client.ListEvents(ctx, &rbv1.ListEventsRequest{})
	wantCode(t, "ListEvents without a token", err, codes.Unauthenticated, "AUTH_FAILED")
	if code, _ := httpDo(t, "GET", base+"/v1/events", "", ""); code != 401 {
		t.Errorf("REST without a token: %d; want 401", code)
	}
	if _, code, err := wsDial(ctx, d.HTTPAddr(), "", nil); err == nil || code != 401 {
		t.Errorf("WebSocket without a token: %d %v; want 401", code, err)
	}
	publishAs(t, base, full, "P1")
	publishAs(t, base, full, "P2")

	_, err = client.ListEvents(bearerCtx(ctx, expired), &rbv1.ListEventsRequest{})
	wantCode(t, "ListEvents with an expired token", err, codes.Unauthenticated, "TOKEN_EXPIRED")
	if code, body := httpDo(t, "GET", base+"/v1/events", expired, ""); code != 401 || !strings.Contains(body, "TOKEN_EXPIRED") {
		t.Errorf("REST with an expired token: %d %s; want 401 TOKEN_EXPIRED", code, body)
	}
	wrongIss, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "other", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
	_, err = client.ListEvents(bearerCtx(ctx, wrongIss), &rbv1.ListEventsRequest{})
	wantCode(t, "ListEvents with a foreign issuer", err, codes.Unauthenticated, "AUTH_FAILED")

	pctx := bearerCtx(ctx, p1)
	sub, err := client.Subscribe(pctx, &rbv1.SubscribeRequest{PatientId: []string{"P2"}})
	if err == nil {
		_, err = sub.Recv()
	}
	wantCode(t, "Subscribe to P2 with a P1 token", err, codes.PermissionDenied, "")
	if code, body := httpDo(t, "GET", base+"/v1/patients/P2/imaging", p1, ""); code != 403 {
		t.Errorf("REST imaging of P2 with a P1 token: %d %s; want 403", code, body)
	}
	list, err := client.ListEvents(pctx, &rbv1.ListEventsRequest{})
	if err != nil || len(list.Events) != 1 || list.Events[0].PatientId != "P1" {
		t.Errorf("ListEvents with a P1 token: %v %v", list, err)
	}

	// A token that expires during the streams.
	short := sign(time.Now().Add(2*time.Second), jwt.MapClaims{"patient": "P1"})
	sub, err = client.Subscribe(bearerCtx(ctx, short), &rbv1.SubscribeRequest{HeartbeatSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := wsDial(ctx, d.HTTPAddr(), "since=0&heartbeat_seconds=1", bearerHeader(short))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	start := time.Now()
	for {
		if _, err = sub.Recv(); err != nil {
			break
		}
	}
	wantCode(t, "Subscribe past the token's exp", err, codes.Unauthenticated, "TOKEN_EXPIRED")
	if time.Since(start) > 10*time.Second {
		t.Errorf("the stream ended %v after it began; want about 2s", time.Since(start))
	}
	for {
		if _, _, err = ws.Read(ctx); err != nil {
			break
		}
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "TOKEN_EXPIRED" {
		t.Errorf("WebSocket past the token's exp: %v; want close 1008 TOKEN_EXPIRED", err)
	}
}

// TestAuthFlagsValidated: a mode without its key material, a missing file
// or a malformed origin pattern stops the daemon at start.
func TestAuthFlagsValidated(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	for _, args := range [][]string{
		{"--auth", "ldap"},
		{"--auth", "tokens"},
		{"--auth", "tokens", "--auth-tokens-file", filepath.Join(dir, "missing")},
		{"--auth", "jwt"},
		{"--auth", "jwt", "--auth-jwt-key-file", key, "--auth-jwks-file", key},
		{"--allowed-origins", "ehr.example.org/path"},
		{"--allowed-origins", "[bad"},
	} {
		if _, err := config.Load("test", append([]string{"--data-dir", dir}, args...), func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	cfg, err := config.Load("test", []string{"--data-dir", dir, "--auth", "jwt", "--auth-jwt-key-file", key, "--allowed-origins", "ehr.example.org, https://*.example.net"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.OriginPatterns(); len(got) != 2 || got[1] != "https://*.example.net" {
		t.Errorf("OriginPatterns() = %q", got)
	}
}
