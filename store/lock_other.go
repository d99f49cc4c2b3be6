//go:build !unix

package store

import (
	"errors"
	"os"
)

// LockFile is the file in the data directory a running store holds locked.
const LockFile = "radbridge.lock"

// ErrLocked means another process (a running daemon) uses the data
// directory.
var ErrLocked = errors.New("data directory is in use by another radbridge process")

// lockDataDir does not lock on this platform.
func lockDataDir(string) (*os.File, error) { return nil, nil }
