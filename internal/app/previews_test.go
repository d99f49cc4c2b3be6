package app_test

import (
	"bytes"
	"image/jpeg"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// TestThumbnailWithoutStoreDir: without --store-dir, a study sent by
// DCMTK storescu (and one sent over STOW-RS) gets a JPEG preview rendered from an instance kept in
// memory as it arrived; a study in JPEG Lossless (a transfer syntax the
// renderer does not decode) gets the modality icon, with the syntax named
// in X-Radbridge-Thumbnail-Fallback and in an SVG comment.
func TestThumbnailWithoutStoreDir(t *testing.T) {
	const native, lossless, stowed = "1.2.826.0.1.3680043.10.1447.81", "1.2.826.0.1.3680043.10.1447.82", "1.2.826.0.1.3680043.10.1447.83"
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s", "--public-base-url", stowPublicBase)
	plain, jpegDir := t.TempDir(), t.TempDir()
	makeStudy(t, plain, native, 2, 3, 1)
	makeLosslessStudy(t, jpegDir, lossless, 1, 2, 1)
	stowDir := t.TempDir()
	makeStudy(t, stowDir, stowed, 1, 2, 1)

	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, plain); err != nil {
		t.Fatalf("storescu (native): %v\n%s", err, out)
	}
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "-xs", "+sd", "+r", host, port, jpegDir); err != nil {
		t.Fatalf("storescu (JPEG lossless): %v\n%s", err, out)
	}

	ct, body := stowBody(t, []string{stowDir})
	if code, got := stow(t, "http://"+d.HTTPAddr()+"/dicomweb/studies", ct, body); code != http.StatusOK {
		t.Fatalf("STOW-RS: %d %v", code, got)
	}

	type answer struct {
		code            int
		ctype, fallback string
		body            []byte
	}
	get := func(uid string) answer {
		t.Helper()
		resp, err := http.Get("http://" + d.HTTPAddr() + "/v1/studies/" + uid + "/thumbnail")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Radbridge-Thumbnail-Fallback"), b}
	}
	// The study's event comes after the quiet period, the preview when
	// rendered: wait (bounded) until the answer is final.
	waitFor := func(uid string, done func(answer) bool) answer {
		t.Helper()
		var a answer
		if !testkit.Poll(30*time.Second, func() bool { a = get(uid); return done(a) }) {
			t.Fatalf("study %s: thumbnail %d %s fallback %q %.200q", uid, a.code, a.ctype, a.fallback, a.body)
		}
		return a
	}

	for _, uid := range []string{native, stowed} {
		a := waitFor(uid, func(a answer) bool { return a.code == http.StatusOK && a.ctype == "image/jpeg" })
		img, err := jpeg.Decode(bytes.NewReader(a.body))
		if err != nil {
			t.Fatalf("study %s: thumbnail is not a JPEG: %v", uid, err)
		}
		if b := img.Bounds(); b.Dx() != 16 || b.Dy() != 16 {
			t.Errorf("study %s: thumbnail %dx%d, want 16x16 (the instances' size)", uid, b.Dx(), b.Dy())
		}
		if a.fallback != "" {
			t.Errorf("study %s: JPEG with fallback %q", uid, a.fallback)
		}
	}

	a := waitFor(lossless, func(a answer) bool { return a.code == http.StatusOK && a.fallback != "" })
	const ts = "1.2.840.10008.1.2.4.70" // JPEG Lossless, first-order prediction
	if a.ctype != "image/svg+xml" || !strings.Contains(a.fallback, ts) || !strings.Contains(string(a.body), "<!-- radbridge: transfer syntax "+ts) {
		t.Errorf("lossless study: %s, fallback %q, body %q; want the icon naming %s", a.ctype, a.fallback, a.body, ts)
	}
}
