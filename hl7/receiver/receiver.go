// Package receiver is the HL7 v2 MLLP server: it accepts connections,
// reads MLLP frames (package hl7/mllp), parses and validates each message
// (package hl7), hands valid ones to a Handler that commits them durably,
// and answers every message with an acknowledgment following HL7 v2.5.1
// chapter 2 (original or enhanced mode, MSA and ERR segments).
//
// Messages on one connection are processed and answered strictly in
// order: the next frame is read only after the previous answer was
// written. Connections are served concurrently.
//
// Answers:
//   - AA (CA in enhanced mode) only after Handler.HandleHL7 returned nil.
//   - A message without a usable MSH, with bad delimiters or malformed
//     segments: AR with ERR 100 or 102 and the location.
//   - An unsupported message type or trigger event: AR with 200 or 201;
//     an unsupported version (not 2.x): AR with 203.
//   - A required field missing (MSH-9, MSH-10; for orders and results
//     PID-3, ORC-1 in ORM/OMI, OBR-4, OBR-25 in ORU): AE with 101, and a
//     required segment missing: AE with 100, each with the location.
//   - An unsupported character set (MSH-18): AE with 102 at MSH-18.
//   - A Handler error that is (errors.As) an *hl7.Error: its code; any
//     other Handler error: AE (CE) with 207.
//   - A frame larger than MaxMessageSize: AR with 207 "message exceeds N
//     bytes", then the connection is closed.
//   - An MLLP frame whose end block is not followed by CR: AR with 100.
//   - An order or result with more order groups (ORC or OBR segments,
//     whichever is more) than MaxOrderGroups: AR with 207 "message has N
//     order groups, more than the limit of M", located at the first
//     segment beyond the limit. Nothing is recorded: one message cannot
//     make thousands of events.
//
// Bytes outside frames are ignored and counted; they do not extend the
// idle deadline, so a peer sending only such bytes is closed after
// IdleTimeout. A started frame must end within ReadTimeout of its first
// start block; start blocks inside it do not extend that deadline.
//
// Beyond MaxConnections, or beyond MaxConnectionsPerHost from one remote
// IP address, a new connection is accepted and closed at once without
// sending anything (an HL7 ACK would need a message to answer), and
// counted: a flood from one host cannot take the slots of the others.
//
// The receiver logs with the Logger it is given, with the attributes
// component=hl7, remote and control_id, and never logs patient data.
package receiver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"radbridge/hl7"
	"radbridge/hl7/mllp"
	"radbridge/internal/lograte"
)

// Handler commits a received message durably. It returns nil only when
// the message is committed, or was already committed before (a resend).
// An error that is an *hl7.Error is answered with its code and location;
// any other error with AE (CE) 207. Errors must not carry patient data:
// the receiver logs them.
type Handler interface {
	HandleHL7(ctx context.Context, m *hl7.Message, raw []byte) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m *hl7.Message, raw []byte) error

// HandleHL7 calls f.
func (f HandlerFunc) HandleHL7(ctx context.Context, m *hl7.Message, raw []byte) error {
	return f(ctx, m, raw)
}

// MessageType is a supported MSH-9 message code and trigger event.
type MessageType struct {
	Code    string // MSH-9.1, e.g. "ORU"
	Trigger string // MSH-9.2, e.g. "R01"
}

// DefaultSupported are the message types accepted by default.
var DefaultSupported = []MessageType{{"ORM", "O01"}, {"OMI", "O23"}, {"ORU", "R01"}}

// DefaultMaxOrderGroups is Config.MaxOrderGroups when unset.
const DefaultMaxOrderGroups = 100

// Config configures a Server. Zero values take the defaults shown.
type Config struct {
	Handler        Handler       // required
	MaxMessageSize int           // largest frame content in bytes; 1 MiB
	ReadTimeout    time.Duration // to finish a started frame; 30s
	IdleTimeout    time.Duration // to start a frame; 5 min
	WriteTimeout   time.Duration // to write an ACK; 30s
	DrainTimeout   time.Duration // on shutdown, for in-flight messages; 10s
	MaxConnections int           // concurrent connections; 256
	// MaxConnectionsPerHost bounds concurrent connections from one remote
	// IP address; 0 means MaxConnections.
	MaxConnectionsPerHost int
	// MaxOrderGroups bounds the order groups (ORC or OBR segments,
	// whichever is more) of one order or result message; default 100.
	MaxOrderGroups int
	Supported      []MessageType // DefaultSupported
	Logger         *slog.Logger  // slog.Default()
	Now            func() time.Time
}

