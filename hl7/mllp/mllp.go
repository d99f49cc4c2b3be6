// Package mllp implements the Minimal Lower Layer Protocol framing of HL7
// v2 messages (HL7 v2.5.1 Implementation Guide, Appendix C "Minimal Lower
// Layer Protocol", release 2 block format): each message is sent as
//
//	<SB=0x0B> message bytes <EB=0x1C><CR=0x0D>
//
// The package only moves bytes: it neither serves connections nor logs.
//
// Reading rules (the Reader):
//   - Bytes outside a frame are discarded and counted (Reader.Discarded).
//   - A start block inside a frame starts a new frame; the bytes of the
//     unfinished one are discarded and counted.
//   - An end block not followed by a carriage return is a framing error:
//     ReadMessage returns ErrInvalidFrame, the frame's bytes are counted
//     as discarded, and the next ReadMessage resumes scanning for a start
//     block at the byte after the end block. The spec forbids 0x1C inside
//     message content, so the frame cannot be "continued".
//   - A frame whose content exceeds the maximum size makes ReadMessage
//     return the first maxSize bytes with ErrMessageTooLarge (so that the
//     caller can still read its MSH to address a reject); the rest of the
//     frame is discarded by the next ReadMessage.
//   - End of input outside a frame is io.EOF; inside a frame
//     io.ErrUnexpectedEOF.
package mllp

import (
	"errors"
	"fmt"
	"io"
)

// Framing bytes.
const (
	StartBlock     = 0x0B
	EndBlock       = 0x1C
	CarriageReturn = 0x0D
)

// Errors returned by ReadMessage and WriteMessage.
var (
	ErrMessageTooLarge = errors.New("mllp: message too large")
	ErrInvalidFrame    = errors.New("mllp: end block not followed by carriage return")
	ErrInvalidContent  = errors.New("mllp: message contains a framing byte")
)

const readChunk = 4096

// Reader reads MLLP frames from an io.Reader. It buffers its input; it is
// not safe for concurrent use.
type Reader struct {
	r         io.Reader
	max       int
	buf       []byte
	rpos      int
	wpos      int
	discarded int64
	skipping  bool // inside an oversized frame, dropping its rest
	onStart   func()
}

// NewReader returns a Reader reading frames of at most maxSize content
// bytes from r. A maxSize below 1 means 1 MiB.
func NewReader(r io.Reader, maxSize int) *Reader {
	if maxSize < 1 {
		maxSize = 1 << 20
	}
	return &Reader{r: r, max: maxSize, buf: make([]byte, readChunk)}
}

// SetFrameStartFunc sets f to be called when ReadMessage finds the start
// block of a frame, e.g. to switch a connection from its idle deadline to
// its read deadline. A start block that abandons an unfinished frame does
// not call f again, so a peer restarting its frame over and over cannot
// extend such a deadline.
func (r *Reader) SetFrameStartFunc(f func()) { r.onStart = f }

// Discarded returns how many bytes were dropped so far: bytes outside
// frames and the content of abandoned, invalid and oversized frames.
func (r *Reader) Discarded() int64 { return r.discarded }

