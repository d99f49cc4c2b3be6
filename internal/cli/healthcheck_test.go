package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   int
	}{{http.StatusOK, 0}, {http.StatusServiceUnavailable, 1}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/readyz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(tc.status)
		}))
		addr := strings.TrimPrefix(srv.URL, "http://")
		if got := Run(context.Background(), []string{"healthcheck", "--addr", addr}, io.Discard, io.Discard); got != tc.want {
			t.Errorf("readyz %d: exit %d, want %d", tc.status, got, tc.want)
		}
		srv.Close()
		if got := Run(context.Background(), []string{"healthcheck", "--addr", addr}, io.Discard, io.Discard); got != 1 {
			t.Errorf("server down: exit %d, want 1", got)
		}
	}
}
