package testkit

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// InCI reports whether the test runs under CI=true, where every peer is
// installed and a missing one is a failure, not a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test, saying why, or fails it under CI=true, where the
// test command provides every peer and privilege the tests need.
func Missing(tb testing.TB, why string) {
	tb.Helper()
	if InCI() {
		tb.Fatal(why)
	}
	tb.Skip(why)
}

// Peer returns the path of a peer binary (a name looked up in PATH, or an
// absolute path). A missing peer skips the test, or fails it under CI=true.
func Peer(tb testing.TB, bin string) string {
	tb.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		Missing(tb, bin+" not installed (scripts/test installs it; under CI=true that is a failure)")
	}
	return p
}

// Python returns /usr/bin/python3 when it can import each module (e.g.
// pydicom from Debian's python3-pydicom). Otherwise the test is skipped, or
// fails under CI=true.
func Python(tb testing.TB, modules ...string) string {
	tb.Helper()
	py := Peer(tb, "/usr/bin/python3")
	for _, m := range modules {
		if out, err := exec.Command(py, "-c", "import "+m).CombinedOutput(); err != nil {
			Missing(tb, "python3 module "+m+" not installed (scripts/test installs it): "+string(out))
		}
	}
	return py
}

// DCMTK runs a DCMTK tool (a peer, see Peer) with args, for at most
// limit, and returns its combined output and exit error. It sets
// TCP_NODELAY=1: Debian's DCMTK otherwise waits on Nagle.
func DCMTK(tb testing.TB, limit time.Duration, tool string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, Peer(tb, tool), args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
