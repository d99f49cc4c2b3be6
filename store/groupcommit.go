package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Group commit (Config.GroupCommit, embedded store only).
//
// JetStream's SyncAlways fsyncs every message on its own: concurrent
// appends each wait for their own fsync, one after another. In group-commit
// mode the embedded server does not fsync per write; JetStream still
// write(2)s every message into its block file before it answers the
// publish (flush in place), so after the answer the record is in the page
// cache and survives a process crash. The ingest log then makes it durable
// itself: an appender whose record is not yet durable takes the sync lock;
// the one that holds it fsyncs the ingest stream's block files once for
// every record written so far, and everyone waiting behind it whose record
// that fsync covered returns without another one. Nothing is acknowledged
// before its own record is covered by a completed fsync; batching changes
// only how many records share one.
//
// The mapper reads only durable ingest records. The event log fsyncs each
// event before Append returns and serves only durable events (Watch, Read),
// as SyncAlways did. The state buckets (read models, dedup keys, archive,
// dead letters) are fsynced by JetStream at its sync interval, and
// everything before and after a snapshot is stored (syncAll), so a snapshot
// never survives the writes it stands on; after a power loss the replay
// from it rewrites what was lost. MPPS step states, answered to a peer, are
// fsynced before the answer.

// blockSyncer makes the block files of one JetStream file-store stream
// durable. The files are <dir>/<index>.blk; a stream only ever appends to
// its newest block and opens the next index when it is full.
type blockSyncer struct {
	dir string // the stream's msgs directory

	mu   sync.Mutex // serialises fsyncs; holders coalesce
	last int        // newest block index fsynced (0: none yet)

	// written is the highest sequence known to be written to the stream
	// (a publish was answered with it or a reader saw it); durable is the
	// highest sequence a completed fsync covered.
	written atomic.Uint64
	durable atomic.Uint64

	// fsyncs and records count group commits (for tests and metrics).
	fsyncs atomic.Uint64

	// afterSync, when set, runs after each fsync that covered more than
	// one record, before any waiter returns (crash tests).
	afterSync func(covered uint64)
}

func newBlockSyncer(storeDir, stream string) *blockSyncer {
	return &blockSyncer{dir: filepath.Join(storeDir, "$G", "streams", stream, "msgs")}
}

// noteWritten records that seq (and so every sequence before it: a stream
// stores in order) is written.
func (b *blockSyncer) noteWritten(seq uint64) {
	for {
		w := b.written.Load()
		if seq <= w || b.written.CompareAndSwap(w, seq) {
			return
		}
	}
}

// syncThrough returns once every record up to seq, which must be written,
// is durable. Concurrent callers share fsyncs.
func (b *blockSyncer) syncThrough(seq uint64) error {
	if b.durable.Load() >= seq {
		return nil
	}
	b.noteWritten(seq)
	b.mu.Lock()
	defer b.mu.Unlock()
	before := b.durable.Load()
	if before >= seq {
		return nil // an fsync that started after seq was written covered it
	}
	target := b.written.Load() // everything up to here is in the files now
	if err := b.syncFiles(); err != nil {
		return fmt.Errorf("fsync %s: %w", b.dir, err)
	}
	b.fsyncs.Add(1)
	b.durable.Store(target)
	if b.afterSync != nil && target-before > 1 {
		b.afterSync(target - before)
	}
	return nil
}

// syncFiles fsyncs the newest block fsynced before and every block after
// it, and the directory when a block was added. Lock held.
func (b *blockSyncer) syncFiles() error {
	if b.last == 0 {
		idx, err := b.blocks()
		if err != nil {
			return err
		}
		for _, i := range idx {
			if err := fsyncPath(b.blockPath(i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			b.last = i
		}
		return fsyncPath(b.dir)
	}
	err := fsyncPath(b.blockPath(b.last))
	if errors.Is(err, fs.ErrNotExist) {
		// Purged or compacted away: start over from the listing.
		b.last = 0
		return b.syncFiles()
	}
	if err != nil {
		return err
	}
	added := false
	for {
		err := fsyncPath(b.blockPath(b.last + 1))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return err
		}
		b.last++
		added = true
	}
	if added {
		return fsyncPath(b.dir)
	}
	return nil
}

func (b *blockSyncer) blockPath(i int) string {
	return filepath.Join(b.dir, strconv.Itoa(i)+".blk")
}

// blocks lists the block indexes in ascending order.
func (b *blockSyncer) blocks() ([]int, error) {
	es, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, err
	}
	var idx []int
	for _, e := range es {
		n, ok := strings.CutSuffix(e.Name(), ".blk")
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(n); err == nil && i > 0 {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	return idx, nil
}

// fsyncPath opens path read-only (a file or a directory) and fsyncs it.
func fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) {
		return nil // a file system that cannot fsync directories
	}
	return err
}

// syncAll fsyncs every file and directory of the embedded JetStream store:
// a barrier after which everything written before it survives power loss.
// It runs after the streams are created and before a snapshot is stored
// (a snapshot must not survive the writes it stands on).
func syncAll(storeDir string) error {
	return filepath.WalkDir(storeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if err := fsyncPath(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
}

// KillAfterGroupCommitsEnv names a test hook: with a number N, the process
// kills itself (SIGKILL) right after the N-th group commit that covered
// several records, before any of their appenders returns, so a test can
// check what a crash between a group commit and its ACKs leaves.
const KillAfterGroupCommitsEnv = "RADBRIDGE_TEST_KILL_AFTER_GROUP_COMMITS"

func killAfterGroupCommits() func(uint64) {
	n, err := strconv.Atoi(os.Getenv(KillAfterGroupCommitsEnv))
	if err != nil || n <= 0 {
		return nil
	}
	var count atomic.Int64
	return func(uint64) {
		if count.Add(1) >= int64(n) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}
