package auth

import (
	"errors"
	"fmt"
	"time"
)

// Modes of Config.Mode.
const (
	ModeNone   = "none"
	ModeTokens = "tokens"
	ModeJWT    = "jwt"
)

// Config selects and configures an Authenticator.
type Config struct {
	// Mode is "none" (the default when empty), "tokens" or "jwt".
	Mode string
	// TokensFile holds the static tokens (mode tokens; format in ReadTokens).
	TokensFile string
	// JWTKeyFile is an HS256 secret (the file's bytes, trailing newline
	// removed, at least 32 bytes) or a PEM public key or certificate (RSA
	// for RS256, EC P-256 for ES256). Mode jwt needs it or JWKSFile.
	JWTKeyFile string
	// JWKSFile is a JSON Web Key Set (RFC 7517) of RSA and EC P-256 public
	// keys, chosen by the token's kid.
	JWKSFile string
	// JWKSURL is an https URL of a JSON Web Key Set (an identity
	// provider's jwks_uri), fetched at start, cached for JWKSRefresh (10m
	// when 0) and refetched at once for a kid it lacks, at most once per
	// JWKSMinRefetch (30s when 0). JWKSCAFile, when set, holds the PEM CA
	// certificates its server's certificate is checked against (else the
	// system's).
	JWKSURL        string
	JWKSCAFile     string
	JWKSRefresh    time.Duration
	JWKSMinRefetch time.Duration
	// JWTIssuer and JWTAudience, when set, must match iss and aud.
	JWTIssuer   string
	JWTAudience string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// New returns the Authenticator cfg describes.
func New(cfg Config) (Authenticator, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch cfg.Mode {
	case "", ModeNone:
		return None{}, nil
	case ModeTokens:
		if cfg.TokensFile == "" {
			return nil, errors.New("auth tokens: no tokens file")
		}
		return LoadTokens(cfg.TokensFile)
	case ModeJWT:
		return newJWT(cfg)
	}
	return nil, fmt.Errorf("auth mode %q: want none, tokens or jwt", cfg.Mode)
}
