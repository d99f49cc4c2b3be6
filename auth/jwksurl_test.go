package auth_test

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"radbridge/auth"
)

// jwksServer serves a key set that the test replaces, over HTTPS, and
// counts the fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	status  int
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{status: 200}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		w.WriteHeader(s.status)
		w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(status int, body []byte) {
	s.mu.Lock()
	s.body, s.status = body, status
	s.mu.Unlock()
}

// caFile writes the server's certificate as a PEM CA file.
func (s *jwksServer) caFile(t *testing.T) string {
	return writeFile(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
}

func rsaJWKS(kids map[string]*big.Int) []byte {
	var keys []map[string]string
	for kid, n := range kids {
		keys = append(keys, map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(n.Bytes()), "e": "AQAB"})
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// TestJWKSURLRotation: keys come from an HTTPS JWKS URL, are cached, and a
// token signed with a new key (rotation) makes radbridge refetch the set,
// at most once per min-refetch interval; a failed refetch keeps the keys.
func TestJWKSURLRotation(t *testing.T) {
	k := newKeys(t)
	srv := newJWKSServer(t)
	srv.serve(200, rsaJWKS(map[string]*big.Int{"r1": k.rsa.N}))
	var mu sync.Mutex
	cur := now
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return cur }
	advance := func(d time.Duration) { mu.Lock(); cur = cur.Add(d); mu.Unlock() }
	// Tokens expire an hour after now; advance at most that.
	tok := func(key any, kid string) string {
		return sign(t, jwt.SigningMethodRS256, key, kid, claims(jwt.MapClaims{"exp": now.Add(10 * time.Hour).Unix()}))
	}
	a, err := auth.New(auth.Config{Mode: auth.ModeJWT, JWKSURL: srv.URL + "/jwks.json", JWKSCAFile: srv.caFile(t),
		JWKSRefresh: time.Hour, JWKSMinRefetch: 10 * time.Second, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	fetches := func(want int32, when string) {
		t.Helper()
		if got := srv.fetches.Load(); got != want {
			t.Errorf("%s: %d fetches, want %d", when, got, want)
		}
	}
	authOK := func(token, when string) {
		t.Helper()
		if p, err := a.Authenticate(t.Context(), token); err != nil || p.Subject != "dr-who" {
			t.Errorf("%s: %v %v", when, p, err)
		}
	}
	authFails := func(token, when string) {
		t.Helper()
		if _, err := a.Authenticate(t.Context(), token); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s: %v, want AUTH_FAILED", when, err)
		}
	}
	fetches(1, "at start")
	authOK(tok(k.rsa, "r1"), "r1")
	authOK(tok(k.rsa, "r1"), "r1 again")
	fetches(1, "a cached key")

	// Rotation: the provider now signs with r2 and has dropped r1.
	srv.serve(200, rsaJWKS(map[string]*big.Int{"r2": k.rsa2.N}))
	authFails(tok(k.rsa2, "r2"), "r2 within min-refetch of the start fetch")
	fetches(1, "unknown kid within min-refetch")
	advance(11 * time.Second)
	authOK(tok(k.rsa2, "r2"), "r2 after rotation")
	fetches(2, "unknown kid after min-refetch")
	authFails(tok(k.rsa, "r1"), "r1 after it left the set")
	// A flood of made-up kids fetches nothing more.
	for i := range 50 {
		authFails(tok(k.rsa, fmt.Sprintf("x%d", i)), "made-up kid")
	}
	fetches(2, "made-up kids within min-refetch")

	// The cache's age: refetched when older than refresh.
	advance(time.Hour)
	authOK(tok(k.rsa2, "r2"), "r2 after refresh")
	fetches(3, "after refresh")

	// The provider fails: the cached keys keep working.
	srv.serve(500, []byte("down"))
	advance(time.Hour)
	authOK(tok(k.rsa2, "r2"), "r2 with the provider down")
	fetches(4, "the failed refresh")
	// A forged key under a known kid never passes.
	authFails(tok(k.rsa, "r2"), "r1's key under kid r2")
}

func TestJWKSURLErrors(t *testing.T) {
	k := newKeys(t)
	srv := newJWKSServer(t)
	srv.serve(200, rsaJWKS(map[string]*big.Int{"r1": k.rsa.N}))
	for name, tc := range map[string]struct {
		cfg  auth.Config
		want string
	}{
		"plain http":      {auth.Config{Mode: auth.ModeJWT, JWKSURL: "http://idp.example/jwks"}, "want an https URL"},
		"unknown CA":      {auth.Config{Mode: auth.ModeJWT, JWKSURL: srv.URL}, "certificate"},
		"with a key file": {auth.Config{Mode: auth.ModeJWT, JWKSURL: srv.URL, JWKSFile: "x"}, "one of"},
		"not a key set":   {auth.Config{Mode: auth.ModeJWT, JWKSURL: srv.URL + "/nothing", JWKSCAFile: "/nonexistent"}, "JWKS CA file"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := auth.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want %q", err, tc.want)
			}
		})
	}
	srv.serve(404, nil)
	if _, err := auth.New(auth.Config{Mode: auth.ModeJWT, JWKSURL: srv.URL, JWKSCAFile: srv.caFile(t)}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404 at start: %v", err)
	}
}
