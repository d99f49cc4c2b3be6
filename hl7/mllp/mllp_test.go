package mllp

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

type result struct {
	Msg string
	Err string
}

// readAll reads frames until io.EOF or a non-recoverable error.
func readAll(r *Reader) []result {
	var out []result
	for i := 0; i < 10000; i++ {
		msg, err := r.ReadMessage()
		res := result{Msg: string(msg)}
		if err != nil {
			res.Err = errName(err)
		}
		out = append(out, res)
		if err != nil && !errors.Is(err, ErrInvalidFrame) && !errors.Is(err, ErrMessageTooLarge) {
			break
		}
	}
	return out
}

func errName(err error) string {
	switch {
	case errors.Is(err, ErrInvalidFrame):
		return "invalid"
	case errors.Is(err, ErrMessageTooLarge):
		return "too large"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, io.EOF):
		return "EOF"
	}
	return err.Error()
}

func TestReader(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		max       int
		want      []result
		discarded int64
	}{
		{"one", "\x0bMSH|a\x1c\x0d", 100, []result{{Msg: "MSH|a"}, {Err: "EOF"}}, 0},
		{"two", "\x0bA\x1c\x0d\x0bB\x1c\x0d", 100, []result{{Msg: "A"}, {Msg: "B"}, {Err: "EOF"}}, 0},
		{"empty frame", "\x0b\x1c\x0d", 100, []result{{Msg: ""}, {Err: "EOF"}}, 0},
		{"garbage around", "xx\r\n\x0bA\x1c\x0dyyy\x0bB\x1c\x0dz", 100, []result{{Msg: "A"}, {Msg: "B"}, {Err: "EOF"}}, 8},
		{"new start abandons frame", "\x0bAB\x0bC\x1c\x0d", 100, []result{{Msg: "C"}, {Err: "EOF"}}, 3},
		{"EB without CR", "\x0bAB\x1cX\x0bC\x1c\x0d", 100, []result{{Err: "invalid"}, {Msg: "C"}, {Err: "EOF"}}, 5},
		{"EB then SB", "\x0bAB\x1c\x0bC\x1c\x0d", 100, []result{{Err: "invalid"}, {Msg: "C"}, {Err: "EOF"}}, 4},
		{"EOF in frame", "\x0bABC", 100, []result{{Err: "unexpected EOF"}}, 4},
		{"EOF after EB", "\x0bABC\x1c", 100, []result{{Err: "unexpected EOF"}}, 5},
		{"too large", "\x0bABCDEFGH\x1c\x0d\x0bOK\x1c\x0d", 4, []result{{Msg: "ABCD", Err: "too large"}, {Msg: "OK"}, {Err: "EOF"}}, 11},
		{"exactly max", "\x0bABCD\x1c\x0d", 4, []result{{Msg: "ABCD"}, {Err: "EOF"}}, 0},
		{"too large then EOF", "\x0bABCDEFGH", 4, []result{{Msg: "ABCD", Err: "too large"}, {Err: "unexpected EOF"}}, 9},
		{"too large then new SB", "\x0bABCDEF\x0bOK\x1c\x0d", 4, []result{{Msg: "ABCD", Err: "too large"}, {Msg: "OK"}, {Err: "EOF"}}, 7},
		{"only garbage", "hello", 100, []result{{Err: "EOF"}}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, mode := range []string{"whole", "one byte"} {
				var src io.Reader = bytes.NewReader([]byte(tt.in))
				if mode == "one byte" {
					src = iotest.OneByteReader(src)
				}
				r := NewReader(src, tt.max)
				got := readAll(r)
				if diff := cmp.Diff(got, tt.want); diff != "" {
					t.Errorf("%s: (-got +want):\n%s", mode, diff)
				}
				if r.Discarded() != tt.discarded {
					t.Errorf("%s: discarded %d, want %d", mode, r.Discarded(), tt.discarded)
				}
			}
		})
	}
}

func TestFrameStartFunc(t *testing.T) {
	r := NewReader(bytes.NewReader([]byte("zz\x0bA\x1c\x0d\x0bB\x1c\x0d")), 10)
	n := 0
	r.SetFrameStartFunc(func() { n++ })
	got := readAll(r)
	if len(got) != 3 || n != 2 {
		t.Errorf("got %v results and %d starts, want 3 and 2", got, n)
	}
}

