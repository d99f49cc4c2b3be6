package auth

import (
	"context"
	"net/http"

	"google.golang.org/grpc/status"

	"radbridge/internal/httpjson"
)

// HTTP authenticates an HTTP request by its token (the Authorization:
// Bearer header; never a cookie nor the URL) with a and returns the
// request's context carrying the Principal. On failure it has answered 401
// with WWW-Authenticate: Bearer and {"code":16,"message":"AUTH_FAILED: …"}
// or "TOKEN_EXPIRED: …", and returns false.
func HTTP(w http.ResponseWriter, r *http.Request, a Authenticator) (context.Context, *Principal, bool) {
	tok, err := TokenFromRequest(r)
	return httpAuthenticate(w, r, a, tok, err)
}

// HTTPHandshake is HTTP for a WebSocket handshake, which may carry the
// token in the radbridge_token cookie (TokenFromHandshake): only for
// handlers that refuse a foreign Origin before they act.
func HTTPHandshake(w http.ResponseWriter, r *http.Request, a Authenticator) (context.Context, *Principal, bool) {
	tok, err := TokenFromHandshake(r)
	return httpAuthenticate(w, r, a, tok, err)
}

func httpAuthenticate(w http.ResponseWriter, r *http.Request, a Authenticator, tok string, err error) (context.Context, *Principal, bool) {
	var pr *Principal
	if err == nil {
		pr, err = a.Authenticate(r.Context(), tok)
	}
	if err != nil {
		st := status.Convert(Status(err))
		w.Header().Set("WWW-Authenticate", `Bearer realm="radbridge"`)
		httpjson.WriteError(w, http.StatusUnauthorized, st.Code(), st.Message())
		return nil, nil, false
	}
	return WithPrincipal(r.Context(), pr), pr, true
}
