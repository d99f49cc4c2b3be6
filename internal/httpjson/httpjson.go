// Package httpjson holds the JSON conventions the HTTP fronts share: the
// error body {"code":N,"message":"…"} (N a google.rpc.Code, as the REST
// gateway answers) and the application/json check on requests that may
// change state.
package httpjson

import (
	"encoding/json"
	"mime"
	"net/http"

	"google.golang.org/grpc/codes"
)

// IsJSON reports whether r's Content-Type is application/json (parameters
// such as charset=utf-8 allowed). A cross-site HTML form can only send
// x-www-form-urlencoded, multipart or text/plain, and a page's fetch with
// application/json needs a CORS preflight radbridge never grants: a handler
// that changes state and requires JSON cannot be driven by another site.
func IsJSON(r *http.Request) bool {
	vs := r.Header.Values("Content-Type")
	if len(vs) != 1 {
		return false
	}
	mt, _, err := mime.ParseMediaType(vs[0])
	return err == nil && mt == "application/json"
}

// WriteError answers httpCode with the body {"code":code,"message":msg}.
func WriteError(w http.ResponseWriter, httpCode int, code codes.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpCode)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": int(code), "message": msg})
}