func (c *Config) setDefaults() {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 1 << 20
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 256
	}
	if c.MaxConnectionsPerHost <= 0 || c.MaxConnectionsPerHost > c.MaxConnections {
		c.MaxConnectionsPerHost = c.MaxConnections
	}
	if c.MaxOrderGroups <= 0 {
		c.MaxOrderGroups = DefaultMaxOrderGroups
	}
	if c.Supported == nil {
		c.Supported = DefaultSupported
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Stats are the receiver's counters since it was created.
type Stats struct {
	Messages            int64            // frames received
	Acks                map[string]int64 // ACKs sent by MSA-1 code
	NoAck               int64            // messages answered with nothing (enhanced mode NE/ER/SU)
	DiscardedBytes      int64            // bytes outside frames or in dropped frames
	OversizedFrames     int64            // frames over MaxMessageSize
	InvalidFrames       int64            // frames with EB not followed by CR
	HandlerErrors       int64            // Handler calls that returned an error
	Connections         int64            // connections accepted and served
	ActiveConnections   int64            // connections open now
	RejectedConnections int64            // connections closed at once over MaxConnections
	// ByType counts answered messages by message type and ACK code: the
	// type is "CODE^TRIGGER" of a supported type, "other" for a parsed
	// message of another type, "unparsed" when there was no readable
	// MSH; the code is the MSA-1 sent, or "none" when no ACK was sent.
	// Both are bounded sets, fit for metric labels.
	ByType map[TypeAck]int64
}

// TypeAck is a message type and the ACK code it was answered with.
type TypeAck struct{ Type, Ack string }

var ackCodes = []string{hl7.AckAccept, hl7.AckError, hl7.AckReject, hl7.AckCommitAccept, hl7.AckCommitError, hl7.AckCommitReject}

type counters struct {
	messages, noAck, discarded, oversized, invalid, handlerErrs atomic.Int64
	conns, active, rejected                                     atomic.Int64
	acks                                                        [6]atomic.Int64
}

// Server is an HL7 MLLP receiver. Create it with New.
type Server struct {
	cfg     Config
	log     *slog.Logger
	c       counters
	ctlSeq  atomic.Uint64
	ctlBase string
	mu      sync.Mutex
	conns   map[*conn]struct{}
	perHost map[string]int // open connections by remote IP, under mu
	// logs bounds the lines bad peers cause (rejections, timeouts, bad
	// messages): 10 a second of each kind, then a count of those left out.
	logs     *lograte.Limiter
	supCodes map[string]bool
	supTypes map[MessageType]bool

	statsMu sync.Mutex
	byType  map[TypeAck]int64
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Handler == nil {
		return nil, errors.New("receiver: Config.Handler is nil")
	}
	cfg.setDefaults()
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "hl7"),
		conns:    make(map[*conn]struct{}),
		perHost:  make(map[string]int),
		logs:     lograte.New(10, time.Second),
		ctlBase:  "RB" + strings.ToUpper(strconv.FormatInt(cfg.Now().Unix(), 36)),
		supCodes: make(map[string]bool),
		supTypes: make(map[MessageType]bool),
		byType:   make(map[TypeAck]int64),
	}
	for _, t := range cfg.Supported {
		s.supCodes[t.Code] = true
		s.supTypes[t] = true
	}
	return s, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Messages:            s.c.messages.Load(),
		Acks:                make(map[string]int64, len(ackCodes)),
		NoAck:               s.c.noAck.Load(),
		DiscardedBytes:      s.c.discarded.Load(),
		OversizedFrames:     s.c.oversized.Load(),
		InvalidFrames:       s.c.invalid.Load(),
		HandlerErrors:       s.c.handlerErrs.Load(),
		Connections:         s.c.conns.Load(),
		ActiveConnections:   s.c.active.Load(),
		RejectedConnections: s.c.rejected.Load(),
	}
	for i, code := range ackCodes {
		st.Acks[code] = s.c.acks[i].Load()
	}
	s.statsMu.Lock()
	st.ByType = make(map[TypeAck]int64, len(s.byType))
	for k, v := range s.byType {
		st.ByType[k] = v
	}
	s.statsMu.Unlock()
	return st
}

