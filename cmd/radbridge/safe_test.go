package main_test

// Safe defaults (issue 19), through the built binary.

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
