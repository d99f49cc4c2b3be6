package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestClassifyAnswer: a server's first bytes after the probe name its
// protocol.
func TestClassifyAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer []byte
		want   string
	}{
		{"nothing", nil, ""},
		{"HTTP/1.1 400", []byte("HTTP/1.1 400 Bad Request\r\n"), protoHTTP},
		{"MLLP negative ACK", []byte("\x0bMSH|^~\\&|RADBRIDGE"), protoMLLP},
		{"HTTP/2 SETTINGS frame", []byte{0, 0, 6, 0x04, 0, 0, 0, 0, 0, 0, 5}, protoGRPC},
		{"A-ASSOCIATE-RJ", []byte{0x03, 0, 0, 0, 0, 4, 0, 1, 1, 1}, protoDICOM},
		{"A-ABORT", []byte{0x07, 0, 0, 0, 0, 4, 0, 0, 0, 2}, protoDICOM},
		{"TLS alert", []byte{0x15, 0x03, 0x03, 0, 2, 2, 70}, protoTLS},
		{"something else", []byte("SSH-2.0-OpenSSH_9.6\r\n"), ""},
	} {
		if got := classifyAnswer(tc.answer); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestWrongPortNamesTheFlag: a client pointed at an HTTP server says so
// and which address to give instead; at the protocol it wants, nothing.
func TestWrongPortNamesTheFlag(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	got := wrongPort(context.Background(), "radbridge tail", addr, protoGRPC, false)
	want := "radbridge tail: " + addr + " speaks HTTP, not gRPC (it is the daemon's --http-addr, for status, healthcheck): give the daemon's gRPC address, its --grpc-addr (port 9090 by default): radbridge tail --addr 127.0.0.1:9090"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := wrongPort(context.Background(), "radbridge status", addr, protoHTTP, false); got != "" {
		t.Errorf("HTTP client at an HTTP server: got %q, want nothing", got)
	}
	if got := wrongPort(context.Background(), "radbridge status", addr, protoHTTP, true); !strings.Contains(got, "speaks HTTP without TLS: leave out --tls") {
		t.Errorf("TLS client at a plain HTTP server: got %q", got)
	}
}