// Serve accepts connections on ln until ctx is cancelled or ln fails.
// On cancellation it stops accepting, lets messages being processed
// finish and be answered within DrainTimeout, closes every connection
// and returns nil once all connection goroutines have ended. Serve closes
// ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// Handlers run under hard, cancelled only when the drain deadline
	// passes, so that a commit in progress is not cut short.
	hard, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	var serveErr error
	backoff := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			serveErr = fmt.Errorf("accept: %w", err)
			break
		}
		backoff = 5 * time.Millisecond
		host := remoteHost(nc.RemoteAddr())
		s.mu.Lock()
		full := len(s.conns) >= s.cfg.MaxConnections || s.perHost[host] >= s.cfg.MaxConnectionsPerHost
		var c *conn
		if !full {
			c = &conn{nc: nc, s: s, log: s.log.With("remote", nc.RemoteAddr().String())}
			s.conns[c] = struct{}{}
			s.perHost[host]++
		}
		s.mu.Unlock()
		if full {
			s.c.rejected.Add(1)
			if ok, left := s.logs.Allow("limit"); ok {
				s.log.Warn("connection limit reached, closing new connection", "remote", nc.RemoteAddr().String(),
					"max_connections", s.cfg.MaxConnections, "max_connections_per_host", s.cfg.MaxConnectionsPerHost, "suppressed", left)
			}
			nc.Close()
			continue
		}
		s.c.conns.Add(1)
		s.c.active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				nc.Close()
				s.mu.Lock()
				delete(s.conns, c)
				if s.perHost[host]--; s.perHost[host] <= 0 {
					delete(s.perHost, host)
				}
				s.mu.Unlock()
				s.c.active.Add(-1)
			}()
			c.serve(hard)
		}()
	}
	ln.Close()

	// Drain: wake every connection waiting for input; those processing a
	// message finish it, answer, and then stop.
	s.mu.Lock()
	for c := range s.conns {
		c.shutdown()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("drain deadline passed, closing connections")
		hardCancel()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	return serveErr
}

// remoteHost is the IP address of a remote address, or the whole address
// when it has no port.
func remoteHost(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// conn is one MLLP connection.
type conn struct {
	nc      net.Conn
	s       *Server
	log     *slog.Logger
	mu      sync.Mutex
	closing bool
}

// shutdown marks c as closing and wakes a pending read.
func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	c.nc.SetReadDeadline(time.Now())
}

// setReadDeadline sets the read deadline unless c is closing; it reports
// false when closing.
func (c *conn) setReadDeadline(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.nc.SetReadDeadline(time.Now().Add(d))
	return true
}

func (c *conn) serve(ctx context.Context) {
	s := c.s
	r := mllp.NewReader(c.nc, s.cfg.MaxMessageSize)
	r.SetFrameStartFunc(func() { c.setReadDeadline(s.cfg.ReadTimeout) })
	var discarded int64
	c.log.Debug("connection opened")
	defer c.log.Debug("connection closed")
	for {
		if !c.setReadDeadline(s.cfg.IdleTimeout) {
			return
		}
		raw, err := r.ReadMessage()
		if d := r.Discarded(); d != discarded {
			s.c.discarded.Add(d - discarded)
			discarded = d
		}
		switch {
		case err == nil:
			s.c.messages.Add(1)
			if !c.answer(s.process(ctx, raw)) {
				return
			}
		case errors.Is(err, mllp.ErrMessageTooLarge):
			s.c.messages.Add(1)
			s.c.oversized.Add(1)
			m := mshOnly(raw)
			e := &hl7.Error{Code: hl7.CodeInternalError, Severity: hl7.SeverityError, Reject: true,
				Text: fmt.Sprintf("message exceeds %d bytes", s.cfg.MaxMessageSize)}
			if c.answer(s.ack(m, hl7.Rejected, e)) {
				c.lingeringClose()
			}
			return
		case errors.Is(err, mllp.ErrInvalidFrame):
			s.c.messages.Add(1)
			s.c.invalid.Add(1)
			e := &hl7.Error{Code: hl7.CodeSegmentSequence, Severity: hl7.SeverityError, Reject: true, Text: "invalid MLLP frame: end block not followed by carriage return"}
			if !c.answer(s.ack(nil, hl7.Rejected, e)) {
				return
			}
		case errors.Is(err, io.EOF):
			return
		default:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.mu.Lock()
				closing := c.closing
				c.mu.Unlock()
				if ok, left := s.logs.Allow("timeout"); ok && !closing {
					c.log.Info("closing connection after read timeout", "suppressed", left)
				}
				return
			}
			if ok, left := s.logs.Allow("closed"); ok {
				c.log.Info("closing connection", "err", err, "suppressed", left)
			}
			return
		}
	}
}

// closeWriter is a connection that can shut down its writing side alone
// (a TCP FIN) and still read: *net.TCPConn and *tls.Conn provide it.
type closeWriter interface {
	CloseWrite() error
}

