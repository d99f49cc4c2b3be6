package main_test

// Safe defaults, through the built binary.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnauthenticatedRemoteRefused: serve with --auth none on an address
// beyond loopback, HTTP or gRPC, exits 2 naming the address's flag and
// --allow-unauthenticated-remote; with that flag it starts.
func TestUnauthenticatedRemoteRefused(t *testing.T) {
	for _, flag := range []string{"--http-addr", "--grpc-addr"} {
		t.Run(flag, func(t *testing.T) {
			args := []string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", "", flag, "0.0.0.0:0"}
			code, _, stderr := runBinary(t, args...)
			if code != 2 {
				t.Errorf("exit %d, want 2\n%s", code, stderr)
			}
			for _, want := range []string{flag + ` "0.0.0.0:0" listens beyond this machine with --auth none`, "--allow-unauthenticated-remote", "--auth tokens or --auth jwt"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
	d := serve(t, "--data-dir", filepath.Join(t.TempDir(), "data"), "--http-addr", "0.0.0.0:0", "--allow-unauthenticated-remote")
	if !strings.Contains(d.logs.String(), "authentication is off") {
		t.Errorf("no warning that authentication is off:\n%s", d.logs.String())
	}
}

// TestDefaultsListenOnLoopback: the README's first command, serve on its
// embedded defaults, is a valid configuration on a fresh machine (a new
// directory, no environment), and its HTTP and gRPC fronts are loopback.
func TestDefaultsListenOnLoopback(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binary, "check-config")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TZ=UTC"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("check-config on the defaults: %v\n%s", err, out)
	}
	for _, want := range []string{"127.0.0.1:8080", "127.0.0.1:9090", "configuration OK"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
}

// TestMistakesSaidInOneLine: a mistyped flag, command or value is one line
// naming the nearest flag and where the flags are listed, not the usage
// text; a configuration file's wrong value says what was expected with an
// example line, its problems in the same order every time.
func TestMistakesSaidInOneLine(t *testing.T) {
	yaml := filepath.Join(t.TempDir(), "radbridge.yaml")
	if err := os.WriteFile(yaml, []byte("mllp-max-connections: many\nfsync: [1, 2]\nheartbeat: 5\nshutdown-timeout: -1s\nsubscriber-window: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(t.TempDir(), "typo.yaml")
	if err := os.WriteFile(typo, []byte("grpc-adr: \":9090\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string // the lines of stderr
	}{
		{[]string{"serve", "--grpc-adr", "127.0.0.1:0"}, []string{"radbridge serve: unknown flag --grpc-adr: did you mean --grpc-addr? (radbridge serve -h lists the flags)"}},
		{[]string{"demo", "--data-dir", "x", "--loopp"}, []string{"radbridge demo: unknown flag --loopp: did you mean --loop? (radbridge demo -h lists the flags)"}},
		{[]string{"serve", "--heartbeat", "5"}, []string{`radbridge serve: --heartbeat "5": want a duration with a unit (ms, s, m, h), e.g. 30s (radbridge serve -h lists the flags)`}},
		{[]string{"serve", "--data-dir"}, []string{`radbridge serve: --data-dir needs a value: want a text value, e.g. ./radbridge-data (radbridge serve -h lists the flags)`}},
		{[]string{"tail", "--sice", "0"}, []string{"radbridge tail: unknown flag --sice: did you mean --since? (radbridge tail -h lists the flags)"}},
		{[]string{"stauts"}, []string{`radbridge: unknown command "stauts": did you mean status? (radbridge help lists the commands)`}},
		{[]string{"serve", "--config", typo}, []string{"radbridge serve: invalid configuration:", "config file " + typo + ": unknown keys grpc-adr (did you mean grpc-addr?) (keys are the flag names of radbridge serve -h)"}},
		{[]string{"serve", "--config", yaml}, []string{"radbridge serve: invalid configuration:",
			"config file " + yaml + ": fsync: a list or mapping; want true or false on one line, e.g. `fsync: true`",
			"config file " + yaml + `: heartbeat: "5": want a duration with a unit (ms, s, m, h), e.g. ` + "`heartbeat: \"30s\"`",
			"config file " + yaml + `: mllp-max-connections: "many": want a whole number, e.g. ` + "`mllp-max-connections: 256`"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runBinary(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, strings.Join(tc.want, "\n"))
			}
		})
	}
	// Validation problems come in one order, whatever map iteration did.
	args := []string{"check-config", "--data-dir", t.TempDir(), "--shutdown-timeout", "-1s", "--heartbeat", "-1s", "--duplicate-window", "0s", "--ws-write-timeout", "-2s", "--mllp-read-timeout", "0s", "--dicom-idle-timeout", "0s"}
	_, _, first := runBinary(t, args...)
	for range 3 {
		if _, _, again := runBinary(t, args...); again != first {
			t.Fatalf("problems in another order:\n%s\nthen:\n%s", first, again)
		}
	}
}