// TestFrameRestartKeepsDeadline: a start block inside an unfinished frame
// starts the frame over without calling the frame start function again,
// so a peer cannot extend its read deadline by restarting frames.
func TestFrameRestartKeepsDeadline(t *testing.T) {
	r := NewReader(bytes.NewReader([]byte("\x0bA\x0bB\x0bC\x1c\x0d")), 10)
	n := 0
	r.SetFrameStartFunc(func() { n++ })
	got, err := r.ReadMessage()
	if err != nil || string(got) != "C" || n != 1 {
		t.Errorf("got %q, %v and %d starts, want \"C\", nil and 1", got, err, n)
	}
}

func TestWriteRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, m := range []string{"MSH|1\r", "", "MSH|2\rPID|x\r"} {
		if err := w.WriteMessage([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteMessage(&buf, []byte("bad\x1c")); !errors.Is(err, ErrInvalidContent) {
		t.Errorf("framing byte in content: got %v, want ErrInvalidContent", err)
	}
	got := readAll(NewReader(&buf, 100))
	want := []result{{Msg: "MSH|1\r"}, {Msg: ""}, {Msg: "MSH|2\rPID|x\r"}, {Err: "EOF"}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
}

func TestReadErrorIsWrapped(t *testing.T) {
	boom := errors.New("boom")
	_, err := NewReader(iotest.ErrReader(boom), 10).ReadMessage()
	if !errors.Is(err, boom) {
		t.Errorf("got %v, want wrapping boom", err)
	}
}

// splitReader returns its input in chunks ending at the given offsets.
type splitReader struct {
	data   []byte
	splits []int
	pos    int
}

func (s *splitReader) Read(p []byte) (int, error) {
	if s.pos >= len(s.data) {
		return 0, io.EOF
	}
	end := len(s.data)
	for len(s.splits) > 0 {
		c := s.splits[0]
		if c <= s.pos {
			s.splits = s.splits[1:]
			continue
		}
		end = min(end, c)
		break
	}
	end = min(end, s.pos+len(p))
	n := copy(p, s.data[s.pos:end])
	s.pos += n
	return n, nil
}

// FuzzReader checks that the same input read whole and split at arbitrary
// points (taken from the fuzzer's second input) gives the same frames,
// errors and discarded count, and that framing written by WriteMessage
// reads back.
func FuzzReader(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*.hl7"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		var framed bytes.Buffer
		_ = WriteMessage(&framed, b)
		framed.WriteString("junk")
		_ = WriteMessage(&framed, b)
		f.Add(framed.Bytes(), []byte{3, 200, 7, 1})
	}
	f.Add([]byte("\x0bAB\x1cX\x0bC\x1c\x0d\x0b\x0b\x1c"), []byte{1, 1, 1})
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		const max = 64
		want := NewReader(bytes.NewReader(in), max)
		wantRes := readAll(want)
		var splits []int
		pos := 0
		for _, c := range cuts {
			pos += int(c) + 1
			splits = append(splits, pos)
		}
		got := NewReader(&splitReader{data: in, splits: splits}, max)
		gotRes := readAll(got)
		if diff := cmp.Diff(gotRes, wantRes); diff != "" {
			t.Fatalf("split read differs (-split +whole):\n%s", diff)
		}
		if got.Discarded() != want.Discarded() {
			t.Fatalf("discarded: split %d, whole %d", got.Discarded(), want.Discarded())
		}
		var total int64
		for _, r := range wantRes {
			if r.Err == "" {
				total += int64(len(r.Msg)) + 3
			}
		}
		if total+want.Discarded() > int64(len(in)) {
			t.Fatalf("accounted %d+%d bytes of %d", total, want.Discarded(), len(in))
		}
		// Content without framing bytes round-trips.
		clean := bytes.Map(func(r rune) rune {
			if r == StartBlock || r == EndBlock {
				return -1
			}
			return r
		}, in)
		if len(clean) <= max && bytes.Equal(clean, bytes.ToValidUTF8(clean, nil)) {
			var buf bytes.Buffer
			if err := WriteMessage(&buf, clean); err != nil {
				t.Fatal(err)
			}
			msg, err := NewReader(&buf, max).ReadMessage()
			if err != nil || !bytes.Equal(msg, clean) {
				t.Fatalf("round trip: %q, %v", msg, err)
			}
		}
	})
}
