package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"radbridge/auth"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokens(t *testing.T) {
	file := writeFile(t, "tokens", []byte(`# comment
reader-token-0123456789   reader
	nurse-token-0123456789 nurse patient=P1,P2
anon-token-0123456789
oper-token-0123456789 alice role=operator
`))
	a, err := auth.New(auth.Config{Mode: "tokens", TokensFile: file})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token string
		want  *auth.Principal
		err   error
	}{
		{"reader-token-0123456789", &auth.Principal{Subject: "reader"}, nil},
		{"nurse-token-0123456789", &auth.Principal{Subject: "nurse", Patients: []string{"P1", "P2"}}, nil},
		{"anon-token-0123456789", &auth.Principal{Subject: "token-4"}, nil},
		{"oper-token-0123456789", &auth.Principal{Subject: "alice", Roles: []string{auth.RoleOperator}}, nil},
		{"", nil, auth.ErrUnauthenticated},
		{"reader-token-012345678", nil, auth.ErrUnauthenticated},
		{"reader", nil, auth.ErrUnauthenticated},
	} {
		got, err := a.Authenticate(context.Background(), tc.token)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%q: error %v; want %v", tc.token, err, tc.err)
		}
		if diff := cmp.Diff(got, tc.want); diff != "" {
			t.Errorf("%q: principal (-got +want):\n%s", tc.token, diff)
		}
	}
}

// TestOperatorRole: only an operator not restricted to patients may act;
// --auth none makes everyone one.
func TestOperatorRole(t *testing.T) {
	for _, tc := range []struct {
		p    *auth.Principal
		want bool
	}{
		{&auth.Principal{Subject: "a", Roles: []string{auth.RoleOperator}}, true},
		{&auth.Principal{Subject: "b"}, false},
		{&auth.Principal{Subject: "c", Roles: []string{auth.RoleOperator}, Patients: []string{"P1"}}, false},
		{nil, false},
	} {
		if got := tc.p.MayOperate(); got != tc.want {
			t.Errorf("%+v: MayOperate %v, want %v", tc.p, got, tc.want)
		}
	}
	p, _ := auth.None{}.Authenticate(context.Background(), "")
	if !p.MayOperate() {
		t.Error("--auth none: not an operator")
	}
}

func TestTokensFileErrors(t *testing.T) {
	for name, body := range map[string]string{
		"short":        "short-token\n",
		"duplicate":    "reader-token-0123456789 a\nreader-token-0123456789 b\n",
		"empty":        "# nothing\n\n",
		"bad field":    "reader-token-0123456789 a b\n",
		"empty id":     "reader-token-0123456789 patient=P1,,P2\n",
		"two patient":  "reader-token-0123456789 patient=P1 patient=P2\n",
		"unknown role": "reader-token-0123456789 role=admin\n",
		"two roles":    "reader-token-0123456789 role=operator role=operator\n",
	} {
		if _, err := auth.ReadTokens(strings.NewReader(body)); err == nil {
			t.Errorf("%s: accepted %q", name, body)
		}
	}
	if _, err := auth.New(auth.Config{Mode: "tokens", TokensFile: "/nonexistent"}); err == nil {
		t.Error("a missing tokens file was accepted")
	}
	if _, err := auth.New(auth.Config{Mode: "ldap"}); err == nil {
		t.Error("an unknown mode was accepted")
	}
}

// keys made in the test.
type keys struct {
	secret []byte
	rsa    *rsa.PrivateKey
	ec     *ecdsa.PrivateKey
	rsa2   *rsa.PrivateKey
}

func newKeys(t *testing.T) keys {
	t.Helper()
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keys{secret: []byte("0123456789abcdef0123456789abcdef!"), rsa: r, ec: e, rsa2: r2}
}

