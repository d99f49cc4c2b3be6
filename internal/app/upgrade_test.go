package app_test

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// untar extracts testdata archive name into dir.
func untar(t *testing.T, name, dir string) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, filepath.Clean(dir)+string(os.PathSeparator)) {
			t.Fatalf("archive entry %q leaves the directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(io.LimitReader(tr, 64<<20))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// demoMapping are the mapping options the demo that wrote datadir-v1 ran
// with.
var demoMapping = []string{"--hl7-patient-authority", "DEMOHOSP", "--dicom-patient-issuer", "DEMOHOSP", "--study-quiet-period", "3s"}

// TestReplayOfTheFirstReleasesDataDir: a data directory written by the
// release before package ingest owned the record (testdata/README.md)
// replays with today's code to exactly its events, read models and
// snapshot: `radbridge replay --check` reports no difference.
func TestReplayOfTheFirstReleasesDataDir(t *testing.T) {
	dir := t.TempDir()
	untar(t, "datadir-v1.tgz", dir)
	code, out, errOut := runApp(t, append([]string{"replay", "--check", "--data-dir", filepath.Join(dir, "data")}, demoMapping...)...)
	if code != 0 || !strings.Contains(out, "events compared with the event log: 16; differ: 0") || !strings.Contains(out, "match a clean replay") {
		t.Errorf("replay --check of the first release's data: exit %d\n%s\n%s", code, out, errOut)
	}
}
