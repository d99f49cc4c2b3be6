package ul

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for AcceptConfig and RequestConfig fields left zero.
const (
	DefaultMaxPDULength = 64 * 1024
	DefaultMaxReadPDU   = 1024 * 1024
	DefaultARTIMTimeout = 30 * time.Second
	DefaultIdleTimeout  = 5 * time.Minute
	DefaultWriteTimeout = 30 * time.Second
	// maxSendPDU caps what we send when the peer declares no limit (0).
	maxSendPDU = 1024 * 1024
)

// AcceptConfig configures association acceptance (PS3.8 section 7.1).
type AcceptConfig struct {
	// AETitle is our AE title; an A-ASSOCIATE-RQ calling another title is
	// rejected (result 1, source 1, reason 7).
	AETitle string
	// CallerAllowed, when set, decides whether a calling AE title from the
	// given remote address may associate; false rejects it (result 1,
	// source 1, reason 3).
	CallerAllowed func(callingAE string, remote net.Addr) bool
	// Negotiate answers one proposed presentation context: the result
	// (PS3.8 table 9-18) and, on acceptance, one of the proposed transfer
	// syntaxes. Nil rejects every context.
	Negotiate func(abstractSyntax string, transferSyntaxes []string) (transferSyntax string, result byte)
	// Reject, when set, rejects the association with this A-ASSOCIATE-RJ
	// once its A-ASSOCIATE-RQ is read (used for the association limit).
	Reject *AssociateRJ
	// MaxPDULength is the maximum P-DATA-TF length we advertise.
	MaxPDULength uint32
	// MaxReadPDU bounds the length of any PDU we read; a longer one is
	// answered with A-ABORT. It is raised to MaxPDULength+6 if lower.
	MaxReadPDU                uint32
	ImplementationClassUID    string
	ImplementationVersionName string
	// ARTIMTimeout bounds the wait for the A-ASSOCIATE-RQ and for the peer to
	// close the connection after release or rejection.
	ARTIMTimeout time.Duration
	// IdleTimeout aborts an established association when no PDU arrives
	// for this long.
	IdleTimeout  time.Duration
	WriteTimeout time.Duration
}

// PresentationContext is an accepted presentation context.
type PresentationContext struct {
	ID             byte
	AbstractSyntax string
	TransferSyntax string
}

// Association is an established association. ReadPDV and the write methods
// may be used from different goroutines; Abort may be called concurrently
// with both.
type Association struct {
	CallingAE, CalledAE           string
	PeerImplementationClassUID    string
	PeerImplementationVersionName string
	PeerMaxPDULength              uint32
	contexts                      map[byte]PresentationContext
	conn                          net.Conn
	artim, idle, writeTimeout     time.Duration
	maxRead                       uint32
	buf                           []byte
	pending                       []PDV
	wmu                           sync.Mutex
	wbuf                          []byte
	closed                        atomic.Bool
	aborted                       atomic.Bool
	requestor                     bool
}

// Context returns the accepted presentation context with the given ID.
func (a *Association) Context(id byte) (PresentationContext, bool) {
	pc, ok := a.contexts[id]
	return pc, ok
}

// Contexts returns the accepted presentation contexts.
func (a *Association) Contexts() []PresentationContext {
	out := make([]PresentationContext, 0, len(a.contexts))
	for _, pc := range a.contexts {
		out = append(out, pc)
	}
	return out
}

// RemoteAddr is the peer's address.
func (a *Association) RemoteAddr() net.Addr { return a.conn.RemoteAddr() }

