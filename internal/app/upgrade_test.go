package app_test

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"radbridge/internal/testkit"
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
// replays with today's code to the same events: every record read back,
// the same 16 events (none lost, none new), differing only in the FHIR
// changes that the README's upgrade notes announce (one
// patient identity across fronts: the ImagingStudy subject's system; FHIR
// ids unique per patient; extension URLs under
// https://radbridge.dev/fhir). The upgrade step the README gives (radbridge
// replay) then rebuilds the read models, and the daemon serves them.
func TestReplayOfTheFirstReleasesDataDir(t *testing.T) {
	dir := t.TempDir()
	untar(t, "datadir-v1.tgz", dir)
	data := filepath.Join(dir, "data")
	_, out, errOut := runApp(t, append([]string{"replay", "--check", "--data-dir", data}, demoMapping...)...)
	for _, want := range []string{
		"34 ingest records mapped again",
		"events compared with the event log: 16;",
		"events now derived that the log lacks: 0; logged events no longer derived: 0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("replay --check of the first release's data lacks %q:\n%s\n%s", want, out, errOut)
		}
	}
	if m := regexp.MustCompile(`by resource \(([^)]*)\)`).FindStringSubmatch(out); m != nil {
		for _, part := range strings.Split(m[1], ", ") {
			if r, _, _ := strings.Cut(part, "="); !upgradeChanges[r] {
				t.Errorf("events of resource %s differ, which no upgrade note announces:\n%s", r, out)
			}
		}
	}
	if code, out, errOut := runApp(t, append([]string{"replay", "--data-dir", data}, demoMapping...)...); code != 0 {
		t.Fatalf("replay (the upgrade step): exit %d\n%s\n%s", code, out, errOut)
	}
	d, _ := runDaemon(t, data, slog.New(slog.DiscardHandler), demoMapping...)
	code, img := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/patients/DEMO1001/imaging")
	if code != 200 || !strings.Contains(fmt.Sprint(img), "DA0001001") {
		t.Errorf("DEMO1001's imaging after the upgrade: %d %v", code, img)
	}
}

// upgradeChanges are the resources whose FHIR changed on purpose since the
// fixture was written (README, "Upgrading: resource ids" and
// "Upgrading: extension URLs").
var upgradeChanges = map[string]bool{"ImagingStudy": true, "ServiceRequest": true, "DiagnosticReport": true}
