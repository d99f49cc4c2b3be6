package httpjson_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc/codes"

	"radbridge/internal/httpjson"
)

func TestIsJSON(t *testing.T) {
	for _, tc := range []struct {
		contentType []string
		want        bool
	}{
		{[]string{"application/json"}, true},
		{[]string{"application/json; charset=utf-8"}, true},
		{[]string{"Application/JSON"}, true},
		{nil, false},
		{[]string{"text/plain"}, false},
		{[]string{"application/x-www-form-urlencoded"}, false},
		{[]string{"multipart/form-data; boundary=x"}, false},
		{[]string{"application/json", "application/json"}, false},
		{[]string{"application/json;;"}, false},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		for _, v := range tc.contentType {
			r.Header.Add("Content-Type", v)
		}
		if got := httpjson.IsJSON(r); got != tc.want {
			t.Errorf("IsJSON(Content-Type %q) = %v; want %v", tc.contentType, got, tc.want)
		}
	}
}

func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	httpjson.WriteError(w, http.StatusUnsupportedMediaType, codes.InvalidArgument, `Content-Type must be "application/json"`)
	if w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("status %d; want 415", w.Code)
	}
	if got := w.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}
	if got, want := w.Body.String(), `{"code":3,"message":"Content-Type must be \"application/json\""}`+"\n"; got != want {
		t.Errorf("body %q; want %q", got, want)
	}
}
