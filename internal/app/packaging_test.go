package app

import (
	"bytes"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"radbridge/internal/config"
)

const exampleConfig = "../../radbridge.example.yaml"

// TestExampleConfig checks that radbridge.example.yaml loads, names every
// serve flag, and holds exactly the defaults.
// Four keys differ from the defaults on purpose: the HTTP and gRPC fronts
// listen on every interface, so authentication is on.
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	// The tokens file it names is the operator's; put one in its place.
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("0123456789abcdef0123456789abcdef ehr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	example := filepath.Join(t.TempDir(), "radbridge.yaml")
	if err := os.WriteFile(example, bytes.Replace(b, []byte(`"/etc/radbridge/tokens"`), []byte(`"`+tokens+`"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load("x", []string{"--config", example}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("load %s: %v", exampleConfig, err)
	}
	want, err := config.Load("x", nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want.ConfigFile = example
	want.GRPCAddr, want.HTTPAddr = ":9090", ":8080"
	want.Auth, want.AuthTokensFile = "tokens", tokens
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("example config differs from the defaults (-got +want):\n%s", diff)
	}

	(&config.Config{}).FlagSet("x").VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		key := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(f.Name) + `:`)
		if !key.Match(b) {
			t.Errorf("%s: no key %q; add it with its default and a comment", exampleConfig, f.Name)
		}
	})
}

// TestInstall runs the documented install command, go install
// ./cmd/radbridge, with a version stamped in, and runs the result.
func TestInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	gobin := t.TempDir()
	cmd := exec.Command(goTool, "install", "-ldflags", "-X radbridge/internal/app.Version=v9.8.7-test", "./cmd/radbridge")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install: %v\n%s", err, out)
	}
	bin := filepath.Join(gobin, "radbridge")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("radbridge version: %v\n%s", err, out)
	}
	if want := "radbridge v9.8.7-test " + runtime.Version(); !strings.HasPrefix(string(out), want) {
		t.Errorf("radbridge version = %q, want prefix %q", out, want)
	}
}
