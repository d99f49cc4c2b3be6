// Package dataset reads the header of a DICOM data set (DICOM PS3.5
// sections 7 and 8 for the encoding, PS3.10 section 7 for the File Meta
// Information) with bounded memory.
//
// ReadHeader splits a streamed data set at Pixel Data (7FE0,0010): the
// elements before it are buffered (up to a limit), the pixel data is left
// in the stream for the caller to copy or discard. Parse checks every
// element length of a header against the bytes present before handing it
// to github.com/suyashkumar/dicom, which allocates an element's declared
// length before reading it: the walker here mirrors that library's reading
// rules (VR lookup, length field sizes, sequences, items, undefined lengths)
// so that no length the library will allocate exceeds the input.
package dataset

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// Errors; compare with errors.Is.
var (
	// ErrHeaderTooLarge: the elements before Pixel Data exceed the limit.
	ErrHeaderTooLarge = errors.New("data set header exceeds limit")
	// ErrMalformed: an element length or structure is invalid.
	ErrMalformed = errors.New("malformed data set")
	// ErrTransferSyntax: the transfer syntax is not supported.
	ErrTransferSyntax = errors.New("unsupported transfer syntax")
	// ErrTooManyElements: the header holds more elements than the limit.
	ErrTooManyElements = errors.New("data set header has too many elements")
)

// DefaultMaxElements is Limits.Elements when unset. Parsing costs about
// 125 bytes of heap per element (measured: 520,000 tiny elements, under
// the 4 MiB header limit, took 65 MB), so this bounds a header's parse to
// about 12 MB.
const DefaultMaxElements = 100000

// Limits bound what ReadHeaderLimits holds in memory.
type Limits struct {
	// Bytes bounds the header's bytes (required).
	Bytes int
	// Elements bounds its elements, nested ones and item delimiters
	// included (0: DefaultMaxElements).
	Elements int
}

const (
	undefinedLength = 0xFFFFFFFF
	maxDepth        = 16
	itemTag         = 0xFFFEE000
	itemDelimTag    = 0xFFFEE00D
	seqDelimTag     = 0xFFFEE0DD
	pixelDataTag    = 0x7FE00010
	overlayDataTag  = 0x60003000
)

// Syntax is how a transfer syntax encodes the data set itself (PS3.5
// section 10).
type Syntax struct {
	Implicit  bool
	BigEndian bool
	Deflated  bool
}

func (s Syntax) order() binary.ByteOrder {
	if s.BigEndian {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// source is the byte window the walker reads: either a fixed slice (Parse)
// or a stream filled on demand up to max bytes (ReadHeader).
type source struct {
	buf []byte
	r   io.Reader
	max int
	eof bool
}

// need makes sure buf holds at least n bytes.
func (s *source) need(n uint64) error {
	if n <= uint64(len(s.buf)) {
		return nil
	}
	if s.r == nil || s.eof {
		return fmt.Errorf("need %d bytes, have %d: %w", n, len(s.buf), ErrMalformed)
	}
	if n > uint64(s.max) {
		return fmt.Errorf("need %d bytes, limit %d: %w", n, s.max, ErrHeaderTooLarge)
	}
	have := len(s.buf)
	if uint64(cap(s.buf)) < n {
		c := max(2*cap(s.buf), 4096)
		for uint64(c) < n {
			c *= 2
		}
		c = min(c, s.max)
		nb := make([]byte, have, c)
		copy(nb, s.buf)
		s.buf = nb
	}
	s.buf = s.buf[:n]
	m, err := io.ReadFull(s.r, s.buf[have:])
	s.buf = s.buf[:have+m]
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			s.eof = true
			return fmt.Errorf("need %d bytes, data set ends at %d: %w", n, len(s.buf), ErrMalformed)
		}
		return fmt.Errorf("read data set: %w", err)
	}
	return nil
}

// walker mirrors the element reading of github.com/suyashkumar/dicom
// v1.1.0 (read.go: readElement, readVR, readVL, readValue) without
// allocating anything but the source window.
type walker struct {
	src      *source
	pos      uint64
	implicit bool
	bo       binary.ByteOrder
	// elems counts the elements walked; beyond maxElems (when not 0) the
	// walk fails with ErrTooManyElements.
	elems, maxElems int
}