func (c *AcceptConfig) defaults() {
	if c.MaxPDULength == 0 {
		c.MaxPDULength = DefaultMaxPDULength
	}
	if c.MaxReadPDU == 0 {
		c.MaxReadPDU = DefaultMaxReadPDU
	}
	if c.MaxReadPDU < c.MaxPDULength+6 {
		c.MaxReadPDU = c.MaxPDULength + 6
	}
	if c.ARTIMTimeout <= 0 {
		c.ARTIMTimeout = DefaultARTIMTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// Accept runs the acceptor side of association establishment on conn
// (PS3.8 states Sta2 to Sta6): it reads the A-ASSOCIATE-RQ within the ARTIM
// timeout and answers A-ASSOCIATE-AC, A-ASSOCIATE-RJ (returning a
// *RejectError) or A-ABORT. On any error conn is closed. Cancelling ctx
// interrupts the wait.
func Accept(ctx context.Context, conn net.Conn, cfg AcceptConfig) (*Association, error) {
	cfg.defaults()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	a := &Association{
		conn:         conn,
		artim:        cfg.ARTIMTimeout,
		idle:         cfg.IdleTimeout,
		writeTimeout: cfg.WriteTimeout,
		maxRead:      cfg.MaxReadPDU,
		contexts:     make(map[byte]PresentationContext),
	}
	_ = conn.SetReadDeadline(time.Now().Add(cfg.ARTIMTimeout))
	p, buf, err := ReadPDU(conn, nil, cfg.MaxReadPDU)
	a.buf = buf
	if err != nil {
		var pe *ProtocolError
		switch {
		case errors.As(err, &pe):
			a.abort(pe.Reason)
			return nil, fmt.Errorf("accept association: %w", err)
		case ctx.Err() != nil:
			a.close()
			return nil, fmt.Errorf("accept association: %w", ctx.Err())
		case isTimeout(err):
			a.close()
			return nil, fmt.Errorf("accept association: %w", ErrARTIMExpired)
		}
		a.close()
		return nil, fmt.Errorf("accept association: %w", err)
	}
	rq, ok := p.(*AssociateRQ)
	if !ok {
		if _, isAbort := p.(*Abort); isAbort {
			a.close()
			return nil, fmt.Errorf("accept association: %w", ErrPeerAborted)
		}
		a.abort(AbortUnexpectedPDU)
		return nil, fmt.Errorf("accept association: got %v: %w", p.Type(), ErrUnexpectedPDU)
	}
	a.CallingAE, a.CalledAE = rq.CallingAE, rq.CalledAE
	a.PeerImplementationClassUID = rq.UserInfo.ImplementationClassUID
	a.PeerImplementationVersionName = rq.UserInfo.ImplementationVersionName
	a.PeerMaxPDULength = rq.UserInfo.MaxPDULength

	var rj *AssociateRJ
	switch {
	case cfg.Reject != nil:
		rj = cfg.Reject
	case rq.ProtocolVersion&1 == 0:
		rj = &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceProviderACSE, Reason: RejectProtocolVersionNotSupp}
	case rq.ApplicationContext != ApplicationContextName:
		rj = &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectApplicationContextNotSupp}
	case rq.CalledAE != cfg.AETitle:
		rj = &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectCalledAENotRecognized}
	case cfg.CallerAllowed != nil && !cfg.CallerAllowed(rq.CallingAE, conn.RemoteAddr()):
		rj = &AssociateRJ{Result: RejectPermanent, Source: RejectSourceServiceUser, Reason: RejectCallingAENotRecognized}
	}
	if rj != nil {
		err := a.writePDU(rj)
		if err == nil {
			a.awaitClose()
		}
		a.close()
		return nil, &RejectError{AssociateRJ: *rj, CallingAE: rq.CallingAE, CalledAE: rq.CalledAE}
	}

	ac := &AssociateAC{
		ProtocolVersion:    1,
		CalledAE:           rq.CalledAE,
		CallingAE:          rq.CallingAE,
		ApplicationContext: ApplicationContextName,
		UserInfo: UserInfo{
			MaxPDULength:              cfg.MaxPDULength,
			ImplementationClassUID:    cfg.ImplementationClassUID,
			ImplementationVersionName: cfg.ImplementationVersionName,
		},
	}
	if rq.UserInfo.AsyncOps != nil {
		ac.UserInfo.AsyncOps = &AsyncOps{Invoked: 1, Performed: 1}
	}
	seen := make(map[byte]bool, len(rq.PresentationContexts))
	for _, pc := range rq.PresentationContexts {
		res := PresentationContextAC{ID: pc.ID, Result: ResultAbstractSyntaxNotSupported}
		switch {
		case pc.ID%2 == 0 || seen[pc.ID]:
			res.Result = ResultNoReason
		case cfg.Negotiate != nil:
			res.TransferSyntax, res.Result = cfg.Negotiate(pc.AbstractSyntax, pc.TransferSyntaxes)
		}
		seen[pc.ID] = true
		if res.Result == ResultAcceptance {
			a.contexts[pc.ID] = PresentationContext{ID: pc.ID, AbstractSyntax: pc.AbstractSyntax, TransferSyntax: res.TransferSyntax}
		} else {
			res.TransferSyntax = ""
		}
		ac.PresentationContexts = append(ac.PresentationContexts, res)
	}
	if err := a.writePDU(ac); err != nil {
		a.close()
		return nil, fmt.Errorf("accept association: %w", err)
	}
	return a, nil
}

// RequestConfig configures the requestor side (used by tests and tools).
type RequestConfig struct {
	CallingAE, CalledAE  string
	PresentationContexts []PresentationContextRQ
	MaxPDULength         uint32
	Timeout              time.Duration
}

