package app

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"radbridge/api"
	"radbridge/dicomweb/notify"
	"radbridge/internal/operator"
	"radbridge/thumbnails"
)

// TestREADMECurrent: the README's package table names every package of
// the module, and its served paths table every HTTP path the daemon
// mounts (TestREADMECommands in internal/cli checks the commands table).
func TestREADMECurrent(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	section := func(title string) string {
		_, after, ok := strings.Cut(readme, "\n## "+title+"\n")
		if !ok {
			t.Fatalf("README has no section %q", title)
		}
		if i := strings.Index(after, "\n## "); i >= 0 {
			after = after[:i]
		}
		return after
	}

	// Packages: every directory with non-test Go files.
	table := section("How it fits together")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`([a-z0-9/]+)`").FindAllStringSubmatch(table, -1) {
		listed[m[1]] = true
	}
	err = filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && p != "../.." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "test-artifacts" || name == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		dir, _ := filepath.Rel("../..", filepath.Dir(p))
		if dir != "." && !listed[filepath.ToSlash(dir)] {
			listed[filepath.ToSlash(dir)] = true // once
			t.Errorf("README package table (How it fits together) lacks `%s`", filepath.ToSlash(dir))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	paths := section("Served paths")
	for _, p := range []string{"/ws", "/v1/events:stream", "/v1/events", "/v1/patients/{patient_id}/imaging", thumbnails.Pattern, statusPattern, metricsPattern,
		notify.Path, api.WSTicketPath, "POST /dicomweb/studies", "/healthz", "/readyz", "/radbridge.js",
		operator.ExplainPattern, operator.ExceptionsPattern, operator.ReconcilePattern, "/ops", "/fhir/metadata", "/fhir/ImagingStudy", "/fhir/Subscription", "/fhir/ws"} {
		if !strings.Contains(paths, strings.TrimPrefix(strings.TrimPrefix(p, "GET "), "POST ")) {
			t.Errorf("README Served paths lacks %s", p)
		}
	}
}
