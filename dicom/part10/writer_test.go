package part10

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPartFileKeepsTheFirstWriteError: a failed write does not stop the
// writer (the data set must still be read off the wire), and commit then
// fails with that error instead of storing a truncated file.
func TestPartFileKeepsTheFirstWriteError(t *testing.T) {
	dir := t.TempDir()
	p, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	if n, err := p.Write([]byte("DICM")); n != 4 || err != nil {
		t.Fatalf("first write: %d, %v", n, err)
	}
	p.f.Close() // every write from now on fails, as on a full disk
	if n, err := p.Write([]byte("more")); n != 4 || err != nil {
		t.Fatalf("write after a failure: %d, %v; want 4, nil", n, err)
	}
	if _, err := p.Commit("1.2", "1.2.3", "1.2.3.4"); err == nil {
		t.Fatal("commit succeeded after a failed write")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 { // only the temporary file
		t.Errorf("store dir holds %d entries after a failed commit, want the temporary file only", len(entries))
	}
}

// dirSyncProbe replaces the directory fsync for one test: it records, for
// every fsync of dir, the names the directory held when that fsync
// started, and counts them; block, when set, runs inside the first fsync;
// fail, when set, decides (by fsync number, from 1) which fsyncs fail.
type dirSyncProbe struct {
	dir   string
	block func()
	fail  func(n int) bool

	mu      sync.Mutex
	n       int
	durable map[string]bool // names covered by a completed, successful fsync
}

func probeDirSyncs(t *testing.T, p *dirSyncProbe) *dirSyncProbe {
	p.durable = map[string]bool{}
	old := syncDirFunc
	t.Cleanup(func() { syncDirFunc = old })
	syncDirFunc = func(d *os.File) error {
		if d.Name() != p.dir {
			return old(d)
		}
		entries, err := os.ReadDir(p.dir)
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.n++
		n := p.n
		p.mu.Unlock()
		if n == 1 && p.block != nil {
			p.block()
		}
		if p.fail != nil && p.fail(n) {
			return errors.New("injected fsync failure")
		}
		if err := old(d); err != nil {
			return err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range entries {
			p.durable[e.Name()] = true
		}
		return nil
	}
	return p
}

func (p *dirSyncProbe) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *dirSyncProbe) covered(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.durable[name]
}

// waitFiles waits (bounded) until dir holds n .dcm files.
func waitFiles(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, _ := filepath.Glob(filepath.Join(dir, "*.dcm"))
		if len(names) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s holds %d files after 10 s, want %d", dir, len(names), n)
			return
		}
		runtime.Gosched()
	}
}

// commitConcurrently commits n files into one series at once and returns
// each commit's path and error.
func commitConcurrently(t *testing.T, dir string, n int) ([]string, []error) {
	t.Helper()
	paths, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			f, err := Create(dir)
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Discard()
			_, _ = f.Write([]byte(fmt.Sprintf("instance %d", i)))
			paths[i], errs[i] = f.Commit("1.2", "1.2.3", fmt.Sprintf("1.2.3.%d", i+1))
		})
	}
	wg.Wait()
	return paths, errs
}

// TestCommitsShareDirectoryFsyncs: commits into one series that wait at
// the same moment share directory fsyncs, and none returns before its own
// rename is covered by a completed fsync that started after the rename
// (the name was in the directory when that fsync began).
func TestCommitsShareDirectoryFsyncs(t *testing.T) {
	dir := t.TempDir()
	series := filepath.Dir(Path(dir, "1.2", "1.2.3", "x"))
	const n = 8
	// The first fsync waits until every commit has renamed its file, so
	// the other seven queue behind it: one more fsync covers them all.
	p := probeDirSyncs(t, &dirSyncProbe{dir: series, block: func() { waitFiles(t, series, n) }})
	paths, errs := commitConcurrently(t, dir, n)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		if !p.covered(filepath.Base(paths[i])) {
			t.Errorf("commit %d returned before a completed directory fsync that started after its rename", i)
		}
		if _, err := os.Stat(paths[i]); err != nil {
			t.Errorf("commit %d: %v", i, err)
		}
	}
	if got := p.count(); got < 1 || got > 2 {
		t.Errorf("%d commits waiting together made %d fsyncs of their series directory, want 1 or 2", n, got)
	}
}

