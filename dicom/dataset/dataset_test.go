package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// el appends an explicit VR little endian element.
func el(dst []byte, group, element uint16, vr string, v []byte) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, group)
	dst = binary.LittleEndian.AppendUint16(dst, element)
	dst = append(dst, vr...)
	switch vr {
	case "OB", "OW", "SQ", "UN", "UT":
		dst = append(dst, 0, 0)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
	default:
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(v)))
	}
	return append(dst, v...)
}

func sample() []byte {
	var b []byte
	b = el(b, 0x0008, 0x0005, "CS", []byte("ISO_IR 100"))
	b = el(b, 0x0008, 0x0018, "UI", []byte("1.2.3.4\x00"))
	b = el(b, 0x0010, 0x0010, "PN", []byte("M\xfcller^Hans "))
	item := el(nil, 0x0008, 0x1155, "UI", []byte("1.2.3\x00"))
	var seq []byte
	seq = binary.LittleEndian.AppendUint32(seq, 0xE000FFFE)
	seq = binary.LittleEndian.AppendUint32(seq, uint32(len(item)))
	seq = append(seq, item...)
	b = el(b, 0x0008, 0x1140, "SQ", seq)
	return b
}

func TestParse(t *testing.T) {
	ds, err := Parse(sample(), Syntax{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ds.String(Tag(0x0010, 0x0010)); got != "Müller^Hans" {
		t.Errorf("PatientName = %q", got)
	}
	items := ds.Items(Tag(0x0008, 0x1140))
	if len(items) != 1 || items[0].String(Tag(0x0008, 0x1155)) != "1.2.3" {
		t.Errorf("sequence items %v", items)
	}
}

func TestReadHeaderStopsAtPixelData(t *testing.T) {
	h := sample()
	full := el(append([]byte{}, h...), 0x7FE0, 0x0010, "OW", make([]byte, 1000))
	r := bytes.NewReader(full)
	got, err := ReadHeader(r, Syntax{}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, h) {
		t.Errorf("header %d bytes, want %d", len(got), len(h))
	}
	if r.Len() < 1000 {
		t.Errorf("pixel data consumed: %d bytes left", r.Len())
	}
	// Limit.
	if _, err := ReadHeader(bytes.NewReader(full), Syntax{}, 20); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("limit 20: %v", err)
	}
}

func TestCheckRefusesLengths(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
	}{
		{"OB 1 GiB", append(el(nil, 0x0009, 0x0010, "OB", nil)[:8], 0x00, 0x00, 0x00, 0x40)},
		{"DA undefined", []byte{0x08, 0x00, 0x20, 0x00, 'D', 'A', 0xFF, 0xFF}},
		{"non-item in sequence", el(nil, 0x0008, 0x1140, "SQ", el(nil, 0x0008, 0x0018, "UI", []byte("12")))},
		{"item beyond sequence", el(nil, 0x0008, 0x1140, "SQ", []byte{0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0x00, 0x00, 0x00})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Check(tt.b, Syntax{}); !errors.Is(err, ErrMalformed) {
				t.Errorf("Check = %v, want ErrMalformed", err)
			}
			if _, err := Parse(tt.b, Syntax{}); err == nil {
				t.Error("Parse accepted it")
			}
		})
	}
}

// pydicomFiles adds pydicom's test files as fuzz seeds when installed (they
// are used, never committed).
func pydicomSeeds(f *testing.F) {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		out, err := exec.Command(py, "-c", "import pydicom,os;print(os.path.dirname(pydicom.__file__))").Output()
		if err != nil {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "data", "*_files", "*.dcm"))
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil || len(b) > 64<<10 {
				continue
			}
			ts, body, err := SplitPart10(b)
			if err != nil {
				continue
			}
			s := SyntaxOf(ts)
			if s.Deflated {
				continue
			}
			mode := byte(0)
			if s.Implicit {
				mode = 1
			} else if s.BigEndian {
				mode = 2
			}
			f.Add(mode, body)
		}
		return
	}
}

// FuzzHeader: the bounded walker plus the library never panic, and never
// allocate far beyond the input size.
func FuzzHeader(f *testing.F) {
	f.Add(byte(0), sample())
	f.Add(byte(1), []byte{0x08, 0x00, 0x18, 0x00, 4, 0, 0, 0, '1', '.', '2', 0})
	pydicomSeeds(f)
	f.Fuzz(func(t *testing.T, mode byte, b []byte) {
		s := Syntax{Implicit: mode%3 == 1, BigEndian: mode%3 == 2}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _ = Parse(b, s)
		_, _ = ReadHeader(bytes.NewReader(b), s, 1<<20)
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(64*len(b))+(4<<20) {
			t.Errorf("allocated %d bytes for %d bytes of input", alloc, len(b))
		}
	})
}

// TestReadHeaderElementLimit: the sample's 6 elements (4 top-level, an
// item and the element in it) pass a limit of 6 and fail a limit of 5 with
// ErrTooManyElements, naming the limit.
func TestReadHeaderElementLimit(t *testing.T) {
	for _, tc := range []struct {
		limit int
		want  error
	}{{6, nil}, {5, ErrTooManyElements}} {
		_, err := ReadHeaderLimits(bytes.NewReader(sample()), Syntax{}, Limits{Bytes: 1 << 20, Elements: tc.limit})
		if !errors.Is(err, tc.want) || (err != nil && !strings.Contains(err.Error(), "more than 5 elements")) {
			t.Errorf("limit %d: %v, want %v", tc.limit, err, tc.want)
		}
	}
}
