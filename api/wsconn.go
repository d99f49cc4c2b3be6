package api

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// leanBuf is the size of the read and write buffers a lean WebSocket
// connection hands to coder/websocket. A stream subscriber only ever
// reads control frames (at most 125 bytes of payload), and the writes
// are gathered below the buffer (see frameWriter).
const leanBuf = 128

// leanResponse hijacks a WebSocket connection with small buffers instead of
// net/http's 4 KB reader and writer, which every idle subscriber would keep
// for as long as it is connected. Hand it to websocket.Accept in place of
// the ResponseWriter; out is the connection's frameWriter after Accept (a
// separate object: the stream keeps it, not the ResponseWriter and what
// net/http hangs on that).
type leanResponse struct {
	http.ResponseWriter
	out *frameWriter
}

// Hijack implements http.Hijacker.
func (l *leanResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(l.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Bytes the client sent after its handshake are already in net/http's
	// reader: they stay first in the new one.
	var src io.Reader = conn
	n := brw.Reader.Buffered()
	if n > 0 {
		b, _ := brw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)
	}
	r := bufio.NewReaderSize(src, max(leanBuf, n))
	if n > 0 {
		_, _ = r.Peek(n)
	}
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	l.out = &frameWriter{conn: conn}
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(l.out, leanBuf)), nil
}

// frameWriter is the writer below a lean connection's small bufio.Writer.
// coder/websocket writes a frame as its header and payload into that
// buffer and flushes at the end of the frame; a payload larger than the
// buffer reaches here in two pieces. While gather runs a write, the first
// pieces are held (at most a buffer's worth) and sent joined with the next
// one, so a frame still costs one write(2), as with a buffer large enough
// for it.
type frameWriter struct {
	conn net.Conn

	mu     sync.Mutex
	gather bool
	n      int
	held   [leanBuf]byte
}

// Write implements io.Writer.
func (w *frameWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gather && w.n+len(p) <= len(w.held) {
		w.n += copy(w.held[w.n:], p)
		return len(p), nil
	}
	if w.n == 0 {
		return w.conn.Write(p)
	}
	// One contiguous write: joining the pieces in a pooled buffer costs a
	// copy, which is cheaper than a writev(2) of two.
	bp := framePool.Get().(*[]byte)
	b := append(append((*bp)[:0], w.held[:w.n]...), p...)
	held := w.n
	w.n = 0
	n, err := w.conn.Write(b)
	*bp = b[:0]
	framePool.Put(bp)
	return max(n-held, 0), err
}

// framePool holds the buffers frameWriter joins a frame's pieces in.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// flushLocked writes what is held.
func (w *frameWriter) flushLocked() error {
	if w.n == 0 {
		return nil
	}
	_, err := w.conn.Write(w.held[:w.n])
	w.n = 0
	return err
}

// gatherWrite runs write (a websocket.Conn write) with its pieces joined,
// and sends what is still held when it returns. Frames coder/websocket
// writes on its own (pongs, closes) pass straight through outside it.
func (w *frameWriter) gatherWrite(write func() error) error {
	w.mu.Lock()
	w.gather = true
	w.mu.Unlock()
	err := write()
	w.mu.Lock()
	w.gather = false
	ferr := w.flushLocked()
	w.mu.Unlock()
	if err == nil {
		err = ferr
	}
	return err
}

// writeText writes payload as one whole text frame, with one write(2)
// bounded by timeout, instead of going through coder/websocket's Write,
// which costs a context with a timer, an AfterFunc and two locks per
// message: at 10,000 subscribers of one event that is most of the work
// besides the write itself. The frame is a server's (unmasked) and never
// compressed (a lean connection does not negotiate compression).
//
// coder/websocket still writes its own frames (pongs, the close
// handshake): those are control frames, at most 125 bytes of payload,
// so each fits the small buffer and reaches the connection in one Write,
// under the same lock as this one: frames never interleave. Only one
// goroutine at a time may write messages (writeText or gatherWrite).
//
// When the write fails after part of the frame went out (the timeout on a
// peer that stopped reading), the stream cannot carry another frame, not
// even a close: partial reports that, and the caller must drop the
// connection.
func (w *frameWriter) writeText(payload []byte, timeout time.Duration) (partial bool, err error) {
	bp := framePool.Get().(*[]byte)
	b := append(appendTextHeader((*bp)[:0], len(payload)), payload...)
	w.mu.Lock()
	if err = w.flushLocked(); err == nil {
		if err = w.conn.SetWriteDeadline(time.Now().Add(timeout)); err == nil {
			var n int
			n, err = w.conn.Write(b)
			partial = err != nil && n > 0
			// coder/websocket bounds its own writes by closing the
			// connection, not by a deadline: leave none behind.
			if derr := w.conn.SetWriteDeadline(time.Time{}); err == nil {
				err = derr
			}
		}
	}
	w.mu.Unlock()
	*bp = b[:0]
	framePool.Put(bp)
	return partial, err
}

// appendTextHeader appends the header of an unmasked, final text frame of
// n bytes of payload (RFC 6455, section 5.2).
func appendTextHeader(b []byte, n int) []byte {
	const finText = 0x80 | 0x1
	switch {
	case n < 126:
		return append(b, finText, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, finText, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finText, 127), uint64(n))
	}
}
