package scu

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"radbridge/dicom/dimse"
)

// ErrNotDICOM reports a file without the Part-10 "DICM" prefix or without
// the File Meta Information elements a C-STORE needs.
var ErrNotDICOM = errors.New("not a DICOM Part-10 file")

// maxMeta bounds the File Meta Information group we read.
const maxMeta = 64 * 1024

// FileMeta is what a C-STORE needs from a Part-10 file's File Meta
// Information (PS3.10 section 7.1).
type FileMeta struct {
	SOPClassUID, SOPInstanceUID, TransferSyntaxUID string
	// Offset is where the data set starts in the file.
	Offset int64
}

// ReadFileMeta reads the File Meta Information of the Part-10 file at path.
func ReadFileMeta(path string) (FileMeta, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileMeta{}, err
	}
	defer f.Close()
	return readMeta(bufio.NewReader(f))
}

// readMeta reads preamble, prefix and group 0002 (explicit VR little
// endian) from r, leaving r at the start of the data set.
func readMeta(r *bufio.Reader) (FileMeta, error) {
	var m FileMeta
	pre := make([]byte, 132)
	if _, err := io.ReadFull(r, pre); err != nil || string(pre[128:]) != "DICM" {
		return m, fmt.Errorf("read file meta: no DICM prefix: %w", ErrNotDICOM)
	}
	m.Offset = 132
	for {
		h, err := r.Peek(8)
		if err != nil || binary.LittleEndian.Uint16(h) != 0x0002 {
			break
		}
		el := binary.LittleEndian.Uint16(h[2:])
		var n, hl int
		switch string(h[4:6]) {
		case "OB", "OD", "OF", "OL", "OW", "SQ", "UN", "UC", "UR", "UT":
			h, err = r.Peek(12)
			if err != nil {
				return m, fmt.Errorf("read file meta: truncated: %w", ErrNotDICOM)
			}
			n, hl = int(binary.LittleEndian.Uint32(h[8:])), 12
		default:
			n, hl = int(binary.LittleEndian.Uint16(h[6:])), 8
		}
		if n < 0 || m.Offset+int64(hl+n) > maxMeta {
			return m, fmt.Errorf("read file meta: element (0002,%04x) length %d: %w", el, n, ErrNotDICOM)
		}
		b := make([]byte, hl+n)
		if _, err := io.ReadFull(r, b); err != nil {
			return m, fmt.Errorf("read file meta: truncated: %w", ErrNotDICOM)
		}
		m.Offset += int64(hl + n)
		v := strings.TrimRight(string(b[hl:]), "\x00 ")
		switch el {
		case 0x0002:
			m.SOPClassUID = v
		case 0x0003:
			m.SOPInstanceUID = v
		case 0x0010:
			m.TransferSyntaxUID = v
		}
	}
	if m.SOPClassUID == "" || m.SOPInstanceUID == "" || m.TransferSyntaxUID == "" {
		return m, fmt.Errorf("read file meta: SOP class, SOP instance or transfer syntax missing: %w", ErrNotDICOM)
	}
	return m, nil
}

// StoreFile sends the Part-10 file at path with C-STORE, on the accepted
// presentation context for its SOP class and transfer syntax; the data set
// is streamed from the file. It returns the file's meta and the status.
func (c *Client) StoreFile(ctx context.Context, path string) (FileMeta, dimse.Status, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileMeta{}, 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64*1024)
	m, err := readMeta(r)
	if err != nil {
		return m, 0, fmt.Errorf("%s: %w", path, err)
	}
	st, err := c.Store(ctx, m.SOPClassUID, m.SOPInstanceUID, m.TransferSyntaxUID, r)
	if err != nil {
		return m, st, fmt.Errorf("%s: %w", path, err)
	}
	return m, st, nil
}