// Request runs the requestor side of association establishment on conn:
// it sends an A-ASSOCIATE-RQ and waits for the answer. A rejection returns
// a *RejectError.
func Request(ctx context.Context, conn net.Conn, cfg RequestConfig) (*Association, error) {
	if cfg.MaxPDULength == 0 {
		cfg.MaxPDULength = DefaultMaxPDULength
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultARTIMTimeout
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	a := &Association{
		conn:         conn,
		artim:        cfg.Timeout,
		idle:         cfg.Timeout,
		writeTimeout: cfg.Timeout,
		maxRead:      max(cfg.MaxPDULength+6, DefaultMaxReadPDU),
		contexts:     make(map[byte]PresentationContext),
		requestor:    true,
		CallingAE:    cfg.CallingAE,
		CalledAE:     cfg.CalledAE,
	}
	rq := &AssociateRQ{
		ProtocolVersion:      1,
		CalledAE:             cfg.CalledAE,
		CallingAE:            cfg.CallingAE,
		ApplicationContext:   ApplicationContextName,
		PresentationContexts: cfg.PresentationContexts,
		UserInfo:             UserInfo{MaxPDULength: cfg.MaxPDULength, ImplementationClassUID: "1.2.826.0.1.3680043.10.1447.1"},
	}
	if err := a.writePDU(rq); err != nil {
		a.close()
		return nil, fmt.Errorf("request association: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(cfg.Timeout))
	p, buf, err := ReadPDU(conn, nil, a.maxRead)
	a.buf = buf
	if err != nil {
		a.close()
		return nil, fmt.Errorf("request association: %w", err)
	}
	switch p := p.(type) {
	case *AssociateAC:
		a.PeerMaxPDULength = p.UserInfo.MaxPDULength
		a.PeerImplementationClassUID = p.UserInfo.ImplementationClassUID
		a.PeerImplementationVersionName = p.UserInfo.ImplementationVersionName
		abstract := make(map[byte]string)
		for _, pc := range cfg.PresentationContexts {
			abstract[pc.ID] = pc.AbstractSyntax
		}
		for _, pc := range p.PresentationContexts {
			if pc.Result == ResultAcceptance {
				a.contexts[pc.ID] = PresentationContext{ID: pc.ID, AbstractSyntax: abstract[pc.ID], TransferSyntax: pc.TransferSyntax}
			}
		}
		return a, nil
	case *AssociateRJ:
		a.close()
		return nil, &RejectError{AssociateRJ: *p, CallingAE: cfg.CallingAE, CalledAE: cfg.CalledAE}
	case *Abort:
		a.close()
		return nil, fmt.Errorf("request association: %w", ErrPeerAborted)
	}
	a.abort(AbortUnexpectedPDU)
	return nil, fmt.Errorf("request association: got %v: %w", p.Type(), ErrUnexpectedPDU)
}

// ReadPDV returns the next presentation data value (PS3.8 state Sta6). Its
// Data is valid until the next call. An A-RELEASE-RQ is answered with
// A-RELEASE-RP and returns ErrReleased; an A-ABORT returns ErrPeerAborted;
// silence for the idle timeout sends A-ABORT and returns ErrIdleTimeout; a
// protocol violation sends A-ABORT with its reason. After any error the
// connection is closed.
func (a *Association) ReadPDV() (PDV, error) {
	for len(a.pending) == 0 {
		if a.closed.Load() {
			return PDV{}, fmt.Errorf("read PDV: %w", ErrAborted)
		}
		_ = a.conn.SetReadDeadline(time.Now().Add(a.idle))
		p, buf, err := ReadPDU(a.conn, a.buf, a.maxRead)
		a.buf = buf
		if err != nil {
			return PDV{}, a.fail(err)
		}
		switch p := p.(type) {
		case *PDataTF:
			for _, v := range p.PDVs {
				if _, ok := a.contexts[v.ContextID]; !ok {
					a.abort(AbortInvalidParameterValue)
					return PDV{}, fmt.Errorf("read PDV: context %d: %w", v.ContextID, ErrInvalidContextID)
				}
			}
			a.pending = p.PDVs
		case *ReleaseRQ:
			if a.requestor {
				a.abort(AbortUnexpectedPDU)
				return PDV{}, fmt.Errorf("read PDV: %w", ErrUnexpectedPDU)
			}
			if err := a.writePDU(&ReleaseRP{}); err == nil {
				a.awaitClose()
			}
			a.close()
			return PDV{}, ErrReleased
		case *Abort:
			a.close()
			return PDV{}, fmt.Errorf("read PDV: source %d reason %d: %w", p.Source, p.Reason, ErrPeerAborted)
		default:
			a.abort(AbortUnexpectedPDU)
			return PDV{}, fmt.Errorf("read PDV: got %v: %w", p.Type(), ErrUnexpectedPDU)
		}
	}
	v := a.pending[0]
	a.pending = a.pending[1:]
	return v, nil
}

func (a *Association) fail(err error) error {
	if a.aborted.Load() || a.closed.Load() {
		a.close()
		return fmt.Errorf("read PDV: %w", ErrAborted)
	}
	var pe *ProtocolError
	switch {
	case errors.As(err, &pe):
		a.abort(pe.Reason)
		return err
	case isTimeout(err):
		a.abort(AbortNotSpecified)
		return fmt.Errorf("read PDV: %w", ErrIdleTimeout)
	}
	a.close()
	return err
}

// awaitClose waits, within the ARTIM timeout, for the peer to close the
// transport connection (PS3.8 states Sta13).
func (a *Association) awaitClose() {
	_ = a.conn.SetReadDeadline(time.Now().Add(a.artim))
	_, _ = io.Copy(io.Discard, io.LimitReader(a.conn, 1<<20))
}

// Abort sends an A-ABORT (source service provider, the given PS3.8 table
// 9-26 reason) and closes the connection. It is safe to call concurrently
// with reads and writes, and more than once.
func (a *Association) Abort(reason byte) {
	a.abort(reason)
}

func (a *Association) abort(reason byte) {
	if !a.aborted.CompareAndSwap(false, true) {
		return
	}
	if !a.closed.Load() {
		source := AbortSourceServiceProvider
		if a.requestor {
			source = AbortSourceServiceUser
		}
		_ = a.writePDU(&Abort{Source: source, Reason: reason})
	}
	a.close()
}

// Close closes the transport connection without any PDU.
func (a *Association) Close() error {
	a.close()
	return nil
}

func (a *Association) close() {
	if a.closed.CompareAndSwap(false, true) {
		_ = a.conn.Close()
	}
}

// Release runs the requestor side of association release (A-RELEASE-RQ,
// wait for A-RELEASE-RP, close).
func (a *Association) Release() error {
	defer a.close()
	if err := a.writePDU(&ReleaseRQ{}); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	for {
		_ = a.conn.SetReadDeadline(time.Now().Add(a.artim))
		p, buf, err := ReadPDU(a.conn, a.buf, a.maxRead)
		a.buf = buf
		if err != nil {
			return fmt.Errorf("release: %w", err)
		}
		switch p.(type) {
		case *ReleaseRP:
			return nil
		case *Abort:
			return fmt.Errorf("release: %w", ErrPeerAborted)
		}
	}
}

func (a *Association) writePDU(p PDU) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	b, err := AppendPDU(a.wbuf[:0], p)
	if err != nil {
		return err
	}
	a.wbuf = b
	_ = a.conn.SetWriteDeadline(time.Now().Add(a.writeTimeout))
	if _, err := a.conn.Write(b); err != nil {
		return fmt.Errorf("write %v: %w", p.Type(), err)
	}
	return nil
}

// fragmentSize is the PDV data size that keeps a P-DATA-TF with one PDV
// within the peer's maximum length (PS3.8 annex D.1).
func (a *Association) fragmentSize() int {
	m := a.PeerMaxPDULength
	if m == 0 || m > maxSendPDU {
		m = maxSendPDU
	}
	return max(int(m)-6, 1)
}

// WriteMessage sends a DIMSE message: the command set and, when data is not
// nil, the data set, each fragmented so that no P-DATA-TF exceeds the peer's
// maximum length.
func (a *Association) WriteMessage(contextID byte, command, data []byte) error {
	w := a.NewWriter(contextID, true)
	if _, err := w.Write(command); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if data == nil {
		return nil
	}
	w = a.NewWriter(contextID, false)
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.Close()
}

// NewWriter returns a writer that sends what is written as PDV fragments of
// a command or data set; Close sends the last fragment. The writer holds at
// most one fragment in memory.
func (a *Association) NewWriter(contextID byte, command bool) io.WriteCloser {
	return &pdvWriter{a: a, id: contextID, command: command, buf: make([]byte, 0, a.fragmentSize())}
}

type pdvWriter struct {
	a       *Association
	id      byte
	command bool
	buf     []byte
	err     error
}

func (w *pdvWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if w.err != nil {
			return n, w.err
		}
		if len(w.buf) == cap(w.buf) {
			w.flush(false)
			continue
		}
		c := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+c]
		p = p[c:]
		n += c
	}
	return n, w.err
}

func (w *pdvWriter) flush(last bool) {
	if w.err != nil {
		return
	}
	w.err = w.a.writePDU(&PDataTF{PDVs: []PDV{{ContextID: w.id, Command: w.command, Last: last, Data: w.buf}}})
	w.buf = w.buf[:0]
}

func (w *pdvWriter) Close() error {
	w.flush(true)
	return w.err
}
