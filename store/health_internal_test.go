package store

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"radbridge/internal/testkit"
)

// TestProbeReadOnly: the write probe fails on a read-only file system (a
// tmpfs mounted read-only for the test; it needs root) with the reason, and
// passes on a writable directory.
func TestProbeReadOnly(t *testing.T) {
	if err := probe(t.TempDir()); err != nil {
		t.Fatalf("probe of a writable directory: %v", err)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		testkit.Missing(t, fmt.Sprintf("mount a read-only tmpfs (needs root; under CI=true the test runs as root): %v %s", err, out))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	err := probe(mnt)
	if !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), "data directory not writable") {
		t.Fatalf("probe of a read-only file system: %v, want data directory not writable: EROFS", err)
	}
}
