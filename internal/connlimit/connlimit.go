// Package connlimit bounds how many connections a listener has open at
// once, for servers that accept in a loop of their own (net/http). A
// connection beyond the limit is refused in the accept loop without being
// served: answered by a Refuser and closed, so a flood of connections costs
// the loop a write and a close each and never starves it, while the
// connections already open are served as before.
package connlimit

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Refuser answers a connection refused for the limit and closes it. It runs
// in the accept loop and must not block.
type Refuser func(net.Conn)

// Stats are a Listener's counters.
type Stats struct {
	Open     int64 // connections open now
	Accepted int64 // connections handed to the server
	Rejected int64 // connections refused for the limit
}

// Listener is a net.Listener with at most Max connections open. Accept
// must be called from one goroutine at a time (as net/http does).
type Listener struct {
	net.Listener
	max    int64
	refuse Refuser

	open, accepted, rejected atomic.Int64
}

// New wraps ln. max <= 0 means no limit (the connections are still
// counted). refuse nil closes a refused connection at once.
func New(ln net.Listener, max int, refuse Refuser) *Listener {
	return &Listener{Listener: ln, max: int64(max), refuse: refuse}
}

// Accept returns the next connection within the limit, refusing those
// beyond it meanwhile.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.max > 0 && l.open.Load() >= l.max {
			l.rejected.Add(1)
			if l.refuse != nil {
				l.refuse(c)
			} else {
				c.Close()
			}
			continue
		}
		l.open.Add(1)
		l.accepted.Add(1)
		return &conn{Conn: c, l: l}, nil
	}
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	return Stats{Open: l.open.Load(), Accepted: l.accepted.Load(), Rejected: l.rejected.Load()}
}

// conn gives its slot back when it is closed (by the server, or by a
// handler that hijacked it, e.g. a WebSocket).
type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// refusingMax bounds the refused connections being answered at once;
// beyond it a refused connection is closed at once, nothing sent.
const refusingMax = 256

// closeWriter is a connection that can shut down its writing side alone
// (a TCP FIN) and still read: *net.TCPConn provides it (and *tls.Conn, but
// HTTP503 answers plain-text listeners).
type closeWriter interface {
	CloseWrite() error
}

var _ closeWriter = (*net.TCPConn)(nil)

// HTTP503 returns a Refuser for a plain-text HTTP listener: the peer gets
// "503 Service Unavailable" with Retry-After: 1 and Connection: close.
// HTTP clients take no answer before their request (Go's reports an
// "unsolicited response"), so the answer waits for the request's headers
// (at most 8 KiB, for at most timeout); after it the connection is
// half-closed and what the peer still sends is read and dropped (at most
// 64 KiB, within the same time) so that it reads the answer instead of a
// reset. This runs in a goroutine of its own, at most 256 at once: beyond
// that a refused connection is closed at once. The accept loop pays an
// atomic add and a goroutine start.
func HTTP503(timeout time.Duration) Refuser {
	const body = "too many connections; retry later\n"
	resp := []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	var refusing atomic.Int64
	return func(c net.Conn) {
		if refusing.Add(1) > refusingMax {
			refusing.Add(-1)
			c.Close()
			return
		}
		go func() {
			defer refusing.Add(-1)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(timeout))
			if !readHeader(c, 8<<10) {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
			if cw, ok := c.(closeWriter); ok {
				_ = cw.CloseWrite()
				_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
			}
		}()
	}
}

// readHeader reads from c until the end of an HTTP request header (an
// empty line) within limit bytes.
func readHeader(c net.Conn, limit int) bool {
	buf := make([]byte, limit)
	for n := 0; n < limit; {
		m, err := c.Read(buf[n:])
		// The empty line may straddle two reads: look a little back.
		from := max(0, n-3)
		n += m
		if end := buf[from:n]; bytes.Contains(end, []byte("\r\n\r\n")) || bytes.Contains(end, []byte("\n\n")) {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}