var (
	_ closeWriter = (*net.TCPConn)(nil)
	_ closeWriter = (*tls.Conn)(nil)
)

// lingeringClose half-closes c after a final answer and drops what the
// peer is still sending (at most 4 frames' worth, for at most a second),
// so that closing with unread input does not reset the connection before
// the peer has read the answer.
func (c *conn) lingeringClose() {
	if cw, ok := c.nc.(closeWriter); ok {
		cw.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c.nc, 4*int64(c.s.cfg.MaxMessageSize)))
}

// result is the outcome of one message.
type result struct {
	ack     []byte
	code    string
	msgType string // bounded: see Stats.ByType
	control string
	err     *hl7.Error
	cause   error
}

// answer logs and writes the ACK in res; it reports false when the
// connection must be closed.
func (c *conn) answer(res result) bool {
	s := c.s
	log := c.log
	if res.control != "" {
		log = log.With("control_id", res.control)
	}
	switch {
	case res.err != nil:
		args := []any{"ack", res.code, "hl7_code", res.err.Code, "location", res.err.Location.String(), "reason", res.err.Text}
		if res.cause != nil {
			args = append(args, "err", res.cause)
		}
		if ok, left := s.logs.Allow("not accepted"); ok {
			log.Warn("message not accepted", append(args, "suppressed", left)...)
		}
	default:
		log.Debug("message accepted", "ack", res.code)
	}
	ta := TypeAck{Type: res.msgType, Ack: res.code}
	if res.ack == nil {
		ta.Ack = "none"
	}
	s.statsMu.Lock()
	s.byType[ta]++
	s.statsMu.Unlock()
	if res.ack == nil {
		s.c.noAck.Add(1)
		return true
	}
	for i, code := range ackCodes {
		if code == res.code {
			s.c.acks[i].Add(1)
		}
	}
	c.nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if err := mllp.WriteMessage(c.nc, res.ack); err != nil {
		log.Info("closing connection", "err", fmt.Errorf("write ACK: %w", err))
		return false
	}
	return true
}

// process parses, validates and hands over one message.
func (s *Server) process(ctx context.Context, raw []byte) result {
	m, err := hl7.Parse(raw)
	if err != nil {
		var he *hl7.Error
		if !errors.As(err, &he) {
			he = &hl7.Error{Code: hl7.CodeInternalError, Severity: hl7.SeverityError, Reject: true, Text: "unparsable message", Err: err}
		}
		return s.ackErr(m, he, nil)
	}
	if he := s.validate(m); he != nil {
		return s.ackErr(m, he, nil)
	}
	if err := s.cfg.Handler.HandleHL7(ctx, m, raw); err != nil {
		s.c.handlerErrs.Add(1)
		var he *hl7.Error
		if !errors.As(err, &he) {
			return s.ackErr(m, &hl7.Error{Code: hl7.CodeInternalError, Severity: hl7.SeverityError, Text: "message not stored, resend later"}, err)
		}
		return s.ackErr(m, he, err)
	}
	return s.ack(m, hl7.Accepted)
}

func (s *Server) ackErr(m *hl7.Message, he *hl7.Error, cause error) result {
	o := hl7.Errored
	if he.Reject {
		o = hl7.Rejected
	}
	res := s.ack(m, o, he)
	res.cause = cause
	return res
}

// ack builds the acknowledgment for m, which may be nil.
func (s *Server) ack(m *hl7.Message, o hl7.Outcome, errs ...*hl7.Error) result {
	res := result{}
	if len(errs) > 0 {
		res.err = errs[0]
	}
	res.msgType = "unparsed"
	if m != nil {
		res.control = m.ControlID()
		res.msgType = "other"
		if code, trigger, _ := m.MessageType(); s.supTypes[MessageType{code, trigger}] {
			res.msgType = code + "^" + trigger
		}
	}
	plan := hl7.PlanAck(m, o)
	res.code = plan.Code
	if !plan.Send {
		return res
	}
	id := s.ctlBase + "." + strconv.FormatUint(s.ctlSeq.Add(1), 36)
	res.ack = hl7.NewACK(m, plan.Code, s.cfg.Now(), id, errs...)
	return res
}

// mshOnly parses just the MSH segment at the start of a truncated
// message, to address its reject; nil if there is none.
func mshOnly(raw []byte) *hl7.Message {
	if i := strings.IndexAny(string(raw[:min(len(raw), 4096)]), "\r\n"); i >= 0 {
		raw = raw[:i]
	} else if len(raw) > 4096 {
		return nil
	}
	m, _ := hl7.Parse(raw)
	return m
}
