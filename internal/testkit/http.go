package testkit

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Get returns the status code and body of GET url.
func Get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// GetJSON returns the status code and the JSON object of GET url; a body
// that is not a JSON object fails the test.
func GetJSON(tb testing.TB, url string) (int, map[string]any) {
	tb.Helper()
	code, body := Get(tb, url)
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		tb.Fatalf("GET %s: %d %q is not JSON", url, code, body)
	}
	return code, m
}

// Ready reports whether GET base/readyz answers 200 now.
func Ready(base string) bool {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitReady waits until base/readyz answers 200, for at most limit.
func WaitReady(tb testing.TB, base string, limit time.Duration) {
	tb.Helper()
	if !Poll(limit, func() bool { return Ready(base) }) {
		tb.Fatalf("%s not ready within %v", base, limit)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// GrepLines returns the lines of s that contain sub, for a failure message
// that shows the relevant part of a long page (e.g. /metrics).
func GrepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
