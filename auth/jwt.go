package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// minHMACKey is the shortest HS256 secret accepted (RFC 7518 §3.2).
const minHMACKey = 32

// JWT authenticates JSON Web Tokens signed with HS256, RS256 or ES256.
// exp is required; the algorithm must be the one of the key (never "none",
// never HS256 with a public key).
type JWT struct {
	single *jwtKey            // JWTKeyFile
	byKID  map[string]*jwtKey // JWKSFile
	remote *remoteJWKS        // JWKSURL
	parser *jwt.Parser
}

type jwtKey struct {
	alg string // HS256, RS256 or ES256
	key any    // []byte, *rsa.PublicKey, *ecdsa.PublicKey
}

func newJWT(cfg Config) (*JWT, error) {
	j := &JWT{}
	algs := map[string]bool{}
	n := 0
	for _, f := range []string{cfg.JWTKeyFile, cfg.JWKSFile, cfg.JWKSURL} {
		if f != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, errors.New("auth jwt: give one of a key file, a JWKS file and a JWKS URL")
	case cfg.JWKSURL != "":
		r, err := newRemoteJWKS(cfg)
		if err != nil {
			return nil, fmt.Errorf("auth JWKS URL: %w", err)
		}
		j.remote = r
		// The keys may rotate from one type to the other.
		algs["RS256"], algs["ES256"] = true, true
	case cfg.JWTKeyFile != "":
		b, err := os.ReadFile(cfg.JWTKeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth jwt key file: %w", err)
		}
		k, err := parseKeyFile(b)
		if err != nil {
			return nil, fmt.Errorf("auth jwt key file %s: %w", cfg.JWTKeyFile, err)
		}
		j.single = k
		algs[k.alg] = true
	case cfg.JWKSFile != "":
		b, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth JWKS file: %w", err)
		}
		keys, err := ParseJWKS(b)
		if err != nil {
			return nil, fmt.Errorf("auth JWKS file %s: %w", cfg.JWKSFile, err)
		}
		j.byKID = keys
		for _, k := range keys {
			algs[k.alg] = true
		}
	default:
		return nil, errors.New("auth jwt: needs a key file, a JWKS file or a JWKS URL")
	}
	var methods []string
	for a := range algs {
		methods = append(methods, a)
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithExpirationRequired(), jwt.WithTimeFunc(cfg.Now)}
	if cfg.JWTIssuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.JWTIssuer))
	}
	if cfg.JWTAudience != "" {
		opts = append(opts, jwt.WithAudience(cfg.JWTAudience))
	}
	j.parser = jwt.NewParser(opts...)
	return j, nil
}

// parseKeyFile reads a PEM public key or certificate, else an HMAC secret.
func parseKeyFile(b []byte) (*jwtKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		if bytes.Contains(b, []byte("-----BEGIN")) {
			return nil, errors.New("malformed PEM")
		}
		secret := bytes.TrimRight(b, "\r\n")
		if len(secret) < minHMACKey {
			return nil, fmt.Errorf("HS256 secret of %d bytes: want at least %d", len(secret), minHMACKey)
		}
		return &jwtKey{alg: "HS256", key: secret}, nil
	}
	var pub any
	var err error
	switch blk.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
			pub = c.PublicKey
		}
	default:
		return nil, fmt.Errorf("PEM %q: want a PUBLIC KEY or CERTIFICATE (never a private key)", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	return publicKey(pub)
}

func publicKey(pub any) (*jwtKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits: want at least 2048", k.N.BitLen())
		}
		return &jwtKey{alg: "RS256", key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("EC key on %s: want P-256 (ES256)", k.Curve.Params().Name)
		}
		return &jwtKey{alg: "ES256", key: k}, nil
	}
	return nil, fmt.Errorf("%T keys are not supported (want RSA or EC P-256)", pub)
}

// jwk is one key of a JWKS (RFC 7517, 7518 §6).
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d"`
}

// ParseJWKS reads a JSON Web Key Set of RSA (RS256) and EC P-256 (ES256)
// public keys by kid. Keys of other types or uses are skipped; a key with
// private parts is refused.
func ParseJWKS(b []byte) (map[string]*jwtKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	keys := map[string]*jwtKey{}
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.D != "" {
			return nil, fmt.Errorf("key %d (kid %q) has private parts: publish public keys only", i, k.Kid)
		}
		var pub crypto.PublicKey
		switch k.Kty {
		case "RSA":
			n, err1 := b64int(k.N)
			e, err2 := b64int(k.E)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
			}
			if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
				return nil, fmt.Errorf("key %d (kid %q): bad RSA exponent", i, k.Kid)
			}
			pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case "EC":
			if k.Crv != "P-256" {
				return nil, fmt.Errorf("key %d (kid %q): curve %q: want P-256", i, k.Kid, k.Crv)
			}
			x, err1 := b64fixed(k.X, 32)
			y, err2 := b64fixed(k.Y, 32)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
			}
			// Uncompressed point; ParseUncompressedPublicKey checks it is on the curve.
			ek, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
			if err != nil {
				return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
			}
			pub = ek
		default:
			continue
		}
		key, err := publicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
		}
		if k.Alg != "" && k.Alg != key.alg {
			return nil, fmt.Errorf("key %d (kid %q): alg %q does not fit a %s key (want %s)", i, k.Kid, k.Alg, k.Kty, key.alg)
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, fmt.Errorf("key %d: kid %q given twice", i, k.Kid)
		}
		keys[k.Kid] = key
	}
	if len(keys) == 0 {
		return nil, errors.New("no RSA or EC P-256 signing keys")
	}
	return keys, nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("bad base64url integer")
	}
	return new(big.Int).SetBytes(b), nil
}

