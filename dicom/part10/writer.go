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
}

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
		_, p.werr = p.f.Write(b)
	}
	return len(b), nil
}

// Commit fails with the first write error, else fsyncs the file, renames
// it to Path(dir, study, series, sop) and fsyncs the directories it
// changed. The UIDs must be valid (ValidUID), which also keeps the path
// inside dir.
func (p *File) Commit(study, series, sop string) (string, error) {
	if p.werr != nil {
		return "", fmt.Errorf("write %s: %w", p.f.Name(), p.werr)
	}
	if err := p.f.Sync(); err != nil {
		return "", fmt.Errorf("fsync %s: %w", p.f.Name(), err)
	}
	if err := p.f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", p.f.Name(), err)
	}
	dst := Path(p.dir, study, series, sop)
	seriesDir := filepath.Dir(dst)
	studyDir := filepath.Dir(seriesDir)
	newStudy, newSeries := !exists(studyDir), !exists(seriesDir)
	if err := os.MkdirAll(seriesDir, 0o750); err != nil {
		return "", fmt.Errorf("create series dir: %w", err)
	}
	if err := os.Rename(p.f.Name(), dst); err != nil {
		return "", fmt.Errorf("rename into place: %w", err)
	}
	p.done = true
	// The rename is durable once its directory is synced; a directory we
	// created is durable once its parent is.
	dirs := []string{seriesDir}
	if newSeries {
		dirs = append(dirs, studyDir)
	}
	if newStudy {
		dirs = append(dirs, p.dir)
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return "", err
		}
	}
	return dst, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
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
