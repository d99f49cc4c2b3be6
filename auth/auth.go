// Package auth authenticates API clients (gRPC bearer metadata, REST
// Authorization header, WebSocket first message or cookie) and says which
// patients each may see (a SMART-style patient claim).
package auth

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Errors of Authenticate.
var (
	// ErrUnauthenticated: no token, or one that is not valid.
	ErrUnauthenticated = errors.New("AUTH_FAILED")
	// ErrTokenExpired: the token was valid and has expired.
	ErrTokenExpired = errors.New("TOKEN_EXPIRED")
)

// Principal is an authenticated client.
type Principal struct {
	// Subject names the client (token name, JWT sub).
	Subject string
	// Patients the client may see; nil means every patient.
	Patients []string
	// Expires is when the credential stops being valid (zero: never).
	Expires time.Time
	// Roles the client holds (RoleOperator); none by default.
	Roles []string
}

// RoleOperator may correct what radbridge derived (link or
// unlink a study and an order, move a study to another patient, mark it
// entered in error, retry a dead letter). Tokens get it with role=operator
// (tokens file) or a "roles" claim holding "operator" (JWT). A client
// restricted to some patients never acts, whatever its roles.
const RoleOperator = "operator"

// HasRole reports whether p holds role.
func (p *Principal) HasRole(role string) bool {
	return p != nil && slices.Contains(p.Roles, role)
}

// MayOperate reports whether p may correct what radbridge derived: an
// operator not restricted to some patients.
func (p *Principal) MayOperate() bool {
	return p.HasRole(RoleOperator) && !p.Restricted()
}

// MayRead reports whether p may see events of patientID.
func (p *Principal) MayRead(patientID string) bool {
	return p != nil && (p.Patients == nil || slices.Contains(p.Patients, patientID))
}

// Restricted reports whether p is limited to some patients.
func (p *Principal) Restricted() bool { return p != nil && p.Patients != nil }

// Authenticator checks a bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*Principal, error)
}

// None accepts every client, token or not, for every patient (local use),
// as an operator.
type None struct{}

// Authenticate implements Authenticator.
func (None) Authenticate(context.Context, string) (*Principal, error) {
	return &Principal{Subject: "anonymous", Roles: []string{RoleOperator}}, nil
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal in ctx, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}
