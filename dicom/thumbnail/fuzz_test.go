package thumbnail

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// pydicomFiles are real DICOM files from python3-pydicom (seeds only, read
// when installed): native grayscale, RGB and JPEG baseline.
var pydicomFiles = []string{"MR_small.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG-lossy.dcm"}

// FuzzFromFile renders arbitrary bytes as a stored instance: the files in
// --store-dir hold what senders sent over C-STORE and STOW-RS, and the
// thumbnail worker decodes them. Every input is rendered or refused with
// an error, within the deadline, without a panic.
func FuzzFromFile(f *testing.F) {
	for _, name := range pydicomFiles {
		if b, err := os.ReadFile(filepath.Join("/usr/lib/python3/dist-packages/pydicom/data/test_files", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add(append(make([]byte, 128), "DICM"...))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "in.dcm")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := FromFile(ctx, path, 64, 0)
		if err == nil && len(out) == 0 {
			t.Fatal("no error and no image")
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("render took more than 10 s")
		}
	})
}