func b64fixed(s string, n int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("bad base64url coordinate (want %d bytes)", n)
	}
	return b, nil
}

// readClaims are the claim names radbridge reads, exactly as spelled here
// (RFC 7519 §4: names are case-sensitive).
var readClaims = []string{"sub", "exp", "nbf", "iat", "iss", "aud", "patient", "patients", "patient_ids", "roles"}

// checkNames refuses a JSON object (a JWT header or claims set, base64url)
// that names a member twice (RFC 7519 §4 lets a recipient reject it; Go's
// decoder would keep the last) or spells a name in known with other case
// (Go's decoder would fold it onto the real one).
func checkNames(seg string, known []string) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errors.New("not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := t.(string)
		if seen[name] {
			return fmt.Errorf("%q given twice", name)
		}
		seen[name] = true
		for _, k := range known {
			if name != k && strings.EqualFold(name, k) {
				return fmt.Errorf("%q: names are case-sensitive (radbridge reads %q)", name, k)
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}

func (j *JWT) keyFunc(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 §4.1.11: extensions named in crit must be understood;
		// radbridge understands none.
		return nil, fmt.Errorf("crit header %v names extensions radbridge does not understand", t.Header["crit"])
	}
	k := j.single
	if j.remote != nil {
		kid, _ := t.Header["kid"].(string)
		var err error
		if k, err = j.remote.key(kid); err != nil {
			return nil, err
		}
	} else if k == nil {
		kid, _ := t.Header["kid"].(string)
		k = j.byKID[kid]
		if k == nil && kid == "" && len(j.byKID) == 1 {
			for _, only := range j.byKID {
				k = only
			}
		}
		if k == nil {
			return nil, fmt.Errorf("no key with kid %q", kid)
		}
	}
	if t.Method.Alg() != k.alg {
		return nil, fmt.Errorf("alg %s does not fit the key (%s)", t.Method.Alg(), k.alg)
	}
	return k.key, nil
}

// Authenticate implements Authenticator.
func (j *JWT) Authenticate(_ context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: no token", ErrUnauthenticated)
	}
	c := jwt.MapClaims{}
	if _, err := j.parser.ParseWithClaims(token, c, j.keyFunc); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, fmt.Errorf("%w: %v", ErrTokenExpired, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	// The signature is good: now the names, which the decoder above may
	// have folded or overwritten.
	parts := strings.Split(token, ".")
	if err := checkNames(parts[0], []string{"alg", "kid", "typ", "crit"}); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrUnauthenticated, err)
	}
	if err := checkNames(parts[1], readClaims); err != nil {
		return nil, fmt.Errorf("%w: claim %v", ErrUnauthenticated, err)
	}
	sub, err := c.GetSubject()
	if err != nil {
		return nil, fmt.Errorf("%w: sub: %v", ErrUnauthenticated, err)
	}
	exp, err := c.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, fmt.Errorf("%w: exp: %v", ErrUnauthenticated, err)
	}
	p := &Principal{Subject: sub, Expires: exp.Time}
	if p.Subject == "" {
		p.Subject = "jwt"
	}
	// A SMART launch context patient (a string; an array is accepted too),
	// and patients / patient_ids (arrays).
	for _, name := range []string{"patient", "patients", "patient_ids"} {
		v, ok := c[name]
		if !ok || v == nil {
			continue
		}
		var ids []string
		switch v := v.(type) {
		case string:
			if name != "patient" {
				return nil, fmt.Errorf("%w: %s claim is not an array of strings", ErrUnauthenticated, name)
			}
			if v == "" {
				return nil, fmt.Errorf("%w: empty patient claim", ErrUnauthenticated)
			}
			ids = []string{v}
		case []any:
			ids = []string{}
			for _, e := range v {
				id, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("%w: %s claim is not an array of strings", ErrUnauthenticated, name)
				}
				ids = append(ids, id)
			}
		default:
			if name == "patient" {
				return nil, fmt.Errorf("%w: patient claim is neither a string nor an array of strings", ErrUnauthenticated)
			}
			return nil, fmt.Errorf("%w: %s claim is not an array of strings", ErrUnauthenticated, name)
		}
		p.Patients = append(append([]string{}, p.Patients...), ids...)
	}
	// roles: an array of strings; radbridge knows RoleOperator (others
	// are ignored, for tokens shared with other services).
	if v, ok := c["roles"]; ok && v != nil {
		l, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%w: roles claim is not an array of strings", ErrUnauthenticated)
		}
		for _, e := range l {
			r, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: roles claim is not an array of strings", ErrUnauthenticated)
			}
			if r == RoleOperator {
				p.Roles = []string{RoleOperator}
			}
		}
	}
	return p, nil
}
