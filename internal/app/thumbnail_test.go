package app_test

import (
	"bytes"
	"image/jpeg"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// TestStudyThumbnail: a study stored with --store-dir gets a JPEG preview
// of the middle instance of its first series, served at
// /v1/studies/{uid}/thumbnail; unknown studies are 404, bad UIDs 400.
func TestStudyThumbnail(t *testing.T) {
	const thumbStudy = "1.2.826.0.1.3680043.10.1447.79"
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s", "--store-dir", t.TempDir())
	src := t.TempDir()
	makeStudy(t, src, thumbStudy, 2, 3, 1)

	storeAndAwait(t, d, src)

	base := "http://" + d.HTTPAddr() + "/v1/studies/"
	get := func(uid string) (int, string, []byte) {
		t.Helper()
		resp, err := http.Get(base + uid + "/thumbnail")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), b
	}
	// The worker renders after the event: wait for it.
	var code int
	var ctype string
	var body []byte
	testkit.Poll(20*time.Second, func() bool {
		code, ctype, body = get(thumbStudy)
		return code != http.StatusNotFound
	})
	if code != http.StatusOK || ctype != "image/jpeg" {
		t.Fatalf("thumbnail: %d %s %q", code, ctype, body)
	}
	img, err := jpeg.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("thumbnail is not a JPEG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 16 || b.Dy() != 16 {
		t.Errorf("thumbnail %dx%d, want 16x16 (the instances' size)", b.Dx(), b.Dy())
	}
	if code, _, _ := get("1.2.3.4.5"); code != http.StatusNotFound {
		t.Errorf("unknown study: %d, want 404", code)
	}
	if code, _, _ := get("not-a-uid"); code != http.StatusBadRequest {
		t.Errorf("bad UID: %d, want 400", code)
	}
}
