package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// TestServesEmbeddedFiles: the page and its scripts come with the content
// types a browser needs to run them (module scripts need a JavaScript MIME
// type), revalidation and a CSP; other paths and methods are refused.
func TestServesEmbeddedFiles(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		path, wantType, wantBody string
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="/app.js">`},
		{"/?patient=MRN4711", "text/html; charset=utf-8", `data-testid="connection"`},
		{"/radbridge.js", "text/javascript; charset=utf-8", "export class RadbridgeClient"},
		{"/app.js", "text/javascript; charset=utf-8", `from "/radbridge.js"`},
		{"/styles.css", "text/css; charset=utf-8", ":root"},
	} {
		resp := get(t, h, "GET", tc.path, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", tc.path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tc.wantType {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.wantType)
		}
		if !strings.Contains(string(body), tc.wantBody) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.wantBody)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: security headers %v", tc.path, resp.Header)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", tc.path)
			continue
		}
		if again := get(t, h, "GET", tc.path, map[string]string{"If-None-Match": etag}); again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match: %d, want 304", tc.path, again.StatusCode)
		}
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/index.html", 404},
		{"GET", "/nothing.js", 404},
		{"GET", "/static/app.js", 404},
		{"GET", "/../web.go", 404},
		{"POST", "/", 405},
		{"HEAD", "/radbridge.js", 200},
	} {
		if got := get(t, h, tc.method, tc.path, nil).StatusCode; got != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, got, tc.want)
		}
	}
}

// TestClientKeepsTokenOutOfURLs: the token goes in the Authorization header
// and the socket's auth message; no code path of the client puts it into a
// URL (query string or otherwise), where it would reach logs and history.
func TestClientKeepsTokenOutOfURLs(t *testing.T) {
	for _, name := range []string{"static/radbridge.js", "static/app.js"} {
		b, err := static.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		for _, bad := range []*regexp.Regexp{
			regexp.MustCompile(`(?i)[?&](access_)?token=`),
			regexp.MustCompile(`(?i)searchParams\.(set|append)\(\s*["'](access_)?token`),
			regexp.MustCompile(`(?i)(URL|socketURL|WebSocket)\([^)]*token`),
			regexp.MustCompile(`(?i)[=/]["']\s*\+\s*(this\.)?token\b`),
		} {
			if loc := bad.FindStringIndex(src); loc != nil {
				t.Errorf("%s: token in a URL at %q", name, src[max(0, loc[0]-40):min(len(src), loc[1]+40)])
			}
		}
	}
	b, _ := static.ReadFile("static/radbridge.js")
	for _, want := range []string{`headers.Authorization = "Bearer " + token`, `{ type: "auth", data: { token } }`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("radbridge.js does not send the token as %s", want)
		}
	}
}