func (w *walker) u16(at uint64) uint16 { return w.bo.Uint16(w.src.buf[at:]) }
func (w *walker) u32(at uint64) uint32 { return w.bo.Uint32(w.src.buf[at:]) }

// take requires n more bytes before end and skips them.
func (w *walker) take(n, end uint64) error {
	if w.pos+n > end {
		return fmt.Errorf("length %d at offset %d exceeds its container (ends at %d): %w", n, w.pos, end, ErrMalformed)
	}
	if err := w.src.need(w.pos + n); err != nil {
		return err
	}
	w.pos += n
	return nil
}

// header reads an element's tag, VR and length as the library does.
func (w *walker) header(end uint64) (t tag.Tag, vr string, vl uint32, err error) {
	start := w.pos
	if err = w.take(4, end); err != nil {
		return
	}
	t = tag.Tag{Group: w.u16(start), Element: w.u16(start + 2)}
	implicit := w.implicit || t == tag.Item
	if implicit {
		vr = tag.UnknownVR
		if info, ferr := tag.Find(t); ferr == nil {
			switch info.Tag {
			case tag.PixelData, tag.OverlayData:
				vr = "OW"
			default:
				if len(info.VRs) > 0 {
					vr = info.VRs[0]
				}
			}
		}
		at := w.pos
		if err = w.take(4, end); err != nil {
			return
		}
		vl = w.u32(at)
		return
	}
	at := w.pos
	if err = w.take(2, end); err != nil {
		return
	}
	vr = string(w.src.buf[at : at+2])
	switch vr {
	case "NA", "OB", "OD", "OF", "OL", "OW", "SQ", "UN", "UC", "UR", "UT":
		at = w.pos + 2
		if err = w.take(6, end); err != nil {
			return
		}
		vl = w.u32(at)
		if vl == undefinedLength && (vr == "UC" || vr == "UR" || vr == "UT") {
			err = fmt.Errorf("element %v: %s with undefined length: %w", t, vr, ErrMalformed)
		}
	default:
		at = w.pos
		if err = w.take(2, end); err != nil {
			return
		}
		vl = uint32(w.u16(at))
		if vl == 0xFFFF {
			vl = undefinedLength
		}
	}
	return
}

// element walks one element (and everything nested in it).
func (w *walker) element(end uint64, depth int) (tag.Tag, error) {
	if depth > maxDepth {
		return tag.Tag{}, fmt.Errorf("nesting deeper than %d: %w", maxDepth, ErrMalformed)
	}
	if w.elems++; w.maxElems > 0 && w.elems > w.maxElems {
		return tag.Tag{}, fmt.Errorf("more than %d elements: %w", w.maxElems, ErrTooManyElements)
	}
	t, vr, vl, err := w.header(end)
	if err != nil {
		return t, err
	}
	switch tag.GetVRKind(t, vr) {
	case tag.VRItem:
		return t, w.items(t, vl, end, depth, false)
	case tag.VRSequence:
		return t, w.items(t, vl, end, depth, true)
	case tag.VRUnknown:
		if vl == undefinedLength {
			return t, w.items(t, vl, end, depth, true)
		}
		return t, w.take(uint64(vl), end)
	case tag.VRBytes:
		if vl == undefinedLength {
			return t, w.rawItems(end, false)
		}
		if vr == "OW" && vl%2 != 0 {
			return t, fmt.Errorf("element %v: OW with odd length %d: %w", t, vl, ErrMalformed)
		}
		return t, w.take(uint64(vl), end)
	case tag.VRPixelData:
		if vl == undefinedLength {
			return t, w.rawItems(end, true)
		}
		return t, w.take(uint64(vl), end)
	default:
		if vl == undefinedLength {
			return t, fmt.Errorf("element %v: VR %q with undefined length: %w", t, vr, ErrMalformed)
		}
		return t, w.take(uint64(vl), end)
	}
}

