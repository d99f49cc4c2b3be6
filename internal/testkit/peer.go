package testkit

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the test runs under CI=true, where every peer is
// installed and a missing one is a failure, not a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test because what is missing, or fails it under
// CI=true.
func Missing(tb testing.TB, what string) {
	tb.Helper()
	if InCI() {
		tb.Fatalf("%s (CI=true: the test command installs it)", what)
	}
	tb.Skip(what)
}

// Peer returns the path of a peer binary (a name looked up in PATH, or an
// absolute path). A missing peer skips the test, or fails it under CI=true.
func Peer(tb testing.TB, bin string) string {
	tb.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		Missing(tb, bin+" not installed")
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
			Missing(tb, "python3 module "+m+" not installed: "+string(out))
		}
	}
	return py
}
