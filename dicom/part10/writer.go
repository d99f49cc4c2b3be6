package scp

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// fileMeta returns the 128-byte preamble, "DICM" and the File Meta
// Information group 0002 with its group length (PS3.10 section 7.1).
func fileMeta(sopClass, sopInstance, transferSyntax, sourceAE string) []byte {
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

// sweepIncoming removes the temporary files (.incoming-*.dcm) in dir that
// were not modified for olderThan: a process killed during a reception
// (kill -9, power loss) leaves its file behind, and nothing else would
// remove it. It returns how many it removed.
func sweepIncoming(dir string, olderThan time.Duration) int {
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

// partFile is a Part-10 file being received: a temporary file in the store
// directory, renamed into place by commit.
type partFile struct {
	dir  string
	f    *os.File
	done bool
	werr error // the first write error; commit reports it
}

// Write appends to the file. It never fails: the first error is kept and
// reported by commit, so a full disk does not stop the caller from reading
// the rest of the data set off the wire.
func (p *partFile) Write(b []byte) (int, error) {
	if p.werr == nil {
		_, p.werr = p.f.Write(b)
	}
	return len(b), nil
}

func createPartFile(dir string) (*partFile, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create store dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".incoming-*.dcm")
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	return &partFile{dir: dir, f: f}, nil
}

// commit fsyncs the file, renames it to <dir>/<study>/<series>/<sop>.dcm
// and fsyncs the directories it changed. The UIDs must be valid (digits
// and dots), which also keeps the path inside dir.
func (p *partFile) commit(study, series, sop string) (string, error) {
	if p.werr != nil {
		return "", fmt.Errorf("write %s: %w", p.f.Name(), p.werr)
	}
	if err := p.f.Sync(); err != nil {
		return "", fmt.Errorf("fsync %s: %w", p.f.Name(), err)
	}
	if err := p.f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", p.f.Name(), err)
	}
	studyDir := filepath.Join(p.dir, study)
	seriesDir := filepath.Join(studyDir, series)
	newStudy, newSeries := !exists(studyDir), !exists(seriesDir)
	if err := os.MkdirAll(seriesDir, 0o750); err != nil {
		return "", fmt.Errorf("create series dir: %w", err)
	}
	dst := filepath.Join(seriesDir, sop+".dcm")
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

// discard removes the temporary file unless it was committed.
func (p *partFile) discard() {
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
