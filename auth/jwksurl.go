package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

// maxJWKSBytes bounds a fetched key set.
const maxJWKSBytes = 1 << 20

// remoteJWKS is a JSON Web Key Set fetched from an HTTPS URL (an identity
// provider's jwks_uri) and cached: refetched when older than refresh, and
// at once when a token names a kid the set lacks (key rotation), at most
// once per minRefetch. A failed fetch keeps the keys it had.
type remoteJWKS struct {
	url        string
	client     *http.Client
	refresh    time.Duration
	minRefetch time.Duration
	now        func() time.Time

	fetchMu sync.Mutex // one fetch at a time
	mu      sync.Mutex
	keys    map[string]*jwtKey
	fetched time.Time // of the keys
	tried   time.Time // the last fetch attempt
}

func newRemoteJWKS(cfg Config) (*remoteJWKS, error) {
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("JWKS URL %q: want an https URL", cfg.JWKSURL)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.JWKSCAFile != "" {
		b, err := os.ReadFile(cfg.JWKSCAFile)
		if err != nil {
			return nil, fmt.Errorf("JWKS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("JWKS CA file %s: no PEM certificate", cfg.JWKSCAFile)
		}
		tc.RootCAs = pool
	}
	r := &remoteJWKS{
		url:        cfg.JWKSURL,
		client:     &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}},
		refresh:    cfg.JWKSRefresh,
		minRefetch: cfg.JWKSMinRefetch,
		now:        cfg.Now,
	}
	if r.refresh <= 0 {
		r.refresh = 10 * time.Minute
	}
	if r.minRefetch <= 0 {
		r.minRefetch = 30 * time.Second
	}
	if err := r.fetch(context.Background()); err != nil {
		return nil, err
	}
	return r, nil
}

// fetch reads the key set and replaces the cached one.
func (r *remoteJWKS) fetch(ctx context.Context) error {
	r.mu.Lock()
	r.tried = r.now()
	r.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch JWKS %s: %s", r.url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	if len(b) > maxJWKSBytes {
		return fmt.Errorf("JWKS %s: larger than %d bytes", r.url, maxJWKSBytes)
	}
	keys, err := ParseJWKS(b)
	if err != nil {
		return fmt.Errorf("JWKS %s: %w", r.url, err)
	}
	r.mu.Lock()
	r.keys, r.fetched = keys, r.now()
	r.mu.Unlock()
	return nil
}

// errNoKey: the key set has no key for the token's kid.
var errNoKey = errors.New("no key with that kid")

// key returns the key of kid ("" with a one-key set), refetching the set
// when it is stale or lacks kid and the last attempt is at least
// minRefetch old.
func (r *remoteJWKS) key(kid string) (*jwtKey, error) {
	k, stale, mayFetch := r.lookup(kid)
	if k != nil && !stale {
		return k, nil
	}
	if mayFetch {
		r.fetchMu.Lock()
		// Another caller may have fetched meanwhile.
		if k2, stale2, may2 := r.lookup(kid); may2 && (k2 == nil || stale2) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = r.fetch(ctx) // a failure keeps the old keys
			cancel()
		}
		r.fetchMu.Unlock()
		k, _, _ = r.lookup(kid)
	}
	if k == nil {
		return nil, fmt.Errorf("%w %q (JWKS %s)", errNoKey, kid, r.url)
	}
	return k, nil
}

func (r *remoteJWKS) lookup(kid string) (k *jwtKey, stale, mayFetch bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k = r.keys[kid]
	if k == nil && kid == "" && len(r.keys) == 1 {
		for _, only := range r.keys {
			k = only
		}
	}
	now := r.now()
	return k, now.Sub(r.fetched) >= r.refresh, now.Sub(r.tried) >= r.minRefetch
}
