package operator_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"radbridge/auth"
	"radbridge/internal/operator"
	"radbridge/mapper"
)

// tokens: "operator" may correct, "viewer" reads patient P1 only.
type tokens struct{}

func (tokens) Authenticate(_ context.Context, tok string) (*auth.Principal, error) {
	switch tok {
	case "operator":
		return &auth.Principal{Subject: "ops", Roles: []string{auth.RoleOperator}}, nil
	case "viewer":
		return &auth.Principal{Subject: "viewer", Patients: []string{"P1"}}, nil
	}
	return nil, errors.New("unknown token")
}

// follower is a process of a cluster that does not map.
type follower struct{}

func (follower) Current() *mapper.Mapper { return nil }

// TestEndpointsBeforeTheMapper: requests are authenticated and checked
// before the mapper is asked; a process that does not map says where to
// ask.
func TestEndpointsBeforeTheMapper(t *testing.T) {
	routes := operator.New(operator.Config{Mapper: follower{}, Auth: tokens{}}).Routes()
	for _, tc := range []struct {
		pattern, target, token, contentType, body string
		wantCode                                  int
		wantBody                                  string
	}{
		{operator.ExplainPattern, "/v1/explain?study=1.2.3", "", "", "", http.StatusUnauthorized, ""},
		{operator.ExplainPattern, "/v1/explain?study=1.2.3&order=O1", "operator", "", "", http.StatusBadRequest, "exactly one of"},
		{operator.ExplainPattern, "/v1/explain?patient=P2", "viewer", "", "", http.StatusForbidden, "may not read that patient"},
		{operator.ExplainPattern, "/v1/explain?patient=P1", "viewer", "", "", http.StatusServiceUnavailable, "ask the mapper leader"},
		{operator.ExceptionsPattern, "/v1/exceptions?x=1", "operator", "", "", http.StatusBadRequest, "takes no parameters"},
		{operator.ExceptionsPattern, "/v1/exceptions", "viewer", "", "", http.StatusServiceUnavailable, "ask the mapper leader"},
		{operator.ReconcilePattern, "/v1/reconcile", "viewer", "application/json", `{"action":"retry","seq":1,"reason":"r"}`, http.StatusForbidden, "operator role"},
		{operator.ReconcilePattern, "/v1/reconcile", "operator", "text/plain", `{"action":"retry","seq":1,"reason":"r"}`, http.StatusUnsupportedMediaType, "application/json"},
		{operator.ReconcilePattern, "/v1/reconcile", "operator", "application/json", `{"action":"retry","reason":"r"}`, http.StatusBadRequest, "seq"},
		{operator.ReconcilePattern, "/v1/reconcile", "operator", "application/json", `{"action":"retry","seq":1,"reason":"r"}`, http.StatusServiceUnavailable, "ask the mapper leader"},
	} {
		method, _, _ := strings.Cut(tc.pattern, " ")
		r := httptest.NewRequest(method, tc.target, strings.NewReader(tc.body))
		if tc.token != "" {
			r.Header.Set("Authorization", "Bearer "+tc.token)
		}
		if tc.contentType != "" {
			r.Header.Set("Content-Type", tc.contentType)
		}
		w := httptest.NewRecorder()
		routes[tc.pattern].ServeHTTP(w, r)
		if w.Code != tc.wantCode || !strings.Contains(w.Body.String(), tc.wantBody) {
			t.Errorf("%s %s as %q: %d %s, want %d with %q", method, tc.target, tc.token, w.Code, w.Body, tc.wantCode, tc.wantBody)
		}
	}
}

func TestUnrestricted(t *testing.T) {
	h := operator.Unrestricted(tokens{}, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	for token, want := range map[string]int{"": http.StatusUnauthorized, "viewer": http.StatusForbidden, "operator": http.StatusOK} {
		r := httptest.NewRequest("GET", "/v1/status", nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("token %q: %d, want %d", token, w.Code, want)
		}
	}
}
