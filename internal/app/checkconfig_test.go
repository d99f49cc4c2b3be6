package app_test

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"radbridge/internal/config"
)

// TestCheckConfigGood: a valid configuration from the example file, the
// environment and flags is printed back as a YAML file that loads to the
// same configuration, with credentials redacted, and "configuration OK".
func TestCheckConfigGood(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("ops-token-0123456789 ops\n"), 0o600)
	t.Setenv("RADBRIDGE_HEARTBEAT", "7s")
	args := []string{"--config", "../../radbridge.example.yaml", "--data-dir", filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0", "--store-dir", dir}
	code, stdout, stderr := runApp(t, append([]string{"check-config", "--bind"}, args...)...)
	if code != 0 || !strings.HasSuffix(stdout, "configuration OK\n") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"heartbeat: 7s\n", "auth: \"tokens\"\n", "data-dir: \"" + filepath.Join(dir, "data") + "\"\n", "fsync: true\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	// The printed configuration is a config file that gives the same.
	eff := filepath.Join(dir, "effective.yaml")
	os.WriteFile(eff, []byte(strings.TrimSuffix(stdout, "configuration OK\n")), 0o600)
	got, err := config.Load("x", []string{"--config", eff}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("printed configuration does not load: %v", err)
	}
	want, err := config.Load("x", args, func(k string) string {
		if k == "RADBRIDGE_HEARTBEAT" {
			return "7s"
		}
		return ""
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got.ConfigFile, want.ConfigFile = "", ""
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("printed configuration loads differently (-got +want):\n%s", diff)
	}

	// Credentials in the NATS URL are not printed.
	code, stdout, stderr = runApp(t, "check-config", "--nats-url", "nats://radbridge:s3cret@nats.example:4222,nats://tok@nats2.example:4222")
	if code != 0 || strings.Contains(stdout, "s3cret") || strings.Contains(stdout, "tok@") ||
		!strings.Contains(stdout, `nats-url: "nats://nats.example:4222,nats://nats2.example:4222"`) {
		t.Errorf("exit %d, stderr %s; nats-url not redacted:\n%s", code, stderr, stdout)
	}
}

// TestCheckConfigBad: each problem is reported precisely, all of them at
// once, and the exit status is 1.
func TestCheckConfigBad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	data := filepath.Join(dir, "data")
	short := write("short-tokens", "abc reader\n")
	garbage := write("garbage.pem", "not a certificate\n")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown YAML key", []string{"--config", write("unknown.yaml", "grpc-addr: \":9090\"\ncolour: blue\n")},
			[]string{"unknown keys colour"}},
		{"bad duration in YAML", []string{"--config", write("duration.yaml", "heartbeat: 5 minutes\n")},
			[]string{"heartbeat", "5 minutes"}},
		{"bad flag value", []string{"--nats-replicas", "three"}, []string{"nats-replicas", "three"}},
		{"missing tokens file", []string{"--data-dir", data, "--auth", "tokens", "--auth-tokens-file", filepath.Join(dir, "missing")},
			[]string{"--auth-tokens-file " + filepath.Join(dir, "missing") + ": not an existing file"}},
		{"token too short", []string{"--data-dir", data, "--auth", "tokens", "--auth-tokens-file", short},
			[]string{"--auth tokens:", "shorter than 16"}},
		{"two problems at once", []string{"--data-dir", data, "--subscriber-window", "3", "--log-level", "loud"},
			[]string{"2 problem(s)", "--subscriber-window 3", "--log-level \"loud\""}},
		{"data dir without parent", []string{"--data-dir", filepath.Join(dir, "no", "such", "data")},
			[]string{"neither it nor its parent " + filepath.Join(dir, "no", "such") + " exists"}},
		{"data dir is a file", []string{"--data-dir", short}, []string{"--data-dir " + short + ": not a directory"}},
		{"TLS certificate does not parse", []string{"--data-dir", data, "--https-addr", "127.0.0.1:0", "--tls-cert-file", garbage, "--tls-key-file", garbage},
			[]string{"TLS (--tls-cert-file"}},
		{"address in use", []string{"--bind", "--data-dir", data, "--grpc-addr", busy.Addr().String(), "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", ""},
			[]string{"--grpc-addr " + busy.Addr().String() + ": cannot listen"}},
		{"bad address", []string{"--data-dir", data, "--mllp-addr", "2575"}, []string{"--mllp-addr \"2575\": want host:port"}},
		{"unknown time zone", []string{"--data-dir", data, "--timezone", "Mars/Olympus_Mons"},
			[]string{"--timezone \"Mars/Olympus_Mons\": not an IANA time zone name"}},
		{"time zone of this machine only", []string{"--data-dir", data, "--timezone", "Local"},
			[]string{"--timezone \"Local\": not an IANA time zone name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runApp(t, append([]string{"check-config"}, tc.args...)...)
			if code != 1 {
				t.Errorf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if strings.Contains(stdout, "configuration OK") {
				t.Errorf("said OK:\n%s", stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}
