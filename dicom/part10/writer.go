package part10

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Our implementation identification, in association negotiation (PS3.7
// annex D.3.3.2) and in the File Meta Information of the files we write.
// The class UID is a UUID-derived UID (PS3.5 annex B.2).
const (
	ImplementationClassUID    = "2.25.175144116734447533891792358872471728825"
	ImplementationVersionName = "RADBRIDGE_1"
)

// Path is where a store directory holds an instance:
// <dir>/<study>/<series>/<sop>.dcm. The UIDs must be valid (ValidUID),
// which also keeps the path inside dir.
func Path(dir, study, series, sop string) string {
	return filepath.Join(dir, study, series, sop+".dcm")
}

// FileMeta returns the 128-byte preamble, "DICM" and the File Meta
// Information group 0002 with its group length (PS3.10 section 7.1).
func FileMeta(sopClass, sopInstance, transferSyntax, sourceAE string) []byte {
	var el []byte
	// (0002,0001) File Meta Information Version, OB 00 01.
	el = append(el, 0x02, 0x00, 0x01, 0x00, 'O', 'B', 0, 0, 2, 0, 0, 0, 0x00, 0x01)
	el = metaString(el, 0x0002, "UI", sopClass, 0)
	el = metaString(el, 0x0003, "UI", sopInstance, 0)
	el = metaString(el, 0x0010, "UI", transferSyntax, 0)
	el = metaString(el, 0x0012, "UI", ImplementationClassUID, 0)
	el = metaString(el, 0x0013, "SH", ImplementationVersionName, ' ')
	if sourceAE != "" {
		el = metaString(el, 0x0016, "AE", sourceAE, ' ')
	}
	b := make([]byte, 128, 128+4+12+len(el))
	b = append(b, "DICM"...)
	b = append(b, 0x02, 0x00, 0x00, 0x00, 'U', 'L', 4, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(el)))
	return append(b, el...)
}

func metaString(dst []byte, element uint16, vr, v string, pad byte) []byte {
	if len(v)%2 == 1 {
		v += string(pad)
	}
	dst = append(dst, 0x02, 0x00)
	dst = binary.LittleEndian.AppendUint16(dst, element)
	dst = append(dst, vr...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(v)))
	return append(dst, v...)
}

// SweepIncoming removes the temporary files (.incoming-*.dcm) in dir that
// were not modified for olderThan: a process killed during a reception
// (kill -9, power loss) leaves its file behind, and nothing else would
// remove it. It returns how many it removed.
func SweepIncoming(dir string, olderThan time.Duration) int {
	names, _ := filepath.Glob(filepath.Join(dir, ".incoming-*.dcm"))
	n := 0
	for _, name := range names {
		if fi, err := os.Lstat(name); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > olderThan {
			if os.Remove(name) == nil {
				n++
			}
		}
	}
	return n
}

// File is a Part-10 file being received into a store directory: a
// temporary file, renamed into place (Path) by Commit or removed by
// Discard.
type File struct {
	dir  string
	f    *os.File
	done bool
	werr error // the first write error; Commit reports it

	// n is the bytes written; flushed is where the write-back started
	// by Write ends (see writeBack).
	n, flushed int64
}

// writeBackChunk is how much a File lets accumulate in the page cache
// before it starts writing it to disk (writeBack), while the rest of the
// data set is still arriving: the fsync in Commit then waits only for the
// tail, not for the whole of a large instance.
const writeBackChunk = 1 << 20

// Create starts a Part-10 file in the store directory dir, creating dir
// if needed.
func Create(dir string) (*File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create store dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".incoming-*.dcm")
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	return &File{dir: dir, f: f}, nil
}

// Write appends to the file. It never fails: the first error is kept and
// reported by Commit, so a full disk does not stop the caller from reading
// the rest of the data set off the wire.
func (p *File) Write(b []byte) (int, error) {
	if p.werr == nil {
		var n int
		n, p.werr = p.f.Write(b)
		p.n += int64(n)
		if p.n-p.flushed >= writeBackChunk {
			// Only a hint to start the write-out: durability is still
			// Commit's fsync, which covers every byte.
			writeBack(p.f, p.flushed, p.n-p.flushed)
			p.flushed = p.n
		}
	}
	return len(b), nil
}

// Commit fails with the first write error, else makes the file's data
// durable (fdatasync), renames it to Path(dir, study, series, sop) and
// fsyncs the directories it changed, sharing those fsyncs with concurrent
// commits (syncDir). It returns only when the file, its name and the
// directories above it are durable. The UIDs must be valid (ValidUID),
// which also keeps the path inside dir.
func (p *File) Commit(study, series, sop string) (string, error) {
	if p.werr != nil {
		return "", fmt.Errorf("write %s: %w", p.f.Name(), p.werr)
	}
	// fdatasync: the data and what is needed to read it back (a new
	// file's size and blocks); not its times. The name is made durable
	// by the directory fsyncs below, after the rename.
	if err := syncData(p.f); err != nil {
		return "", fmt.Errorf("fsync %s: %w", p.f.Name(), err)
	}
	if err := p.f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", p.f.Name(), err)
	}
	dst := Path(p.dir, study, series, sop)
	seriesDir := filepath.Dir(dst)
	if !exists(seriesDir) {
		// Made now (again, if someone removed it): its entries in the
		// study directory and the store directory are not durable, whatever
		// this process synced before under the same names.
		forgetLinked(seriesDir, filepath.Dir(seriesDir))
	}
	if err := os.MkdirAll(seriesDir, 0o750); err != nil {
		return "", fmt.Errorf("create series dir: %w", err)
	}
	if err := os.Rename(p.f.Name(), dst); err != nil {
		return "", fmt.Errorf("rename into place: %w", err)
	}
	p.done = true
	// The rename is durable once its directory is synced after it; the
	// series and study directories once their parents are (syncLink,
	// once per directory in this process). The temporary name's removal
	// from dir need not be: a leftover name is swept (SweepIncoming).
	if err := syncDir(seriesDir); err != nil {
		return "", err
	}
	if err := syncLink(seriesDir, p.dir); err != nil {
		return "", err
	}
	return dst, nil
}

// Discard removes the temporary file unless it was committed.
func (p *File) Discard() {
	if p.done {
		return
	}
	_ = p.f.Close()
	_ = os.Remove(p.f.Name())
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// CountingReader counts the bytes read through it: the size of a received
// instance as it arrived.
type CountingReader struct {
	R io.Reader
	N int64
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}

// Capture keeps what is written to it up to Max bytes, then nothing
// (Buf is nil and Off is true): a received instance kept in memory
// instead of a File.
type Capture struct {
	Buf []byte
	Max int
	Off bool
}

func (c *Capture) Write(p []byte) (int, error) {
	if !c.Off {
		if len(c.Buf)+len(p) > c.Max {
			c.Stop()
		} else {
			c.Buf = append(c.Buf, p...)
		}
	}
	return len(p), nil
}

// Stop drops what was kept and keeps nothing more.
func (c *Capture) Stop() { c.Off, c.Buf = true, nil }