// fill reads more input into the buffer, which must be empty.
func (r *Reader) fill() error {
	r.rpos, r.wpos = 0, 0
	for i := 0; i < 100; i++ {
		n, err := r.r.Read(r.buf)
		r.wpos = n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// ReadMessage returns the content of the next frame, in a new slice the
// caller owns. See the package documentation for the error cases.
func (r *Reader) ReadMessage() ([]byte, error) {
	if r.skipping {
		if err := r.skipFrame(); err != nil {
			return nil, err
		}
	}
	// Find a start block.
	for {
		if r.rpos == r.wpos {
			if err := r.fill(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil, io.EOF
				}
				return nil, fmt.Errorf("read frame: %w", err)
			}
		}
		data := r.buf[r.rpos:r.wpos]
		i := indexByte(data, StartBlock)
		if i >= 0 {
			r.discarded += int64(i)
			r.rpos += i + 1
			break
		}
		r.discarded += int64(len(data))
		r.rpos = r.wpos
	}
	return r.readBody()
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// readBody reads after a start block up to and including EB CR.
func (r *Reader) readBody() ([]byte, error) {
	if r.onStart != nil {
		r.onStart()
	}
	var msg []byte
	for {
		if r.rpos == r.wpos {
			if err := r.fill(); err != nil {
				r.discarded += int64(len(msg)) + 1
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("read frame: %w", err)
			}
		}
		data := r.buf[r.rpos:r.wpos]
		i := 0
		for i < len(data) && data[i] != EndBlock && data[i] != StartBlock {
			i++
		}
		if len(msg)+i > r.max {
			keep := r.max - len(msg)
			msg = append(msg, data[:keep]...)
			r.discarded += int64(len(msg)) + 1
			r.rpos += keep
			r.skipping = true
			return msg, ErrMessageTooLarge
		}
		msg = append(msg, data[:i]...)
		r.rpos += i
		if i == len(data) {
			continue
		}
		r.rpos++ // the framing byte
		if data[i] == StartBlock {
			r.discarded += int64(len(msg)) + 1 // the abandoned frame and its start block
			// The frame start function is not called again: a peer that
			// keeps restarting its frame gets no more time.
			msg = msg[:0]
			continue
		}
		// End block: the next byte must be CR.
		if r.rpos == r.wpos {
			if err := r.fill(); err != nil {
				r.discarded += int64(len(msg)) + 2
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("read frame: %w", err)
			}
		}
		if r.buf[r.rpos] != CarriageReturn {
			r.discarded += int64(len(msg)) + 2 // content, SB and EB
			return nil, ErrInvalidFrame
		}
		r.rpos++
		if msg == nil {
			msg = []byte{}
		}
		return msg, nil
	}
}

// skipFrame drops the rest of an oversized frame, up to its EB CR or to a
// new start block (left unread).
func (r *Reader) skipFrame() error {
	for {
		if r.rpos == r.wpos {
			if err := r.fill(); err != nil {
				if errors.Is(err, io.EOF) {
					r.skipping = false
					return io.ErrUnexpectedEOF
				}
				return fmt.Errorf("read frame: %w", err)
			}
		}
		data := r.buf[r.rpos:r.wpos]
		for i, c := range data {
			switch c {
			case StartBlock:
				r.discarded += int64(i)
				r.rpos += i
				r.skipping = false
				return nil
			case EndBlock:
				r.discarded += int64(i) + 1
				r.rpos += i + 1
				r.skipping = false
				// A following CR belongs to the frame; anything else is
				// scanned as usual.
				if r.rpos == r.wpos {
					if err := r.fill(); err != nil {
						if errors.Is(err, io.EOF) {
							return io.EOF
						}
						return fmt.Errorf("read frame: %w", err)
					}
				}
				if r.buf[r.rpos] == CarriageReturn {
					r.rpos++
					r.discarded++
				}
				return nil
			}
		}
		r.discarded += int64(len(data))
		r.rpos = r.wpos
	}
}

// WriteMessage writes msg framed as SB msg EB CR to w in one Write call.
// It returns ErrInvalidContent if msg contains SB or EB.
func WriteMessage(w io.Writer, msg []byte) error {
	for _, c := range msg {
		if c == StartBlock || c == EndBlock {
			return ErrInvalidContent
		}
	}
	buf := make([]byte, 0, len(msg)+3)
	buf = append(buf, StartBlock)
	buf = append(buf, msg...)
	buf = append(buf, EndBlock, CarriageReturn)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// Writer writes MLLP frames to an io.Writer.
type Writer struct {
	w io.Writer
}

// NewWriter returns a Writer writing frames to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteMessage writes msg as one frame; see the package function
// WriteMessage.
func (w *Writer) WriteMessage(msg []byte) error { return WriteMessage(w.w, msg) }