func pemPublic(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "dr-who", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// signRaw signs header and payload, JSON written by hand (duplicate names,
// odd case), with HS256.
func signRaw(t *testing.T, secret []byte, header, payload string) string {
	t.Helper()
	in := b64([]byte(header)) + "." + b64([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(in, secret)
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + b64(sig)
}

// claimsJSON is a claims set with exp and iat, and more members.
func claimsJSON(more string) string {
	return fmt.Sprintf(`{"exp":%d,"iat":%d,%s}`, now.Add(time.Hour).Unix(), now.Unix(), more)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jwks(t *testing.T, k keys) []byte {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64(k.rsa.N.Bytes()), "e": b64(big.NewInt(int64(k.rsa.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(k.ec.X.FillBytes(make([]byte, 32))), "y": b64(k.ec.Y.FillBytes(make([]byte, 32)))},
		{"kty": "oct", "kid": "ignored", "k": "c2VjcmV0"},
	}})
	return b
}

func TestJWT(t *testing.T) {
	k := newKeys(t)
	hsFile := writeFile(t, "hs.key", append(append([]byte{}, k.secret...), '\n'))
	rsFile := writeFile(t, "rs.pem", pemPublic(t, &k.rsa.PublicKey))
	esFile := writeFile(t, "es.pem", pemPublic(t, &k.ec.PublicKey))
	jwksFile := writeFile(t, "jwks.json", jwks(t, k))
	rsPEM := pemPublic(t, &k.rsa.PublicKey)
	exp := time.Unix(now.Add(time.Hour).Unix(), 0)

	for _, tc := range []struct {
		name  string
		cfg   auth.Config
		token string
		want  *auth.Principal
		err   error
	}{
		{"HS256", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(nil)),
			&auth.Principal{Subject: "dr-who", Expires: exp}, nil},
		{"RS256", auth.Config{JWTKeyFile: rsFile}, sign(t, jwt.SigningMethodRS256, k.rsa, "", claims(nil)),
			&auth.Principal{Subject: "dr-who", Expires: exp}, nil},
		{"ES256", auth.Config{JWTKeyFile: esFile}, sign(t, jwt.SigningMethodES256, k.ec, "", claims(nil)),
			&auth.Principal{Subject: "dr-who", Expires: exp}, nil},
		{"JWKS RSA", auth.Config{JWKSFile: jwksFile}, sign(t, jwt.SigningMethodRS256, k.rsa, "r1", claims(nil)),
			&auth.Principal{Subject: "dr-who", Expires: exp}, nil},
		{"JWKS EC", auth.Config{JWKSFile: jwksFile}, sign(t, jwt.SigningMethodES256, k.ec, "e1", claims(nil)),
			&auth.Principal{Subject: "dr-who", Expires: exp}, nil},
		{"patient claim", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"patient": "P1"})),
			&auth.Principal{Subject: "dr-who", Patients: []string{"P1"}, Expires: exp}, nil},
		{"patients claim", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"patients": []string{"P1", "P2"}})),
			&auth.Principal{Subject: "dr-who", Patients: []string{"P1", "P2"}, Expires: exp}, nil},
		{"roles claim", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"roles": []string{"viewer", "operator"}})),
			&auth.Principal{Subject: "dr-who", Roles: []string{auth.RoleOperator}, Expires: exp}, nil},
		{"roles claim not an array", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"roles": "operator"})),
			nil, auth.ErrUnauthenticated},
		{"patient_ids claim", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"patient_ids": []string{"P3"}})),
			&auth.Principal{Subject: "dr-who", Patients: []string{"P3"}, Expires: exp}, nil},
		{"empty patients claim sees nobody", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"patients": []string{}})),
			&auth.Principal{Subject: "dr-who", Patients: []string{}, Expires: exp}, nil},
		{"issuer and audience", auth.Config{JWTKeyFile: hsFile, JWTIssuer: "idp", JWTAudience: "radbridge"},
			sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"iss": "idp", "aud": []string{"x", "radbridge"}})),
			&auth.Principal{Subject: "dr-who", Expires: exp}, nil},

		{"expired", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"exp": now.Add(-time.Second).Unix()})), nil, auth.ErrTokenExpired},
		{"missing exp", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"exp": nil})), nil, auth.ErrUnauthenticated},
		{"not yet valid", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"nbf": now.Add(time.Minute).Unix()})), nil, auth.ErrUnauthenticated},
		{"wrong issuer", auth.Config{JWTKeyFile: hsFile, JWTIssuer: "idp"}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"iss": "evil"})), nil, auth.ErrUnauthenticated},
		{"wrong audience", auth.Config{JWTKeyFile: hsFile, JWTAudience: "radbridge"}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"aud": "other"})), nil, auth.ErrUnauthenticated},
		{"wrong key", auth.Config{JWTKeyFile: rsFile}, sign(t, jwt.SigningMethodRS256, k.rsa2, "", claims(nil)), nil, auth.ErrUnauthenticated},
		{"wrong HMAC secret", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), "", claims(nil)), nil, auth.ErrUnauthenticated},
		{"RS256 token, EC key", auth.Config{JWTKeyFile: esFile}, sign(t, jwt.SigningMethodRS256, k.rsa, "", claims(nil)), nil, auth.ErrUnauthenticated},
		// The classic confusion: HS256 signed with the public key's PEM as the secret.
		{"HS256 with the RSA public key", auth.Config{JWTKeyFile: rsFile}, sign(t, jwt.SigningMethodHS256, rsPEM, "", claims(nil)), nil, auth.ErrUnauthenticated},
		{"HS384", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS384, k.secret, "", claims(nil)), nil, auth.ErrUnauthenticated},
		{"alg none", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims(nil)), nil, auth.ErrUnauthenticated},
		{"JWKS unknown kid", auth.Config{JWKSFile: jwksFile}, sign(t, jwt.SigningMethodRS256, k.rsa, "r9", claims(nil)), nil, auth.ErrUnauthenticated},
		{"JWKS kid of another key type", auth.Config{JWKSFile: jwksFile}, sign(t, jwt.SigningMethodRS256, k.rsa, "e1", claims(nil)), nil, auth.ErrUnauthenticated},
		{"empty", auth.Config{JWTKeyFile: hsFile}, "", nil, auth.ErrUnauthenticated},
		{"garbage", auth.Config{JWTKeyFile: hsFile}, "a.b.c", nil, auth.ErrUnauthenticated},
		{"bad patient claim", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"patient": 7})), nil, auth.ErrUnauthenticated},
		{"bad patients claim", auth.Config{JWTKeyFile: hsFile}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"patients": "P1"})), nil, auth.ErrUnauthenticated},

		// aud is required once an audience is configured.
		{"no aud with an audience configured", auth.Config{JWTKeyFile: hsFile, JWTAudience: "radbridge"}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(nil)), nil, auth.ErrUnauthenticated},
		{"empty aud with an audience configured", auth.Config{JWTKeyFile: hsFile, JWTAudience: "radbridge"}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"aud": ""})), nil, auth.ErrUnauthenticated},
		{"aud string", auth.Config{JWTKeyFile: hsFile, JWTAudience: "radbridge"}, sign(t, jwt.SigningMethodHS256, k.secret, "", claims(jwt.MapClaims{"aud": "radbridge"})),
			&auth.Principal{Subject: "dr-who", Expires: exp}, nil},

		// crit names extensions that must be understood: radbridge knows none.
		{"crit unknown extension", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256","typ":"JWT","crit":["x-must-know"],"x-must-know":1}`, claimsJSON(`"sub":"dr-who"`)), nil, auth.ErrUnauthenticated},
		{"crit empty", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256","crit":[]}`, claimsJSON(`"sub":"dr-who"`)), nil, auth.ErrUnauthenticated},
		{"raw token without crit", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256","typ":"JWT"}`, claimsJSON(`"sub":"dr-who","patient":"P1"`)),
			&auth.Principal{Subject: "dr-who", Patients: []string{"P1"}, Expires: exp}, nil},

		// Claim names are exact: no case folding, no duplicates.
		{"odd-case Patient null after patient", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256"}`, claimsJSON(`"sub":"dr-who","patient":"P1","Patient":null`)), nil, auth.ErrUnauthenticated},
		{"odd-case PATIENTS", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256"}`, claimsJSON(`"sub":"dr-who","PATIENTS":["P2"]`)), nil, auth.ErrUnauthenticated},
		{"duplicate patient, later null", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256"}`, claimsJSON(`"sub":"dr-who","patient":"P1","patient":null`)), nil, auth.ErrUnauthenticated},
		{"duplicate sub", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256"}`, claimsJSON(`"sub":"dr-who","sub":"admin"`)), nil, auth.ErrUnauthenticated},
		{"odd-case Sub", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256"}`, claimsJSON(`"Sub":"admin"`)), nil, auth.ErrUnauthenticated},
		{"duplicate alg header", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"none","alg":"HS256"}`, claimsJSON(`"sub":"dr-who"`)), nil, auth.ErrUnauthenticated},
		{"unrelated odd-case claim ignored", auth.Config{JWTKeyFile: hsFile}, signRaw(t, k.secret, `{"alg":"HS256"}`, claimsJSON(`"sub":"dr-who","Name":"x","name":"y"`)),
			&auth.Principal{Subject: "dr-who", Expires: exp}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Mode, tc.cfg.Now = "jwt", clock
			a, err := auth.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Authenticate(context.Background(), tc.token)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Errorf("error %v; want %v", err, tc.err)
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("principal (-got +want):\n%s", diff)
			}
		})
	}
}

func TestJWTTampered(t *testing.T) {
	k := newKeys(t)
	a, err := auth.New(auth.Config{Mode: "jwt", JWTKeyFile: writeFile(t, "rs.pem", pemPublic(t, &k.rsa.PublicKey)), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodRS256, k.rsa, "", claims(jwt.MapClaims{"patient": "P1"}))
	parts := strings.Split(tok, ".")
	body, _ := json.Marshal(claims(jwt.MapClaims{"patient": "P2"}))
	forged := parts[0] + "." + b64(body) + "." + parts[2]
	if _, err := a.Authenticate(context.Background(), forged); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("a token with a changed payload: %v; want AUTH_FAILED", err)
	}
}

func TestJWTKeyErrors(t *testing.T) {
	k := newKeys(t)
	priv, _ := x509.MarshalPKCS8PrivateKey(k.rsa)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, cfg := range map[string]auth.Config{
		"no key":         {},
		"both":           {JWTKeyFile: writeFile(t, "a", k.secret), JWKSFile: writeFile(t, "b", jwks(t, k))},
		"short secret":   {JWTKeyFile: writeFile(t, "s", []byte("short\n"))},
		"private key":    {JWTKeyFile: writeFile(t, "p", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}))},
		"small RSA key":  {JWTKeyFile: writeFile(t, "r", pemPublic(t, &small.PublicKey))},
		"P-384 key":      {JWTKeyFile: writeFile(t, "e", pemPublic(t, &p384.PublicKey))},
		"broken PEM":     {JWTKeyFile: writeFile(t, "x", []byte("-----BEGIN PUBLIC KEY-----\nnope\n"))},
		"JWKS not JSON":  {JWKSFile: writeFile(t, "j", []byte("{"))},
		"JWKS no keys":   {JWKSFile: writeFile(t, "j", []byte(`{"keys":[]}`))},
		"JWKS private":   {JWKSFile: writeFile(t, "j", []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}]}`))},
		"JWKS off curve": {JWKSFile: writeFile(t, "j", []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"`+b64(make([]byte, 32))+`","y":"`+b64(make([]byte, 32))+`"}]}`))},
		"JWKS alg":       {JWKSFile: writeFile(t, "j", []byte(`{"keys":[{"kty":"RSA","alg":"HS256","n":"`+b64(k.rsa.N.Bytes())+`","e":"AQAB"}]}`))},
	} {
		cfg.Mode = "jwt"
		if _, err := auth.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