// items walks a sequence (seq) or an item's content.
func (w *walker) items(t tag.Tag, vl uint32, end uint64, depth int, seq bool) error {
	delim := tag.ItemDelimitationItem
	if seq {
		delim = tag.SequenceDelimitationItem
	}
	if vl == undefinedLength {
		for {
			sub, err := w.element(end, depth+1)
			if err != nil {
				return err
			}
			if sub == delim {
				return nil
			}
			if seq && sub != tag.Item {
				return fmt.Errorf("sequence %v holds %v, not an item: %w", t, sub, ErrMalformed)
			}
		}
	}
	if w.pos+uint64(vl) > end {
		return fmt.Errorf("element %v: length %d exceeds its container: %w", t, vl, ErrMalformed)
	}
	inner := w.pos + uint64(vl)
	for w.pos < inner {
		sub, err := w.element(inner, depth+1)
		if err != nil {
			return err
		}
		if seq && sub != tag.Item {
			return fmt.Errorf("sequence %v holds %v, not an item: %w", t, sub, ErrMalformed)
		}
	}
	return nil
}

// rawItems walks the items of an undefined-length OB/OW/pixel data value
// (PS3.5 section A.4; the library's readRawItem loop). It is stricter than
// the library: anything but defined-length items ended by a sequence
// delimiter is refused, so the library never meets (and logs) oddities.
func (w *walker) rawItems(end uint64, pixel bool) error {
	for first := true; ; first = false {
		start := w.pos
		if err := w.take(8, end); err != nil {
			return err
		}
		t := tag.Tag{Group: w.u16(start), Element: w.u16(start + 2)}
		vl := w.u32(start + 4)
		switch {
		case t == tag.SequenceDelimitationItem && vl == 0 && !(pixel && first):
			// Encapsulated pixel data starts with its Basic Offset Table
			// item (PS3.5 section A.4); the library skips the first item
			// whatever it is.
			return nil
		case t != tag.Item || vl == undefinedLength:
			return fmt.Errorf("encapsulated value holds %v length %d, not a fragment item: %w", t, vl, ErrMalformed)
		}
		if err := w.take(uint64(vl), end); err != nil {
			return err
		}
	}
}

// Check walks every element of an encoded data set (no File Meta) and
// returns an error if any length or structure could make the library read
// or allocate beyond the input.
func Check(b []byte, s Syntax) error {
	if s.Deflated {
		return fmt.Errorf("check: deflated data must be inflated first: %w", ErrTransferSyntax)
	}
	w := &walker{src: &source{buf: b}, implicit: s.Implicit, bo: s.order()}
	end := uint64(len(b))
	for w.pos < end {
		if _, err := w.element(end, 0); err != nil {
			return fmt.Errorf("check data set: %w", err)
		}
	}
	return nil
}

// ReadHeader reads from r the top-level elements that precede Pixel Data or
// any element of group 7FE0 and above (or the whole data set if there is
// none) and returns them. It reads at most limit bytes into memory: a longer
// header returns ErrHeaderTooLarge. The caller reads the rest of r (the
// bytes after the returned header, minus up to 4 bytes already consumed to
// see the next tag). For a deflated syntax, r must yield inflated bytes.
func ReadHeader(r io.Reader, s Syntax, limit int) ([]byte, error) {
	return ReadHeaderLimits(r, s, Limits{Bytes: limit})
}

// ReadHeaderLimits is ReadHeader bounding the elements too: a header with
// more than lim.Elements returns ErrTooManyElements.
func ReadHeaderLimits(r io.Reader, s Syntax, lim Limits) ([]byte, error) {
	if lim.Elements <= 0 {
		lim.Elements = DefaultMaxElements
	}
	src := &source{r: r, max: lim.Bytes}
	w := &walker{src: src, implicit: s.Implicit, bo: s.order(), maxElems: lim.Elements}
	const unbounded = ^uint64(0) >> 1
	for {
		start := w.pos
		if err := src.need(start + 4); err != nil {
			if src.eof && uint64(len(src.buf)) == start {
				return src.buf[:start], nil
			}
			return nil, fmt.Errorf("read header: %w", err)
		}
		if w.u16(start) >= 0x7FE0 && w.u16(start) != 0xFFFE {
			return src.buf[:start], nil
		}
		if _, err := w.element(unbounded, 0); err != nil {
			return nil, fmt.Errorf("read header: %w", err)
		}
	}
}
