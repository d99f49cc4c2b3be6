package auth_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"radbridge/auth"
)

// TestHTTP: a request's token comes from its Authorization header only (a
// WebSocket handshake may also carry the cookie); a refused request gets
// 401 with WWW-Authenticate and the JSON error body, and nothing else.
func TestHTTP(t *testing.T) {
	a, err := auth.ReadTokens(strings.NewReader("reader-token-0123456789 reader\n"))
	if err != nil {
		t.Fatal(err)
	}
	cookie := &http.Cookie{Name: auth.CookieName, Value: "reader-token-0123456789"}
	for _, tc := range []struct {
		name      string
		header    []string
		cookie    bool
		handshake bool
		want      string // subject; "" means refused
	}{
		{name: "bearer", header: []string{"Bearer reader-token-0123456789"}, want: "reader"},
		{name: "scheme case", header: []string{"bearer reader-token-0123456789"}, want: "reader"},
		{name: "no token", header: nil},
		{name: "wrong token", header: []string{"Bearer nope-token-0123456789"}},
		{name: "basic", header: []string{"Basic cmVhZGVyOng="}},
		{name: "two headers", header: []string{"Bearer reader-token-0123456789", "Bearer reader-token-0123456789"}},
		{name: "cookie on a request", cookie: true},
		{name: "cookie on a handshake", cookie: true, handshake: true, want: "reader"},
		{name: "header wins over cookie", header: []string{"Bearer nope-token-0123456789"}, cookie: true, handshake: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/x", nil)
			for _, h := range tc.header {
				r.Header.Add("Authorization", h)
			}
			if tc.cookie {
				r.AddCookie(cookie)
			}
			w := httptest.NewRecorder()
			check := auth.HTTP
			if tc.handshake {
				check = auth.HTTPHandshake
			}
			ctx, p, ok := check(w, r, a)
			if tc.want != "" {
				if !ok || p.Subject != tc.want || auth.FromContext(ctx) != p {
					t.Fatalf("got ok=%v principal %+v; want %q in the context", ok, p, tc.want)
				}
				if w.Code != http.StatusOK || w.Body.Len() != 0 {
					t.Errorf("accepted request answered %d %q; want nothing written", w.Code, w.Body)
				}
				return
			}
			if ok || p != nil || ctx != nil {
				t.Fatalf("got ok=%v principal %+v; want refused", ok, p)
			}
			if w.Code != http.StatusUnauthorized {
				t.Errorf("status %d; want 401", w.Code)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != `Bearer realm="radbridge"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
			if got := w.Body.String(); !strings.HasPrefix(got, `{"code":16,"message":"AUTH_FAILED`) {
				t.Errorf("body %q; want code 16, AUTH_FAILED", got)
			}
		})
	}
}
