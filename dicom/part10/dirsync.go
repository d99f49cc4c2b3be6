package part10

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Directory fsyncs shared by concurrent commits.
//
// A rename into a series directory is durable once an fsync of that
// directory that started after the rename has completed. Instances of one
// series land in one directory, so concurrent commits (several
// associations, or STOW-RS parts) wait for the same directory: the first
// takes the directory's sync lock and fsyncs; those that renamed while that
// fsync ran queue behind it, and the next holder's fsync covers all of them
// at once, so they return without one of their own. A caller never returns
// before an fsync that started after its own rename has completed; batching
// changes only how many renames share one.

// dirSyncer serialises and shares the fsyncs of one directory.
type dirSyncer struct {
	path string
	refs int // callers using it (dirSyncers.mu)

	mu      sync.Mutex // held for a whole fsync; holders coalesce
	started uint64     // fsyncs started (read under mu, or startedMu for a ticket)
	done    uint64     // the newest fsync completed (mu)
	failed  uint64     // the newest fsync that failed, 0 if none (mu)
	err     error      // its error (mu)

	startedMu sync.Mutex // guards started for ticket reads
}

var dirSyncers = struct {
	mu sync.Mutex
	m  map[string]*dirSyncer
}{m: map[string]*dirSyncer{}}

// syncDirFunc fsyncs an open directory; tests replace it to count, slow
// down or fail fsyncs.
var syncDirFunc = func(d *os.File) error { return d.Sync() }

// syncDir returns once an fsync of dir that started after the call has
// completed: whatever was changed in dir before the call is durable. It
// shares fsyncs with concurrent callers on the same directory.
func syncDir(dir string) error {
	dirSyncers.mu.Lock()
	s := dirSyncers.m[dir]
	if s == nil {
		s = &dirSyncer{path: dir}
		dirSyncers.m[dir] = s
	}
	s.refs++
	dirSyncers.mu.Unlock()
	defer func() {
		dirSyncers.mu.Lock()
		if s.refs--; s.refs == 0 {
			delete(dirSyncers.m, dir)
		}
		dirSyncers.mu.Unlock()
	}()
	return s.sync()
}

func (s *dirSyncer) sync() error {
	// The ticket: the first fsync that starts from now on. One already
	// running may have started before the caller's change.
	s.startedMu.Lock()
	want := s.started + 1
	s.startedMu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done >= want {
		// A completed fsync started after the call. Any failure since then
		// fails the caller too: after a failed fsync the kernel may have
		// dropped the dirty state that a later fsync then calls clean.
		if s.failed >= want {
			return s.err
		}
		return nil
	}
	s.startedMu.Lock()
	s.started++
	n := s.started
	s.startedMu.Unlock()
	err := fsyncDir(s.path)
	s.done = n
	if err != nil {
		s.failed, s.err = n, err
	}
	return err
}

func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	defer d.Close()
	if err := syncDirFunc(d); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// linked remembers directories under a store directory whose own entry
// (in their parent) is known durable in this process: a series or study
// directory is synced in its parent once, by the first commit that uses it
// (whether or not that commit created it: a directory left by a process
// that died before syncing it must be synced too), not once per instance.
// Bounded: when full it is emptied, which costs only extra parent fsyncs.
var linked = struct {
	mu sync.Mutex
	m  map[string]struct{}
}{m: map[string]struct{}{}}

const maxLinked = 4096

func isLinked(dir string) bool {
	linked.mu.Lock()
	defer linked.mu.Unlock()
	_, ok := linked.m[dir]
	return ok
}

func setLinked(dir string) {
	linked.mu.Lock()
	defer linked.mu.Unlock()
	if len(linked.m) >= maxLinked {
		clear(linked.m)
	}
	linked.m[dir] = struct{}{}
}

func forgetLinked(dirs ...string) {
	linked.mu.Lock()
	defer linked.mu.Unlock()
	for _, d := range dirs {
		delete(linked.m, d)
	}
}

// syncLink makes dir's entry in its parent durable, and its parent's up
// to (not including) top, unless already known durable. Every level is
// checked: another commit may have marked a lower level while it is still
// syncing a higher one.
func syncLink(dir, top string) error {
	top = filepath.Clean(top)
	for d := dir; d != top; d = filepath.Dir(d) {
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		if isLinked(d) {
			continue
		}
		if err := syncDir(parent); err != nil {
			return err
		}
		setLinked(d)
	}
	return nil
}
