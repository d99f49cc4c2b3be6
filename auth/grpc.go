package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// openMethods need no token: health checks and reflection.
var openMethods = []string{"/grpc.health.v1.", "/grpc.reflection."}

func open(method string) bool {
	for _, p := range openMethods {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

// Status converts an Authenticate error to a gRPC status: Unauthenticated
// with a message starting AUTH_FAILED or TOKEN_EXPIRED.
func Status(err error) error {
	if errors.Is(err, ErrTokenExpired) || errors.Is(err, ErrUnauthenticated) {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return status.Error(codes.Unauthenticated, fmt.Sprintf("%v: %v", ErrUnauthenticated, err))
}

// bearer returns the token of an "authorization: Bearer <t>" value.
func bearer(v string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// TokenFromMetadata returns the bearer token of incoming gRPC metadata
// ("" when there is none).
func TokenFromMetadata(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vs := md.Get("authorization")
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs) > 1 {
		return "", fmt.Errorf("%w: more than one authorization value", ErrUnauthenticated)
	}
	t, ok := bearer(vs[0])
	if !ok {
		return "", fmt.Errorf("%w: authorization is not \"Bearer <token>\"", ErrUnauthenticated)
	}
	return t, nil
}

func authenticate(ctx context.Context, a Authenticator) (*Principal, error) {
	tok, err := TokenFromMetadata(ctx)
	if err != nil {
		return nil, Status(err)
	}
	p, err := a.Authenticate(ctx, tok)
	if err != nil {
		return nil, Status(err)
	}
	return p, nil
}

// UnaryServerInterceptor authenticates each call by its
// "authorization: Bearer <token>" metadata (the REST gateway forwards the
// Authorization header there) and puts the Principal in its context.
// Health and reflection stay open.
func UnaryServerInterceptor(a Authenticator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if open(info.FullMethod) {
			return handler(ctx, req)
		}
		p, err := authenticate(ctx, a)
		if err != nil {
			return nil, err
		}
		return handler(WithPrincipal(ctx, p), req)
	}
}

// StreamServerInterceptor authenticates a stream like
// UnaryServerInterceptor and ends it with Unauthenticated "TOKEN_EXPIRED"
// when the Principal's credential expires.
func StreamServerInterceptor(a Authenticator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if open(info.FullMethod) {
			return handler(srv, ss)
		}
		p, err := authenticate(ss.Context(), a)
		if err != nil {
			return err
		}
		ctx, cancel := WithExpiry(WithPrincipal(ss.Context(), p), p)
		defer cancel()
		err = handler(srv, &stream{ServerStream: ss, ctx: ctx})
		if err != nil && Expired(ctx) {
			return status.Error(codes.Unauthenticated, fmt.Sprintf("%v: the token expired at %s", ErrTokenExpired, p.Expires.UTC().Format("2006-01-02T15:04:05Z")))
		}
		return err
	}
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

// WithExpiry returns ctx cancelled, with cause ErrTokenExpired, when p's
// credential expires (never when p.Expires is zero).
func WithExpiry(ctx context.Context, p *Principal) (context.Context, context.CancelFunc) {
	if p == nil || p.Expires.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadlineCause(ctx, p.Expires, ErrTokenExpired)
}

// Expired reports whether ctx (from WithExpiry) ended because the token
// expired.
func Expired(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), ErrTokenExpired)
}

// CookieName is the cookie a browser may carry its token in. It is read on
// the WebSocket endpoints only, whose handshake checks the Origin: a cookie
// is sent with cross-site requests, so an endpoint that honoured it without
// an Origin check could be driven by any page the user opens.
const CookieName = "radbridge_token"

// TokenFromRequest returns the token of an HTTP request's
// "Authorization: Bearer" header ("" when there is none). Never a cookie
// (see TokenFromHandshake) nor the URL (it ends up in logs and browser
// history).
func TokenFromRequest(r *http.Request) (string, error) {
	if h := r.Header.Values("Authorization"); len(h) > 0 {
		if len(h) > 1 {
			return "", fmt.Errorf("%w: more than one Authorization header", ErrUnauthenticated)
		}
		t, ok := bearer(h[0])
		if !ok {
			return "", fmt.Errorf("%w: Authorization is not \"Bearer <token>\"", ErrUnauthenticated)
		}
		return t, nil
	}
	return "", nil
}

// TokenFromHandshake returns the token of a WebSocket handshake: its
// Authorization header, else the radbridge_token cookie. Only for handlers
// that refuse a foreign Origin before they act.
func TokenFromHandshake(r *http.Request) (string, error) {
	if len(r.Header.Values("Authorization")) > 0 {
		return TokenFromRequest(r)
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value, nil
	}
	return "", nil
}
