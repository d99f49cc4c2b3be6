package app_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"radbridge/internal/testkit"
)

// TestJWKSURLThroughDaemon: the daemon reads its JWT keys from an
// identity provider's HTTPS JWKS URL; when the provider rotates to a new
// key, a token signed with it is accepted (the daemon refetches the set
// for the unknown kid) and one signed with the dropped key is refused.
func TestJWKSURLThroughDaemon(t *testing.T) {
	newKey := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	old, next := newKey(), newKey()
	set := func(kid string, k *rsa.PrivateKey) []byte {
		b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
			"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()), "e": "AQAB"}}})
		return b
	}
	var mu sync.Mutex
	body, fetches := set("k1", old), 0
	idp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(body)
	}))
	defer idp.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "idp-ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: idp.Certificate().Raw}), 0o644)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "jwt", "--auth-jwks-url", idp.URL+"/.well-known/jwks.json",
		"--auth-jwks-ca-file", ca, "--auth-jwks-min-refetch", "200ms")
	base := "http://" + d.HTTPAddr()
	token := func(kid string, k *rsa.PrivateKey) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "ehr", "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	get := func(tok string) int {
		code, _ := httpDo(t, "GET", base+"/v1/events?page_size=1", tok, "")
		return code
	}
	if code := get(token("k1", old)); code != 200 {
		t.Fatalf("token of the provider's key: %d", code)
	}
	if code := get(""); code != 401 {
		t.Errorf("no token: %d, want 401", code)
	}
	mu.Lock()
	body = set("k2", next)
	mu.Unlock()
	// Refused while the last fetch is under --auth-jwks-min-refetch old,
	// then the daemon fetches the new set.
	if !testkit.Poll(10*time.Second, func() bool { return get(token("k2", next)) == 200 }) {
		t.Fatal("token of the rotated key still refused after 10s")
	}
	if code := get(token("k1", old)); code != 401 {
		t.Errorf("token of the dropped key: %d, want 401", code)
	}
	if code := get(token("k2", old)); code != 401 {
		t.Errorf("the old key under the new kid: %d, want 401", code)
	}
	mu.Lock()
	n := fetches
	mu.Unlock()
	if n < 2 || n > 3 {
		t.Errorf("%d fetches of the JWKS, want 2 (start, rotation) or 3", n)
	}
}
