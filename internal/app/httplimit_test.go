package app_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"radbridge/internal/testkit"
)

// TestHTTPConnectionLimit: with --http-max-connections 3, three open
// WebSockets take every slot of the HTTP listener; a fourth connection is
// answered 503 with Retry-After and closed; once a WebSocket closes, a
// client that retries after a 503 gets through. On the HTTPS listener
// (its own 3 slots) a connection beyond them is closed before the TLS
// handshake. radbridge_http_connections_rejected_total counts them all.
func TestHTTPConnectionLimit(t *testing.T) {
	p := newPKI(t)
	d, _ := runDaemon(t, filepath.Join(t.TempDir(), "data"), slog.New(slog.DiscardHandler),
		append(p.serverFlags(false), "--http-max-connections", "3", "--https-addr", "127.0.0.1:0")...)
	http.DefaultClient.CloseIdleConnections() // the readiness wait's connection
	base := "http://" + d.HTTPAddr()
	// One connection per request, closed after it: the test knows what
	// it holds open.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	refused := 0
	get := func(url string) (int, string, string) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v (want an answer, not a broken connection)", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusServiceUnavailable {
			refused++
		}
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
	}
	// patient retries after each 503, as a well-behaved client does (with
	// a shorter pause than Retry-After, to keep the test short).
	patient := func(url string) string {
		t.Helper()
		for range 600 {
			code, _, body := get(url)
			if code == 200 {
				return body
			}
			if code != http.StatusServiceUnavailable {
				t.Fatalf("GET %s: %d %s", url, code, body)
			}
			time.Sleep(50 * time.Millisecond) // the client's pause before it retries, not a wait
		}
		t.Fatalf("GET %s: still 503 after 600 tries", url)
		return ""
	}
	// The readiness wait's connection is closed by the server
	// asynchronously: wait until only this request's is open.
	testkit.Eventually(t, 15*time.Second, "radbridge_http_connections_open down to 1", func() bool {
		return strings.Contains(patient(base+"/metrics"), "\nradbridge_http_connections_open 1\n")
	})
	refused = 0

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wss []*websocket.Conn
	for range 3 {
		// The last request's connection may still be counted open until
		// the server has closed it: a 503 here is retried, and counted.
		var c *websocket.Conn
		for try := 0; ; try++ {
			var code int
			var err error
			c, code, err = wsDial(ctx, d.HTTPAddr(), "", nil)
			if err == nil {
				break
			}
			if code != http.StatusServiceUnavailable || try == 100 {
				t.Fatalf("WebSocket within the limit: %d %v", code, err)
			}
			refused++
			time.Sleep(50 * time.Millisecond) // the client's pause before it retries, not a wait
		}
		defer c.CloseNow()
		wss = append(wss, c)
	}
	for range 5 {
		code, retry, body := get(base + "/healthz")
		if code != http.StatusServiceUnavailable || retry != "1" || !strings.Contains(body, "too many connections") {
			t.Fatalf("request beyond the limit: %d Retry-After %q %q; want 503, Retry-After 1", code, retry, body)
		}
	}
	if _, _, err := wsDial(ctx, d.HTTPAddr(), "", nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("WebSocket beyond the limit: %v; want a 503", err)
	}
	refused++ // the WebSocket's

	wss[0].Close(websocket.StatusNormalClosure, "")
	patient(base + "/healthz")

	// HTTPS: a connection beyond the limit is closed before the handshake.
	tlsCfg := p.clientConfig(t, "")
	for range 3 {
		c, err := tls.Dial("tcp", d.HTTPSAddr(), tlsCfg)
		if err != nil {
			t.Fatalf("TLS connection within the limit: %v", err)
		}
		defer c.Close()
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", d.HTTPSAddr(), tlsCfg)
	if err == nil {
		c.Close()
		t.Fatal("TLS connection beyond the limit: handshake completed")
	}
	refused++

	metrics := patient(base + "/metrics")
	if want := fmt.Sprintf("\nradbridge_http_connections_rejected_total %d\n", refused); !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %q:\n%s", strings.TrimSpace(want), testkit.GrepLines(metrics, "radbridge_http_"))
	}
}