// TestCommitFailsOnFailedDirectoryFsync: a commit whose rename is covered
// only by a failed directory fsync fails, whether it ran that fsync or
// waited for it; the one covered by an earlier successful fsync does not.
func TestCommitFailsOnFailedDirectoryFsync(t *testing.T) {
	dir := t.TempDir()
	series := filepath.Dir(Path(dir, "1.2", "1.2.3", "x"))
	const n = 6
	p := probeDirSyncs(t, &dirSyncProbe{
		dir:   series,
		block: func() { waitFiles(t, series, n) },
		fail:  func(i int) bool { return i >= 2 },
	})
	paths, errs := commitConcurrently(t, dir, n)
	failed := 0
	for i, err := range errs {
		if err == nil {
			if !p.covered(filepath.Base(paths[i])) {
				t.Errorf("commit %d succeeded without a completed directory fsync after its rename", i)
			}
			continue
		}
		failed++
		if !strings.Contains(err.Error(), "injected fsync failure") {
			t.Errorf("commit %d: %v, want the fsync's error", i, err)
		}
	}
	// The first fsync (successful) covers only the renames made before it
	// started: at least the first commit's; waitFiles holds it until all
	// have renamed, so it covers exactly one unless renames raced it.
	if succeeded := n - failed; succeeded < 1 || failed < 1 {
		t.Errorf("%d commits succeeded and %d failed; want the first to succeed and the ones covered only by the failed fsync to fail", succeeded, failed)
	}
}

// TestCommitFailsOnFailedDataFsync: a file whose data cannot be made
// durable is not committed.
func TestCommitFailsOnFailedDataFsync(t *testing.T) {
	dir := t.TempDir()
	p, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	p.f.Close() // fdatasync of a closed file fails
	if _, err := p.Commit("1.2", "1.2.3", "1.2.3.4"); err == nil {
		t.Fatal("commit succeeded after a failed fdatasync")
	}
	if _, err := os.Stat(Path(dir, "1.2", "1.2.3", "1.2.3.4")); err == nil {
		t.Error("the file is in place after a failed fdatasync")
	}
}

// TestNewSeriesDirectoryIsSyncedInItsParent: a commit into a series
// directory that did not exist returns only after the study directory
// (which now names it) and the store directory were synced.
func TestNewSeriesDirectoryIsSyncedInItsParent(t *testing.T) {
	dir := t.TempDir()
	study := filepath.Join(dir, "1.2")
	ps := probeDirSyncs(t, &dirSyncProbe{dir: study})
	p, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	if _, err := p.Commit("1.2", "1.2.3", "1.2.3.4"); err != nil {
		t.Fatal(err)
	}
	if !ps.covered("1.2.3") {
		t.Error("commit returned before the study directory was synced with the new series in it")
	}
	// A second commit into the same series needs no new fsync of the
	// study directory.
	q, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Discard()
	if _, err := q.Commit("1.2", "1.2.3", "1.2.3.5"); err != nil {
		t.Fatal(err)
	}
	if got := ps.count(); got != 1 {
		t.Errorf("study directory synced %d times for two commits into one series, want 1", got)
	}
}

// TestWriteBackDuringReceive: a file larger than the write-back chunk is
// written whole (the hint changes nothing in what is stored).
func TestWriteBackDuringReceive(t *testing.T) {
	dir := t.TempDir()
	p, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	want := make([]byte, 3*writeBackChunk+12345)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for b := want; len(b) > 0; {
		k := min(len(b), 64<<10+3)
		_, _ = p.Write(b[:k])
		b = b[k:]
	}
	if p.flushed < 3*writeBackChunk {
		t.Errorf("write-back started up to %d, want at least %d", p.flushed, 3*writeBackChunk)
	}
	path, err := p.Commit("1.2", "1.2.3", "1.2.3.4")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("file holds %d bytes, not the %d written", len(got), len(want))
	}
}
