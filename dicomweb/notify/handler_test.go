package notify_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"radbridge/auth"
	"radbridge/dicomweb/notify"
	"radbridge/ingest/ingesttest"
)

type oneToken string

func (o oneToken) Authenticate(_ context.Context, tok string) (*auth.Principal, error) {
	if tok == "viewer-token" {
		return &auth.Principal{Subject: "viewer", Patients: []string{"P1"}}, nil
	}
	if tok != string(o) {
		return nil, auth.ErrUnauthenticated
	}
	return &auth.Principal{Subject: "orthanc"}, nil
}

func TestHandler(t *testing.T) {
	wrapped := `{"instances":[` + inst1 + `],"complete":true}`
	tests := []struct {
		name, method, token, body string
		contentType, cookie       string // contentType "" is application/json
		wantCode                  int
		wantInstances, wantIANs   int
		wantBody                  string
	}{
		{name: "complete", method: "POST", token: "s3cret", body: wrapped, wantCode: 200, wantInstances: 1, wantIANs: 1, wantBody: `{"stored":1,"study_instance_uids":["1.2.3"]}`},
		{name: "list", method: "POST", token: "s3cret", body: `[` + inst1 + `]`, wantCode: 200, wantInstances: 1, wantBody: `"stored":1`},
		{name: "no token", method: "POST", body: wrapped, wantCode: 401, wantBody: "AUTH_FAILED"},
		{name: "patient-restricted token", method: "POST", token: "viewer-token", body: wrapped, wantCode: 403, wantBody: "limited to some patients"},
		{name: "invalid", method: "POST", token: "s3cret", body: `[` + inst1 + `,` + inst2 + `]`, wantCode: 400, wantBody: "instance 1: (0020,000D) StudyInstanceUID missing"},
		{name: "GET", method: "GET", token: "s3cret", wantCode: 405},
		{name: "form post", method: "POST", token: "s3cret", body: wrapped, contentType: "application/x-www-form-urlencoded", wantCode: 415, wantBody: "application/json"},
		{name: "text/plain post", method: "POST", token: "s3cret", body: wrapped, contentType: "text/plain", wantCode: 415, wantBody: "application/json"},
		{name: "no Content-Type", method: "POST", token: "s3cret", body: wrapped, contentType: "-", wantCode: 415},
		{name: "charset", method: "POST", token: "s3cret", body: wrapped, contentType: "application/json; charset=utf-8", wantCode: 200, wantInstances: 1, wantIANs: 1},
		{name: "cookie only", method: "POST", cookie: "s3cret", body: wrapped, wantCode: 401, wantBody: "AUTH_FAILED"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &ingesttest.Recorder{}
			h := notify.NewHandler(rec, oneToken("s3cret"), nil)
			req := httptest.NewRequest(tc.method, notify.Path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			switch tc.contentType {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", tc.contentType)
			}
			if tc.cookie != "" {
				req.AddCookie(&http.Cookie{Name: auth.CookieName, Value: tc.cookie})
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.wantCode || !strings.Contains(w.Body.String(), tc.wantBody) {
				t.Errorf("got %d %s, want %d with %q", w.Code, w.Body, tc.wantCode, tc.wantBody)
			}
			instances, ians := rec.Instances(), rec.IANs()
			if len(instances) != tc.wantInstances || len(ians) != tc.wantIANs {
				t.Errorf("recorded %d instances and %d IANs, want %d and %d", len(instances), len(ians), tc.wantInstances, tc.wantIANs)
			}
			for _, i := range instances {
				if i.CallingAE != notify.CallingAE || i.RemoteAddr == "" || i.ReceivedAt.IsZero() {
					t.Errorf("peer %+v received %v", i.Peer, i.ReceivedAt)
				}
			}
			if w.Code == 200 {
				var resp notify.Response
				if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
