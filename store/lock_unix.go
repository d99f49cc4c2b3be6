//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockFile is the file in the data directory a running store holds locked.
const LockFile = "radbridge.lock"

// ErrLocked means another process (a running daemon) uses the data
// directory.
var ErrLocked = errors.New("data directory is in use by another radbridge process")

// lockDataDir takes an exclusive lock on dir's lock file; the lock lasts
// until the file is closed (or the process ends, however it ends).
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("%w %s: lock: %w", ErrDataDir, dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w %s: %w (stop it first)", ErrDataDir, dir, ErrLocked)
		}
		return nil, fmt.Errorf("%w %s: lock: %w", ErrDataDir, dir, err)
	}
	return f, nil
}
