package scu

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
	"radbridge/dicom/ul"
	"radbridge/internal/tlsconf"
)

// SOP classes used by the client (PS3.4 annexes A and R).
const (
	VerificationSOPClass = "1.2.840.10008.1.1"
	IANSOPClass          = "1.2.840.10008.5.1.4.33"
)

// Defaults for Config fields left zero.
const (
	DefaultCallingAE = "RADBRIDGE-SCU"
	DefaultCalledAE  = "RADBRIDGE"
	DefaultTimeout   = 30 * time.Second
	// maxContexts is the number of presentation context IDs (odd, 1-255;
	// PS3.8 section 9.3.2.2).
	maxContexts = 128
)

// Errors; compare with errors.Is.
var (
	// ErrNoContext: no accepted presentation context has this SOP class
	// and transfer syntax.
	ErrNoContext = errors.New("no accepted presentation context")
	// ErrTooManyContexts: more than 128 presentation contexts proposed.
	ErrTooManyContexts = errors.New("too many presentation contexts")
	// ErrUnexpectedResponse: the peer answered with another message.
	ErrUnexpectedResponse = errors.New("unexpected DIMSE response")
)

// Context is an abstract syntax (SOP class) to propose with the transfer
// syntaxes its data sets are encoded in. Each transfer syntax is proposed
// as a presentation context of its own.
type Context struct {
	AbstractSyntax   string
	TransferSyntaxes []string
}

// Config configures Dial.
type Config struct {
	CallingAE string // our AE title; DefaultCallingAE if empty
	CalledAE  string // the peer's AE title; DefaultCalledAE if empty
	// Contexts to propose besides Verification, which is always proposed.
	Contexts []Context
	// MaxPDU is the maximum P-DATA-TF length we accept (ul default if 0).
	MaxPDU uint32
	// Timeout bounds connecting, association, every read and every write
	// (DefaultTimeout if 0).
	Timeout time.Duration
	// TLS, when set, runs the association over TLS (PS3.15 Annex B secure
	// transport connection profiles); an empty ServerName verifies the
	// dialled host. The handshake is bounded by Timeout.
	TLS *tls.Config
}

// RejectError reports an association the peer rejected with
// A-ASSOCIATE-RJ (PS3.8 section 9.3.4).
type RejectError struct {
	Result, Source, Reason byte
	CallingAE, CalledAE    string
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("association %s -> %s rejected: result %d (%s), source %d (%s), reason %d (%s)",
		e.CallingAE, e.CalledAE, e.Result, resultText(e.Result), e.Source, sourceText(e.Source), e.Reason, reasonText(e.Source, e.Reason))
}

// Unwrap returns ul.ErrRejected.
func (e *RejectError) Unwrap() error { return ul.ErrRejected }

func resultText(r byte) string {
	switch r {
	case ul.RejectPermanent:
		return "permanent"
	case ul.RejectTransient:
		return "transient"
	}
	return "unknown"
}

func sourceText(s byte) string {
	switch s {
	case ul.RejectSourceServiceUser:
		return "service user"
	case ul.RejectSourceServiceProviderACSE:
		return "service provider, ACSE"
	case ul.RejectSourceServiceProviderPres:
		return "service provider, presentation"
	}
	return "unknown"
}

// reasonText follows PS3.8 table 9-21.
func reasonText(source, reason byte) string {
	switch source {
	case ul.RejectSourceServiceUser:
		switch reason {
		case 1:
			return "no reason given"
		case 2:
			return "application context name not supported"
		case 3:
			return "calling AE title not recognized"
		case 7:
			return "called AE title not recognized"
		}
	case ul.RejectSourceServiceProviderACSE:
		switch reason {
		case 1:
			return "no reason given"
		case 2:
			return "protocol version not supported"
		}
	case ul.RejectSourceServiceProviderPres:
		switch reason {
		case 1:
			return "temporary congestion"
		case 2:
			return "local limit exceeded"
		}
	}
	return "reserved"
}

// Client is an established association. Its methods must not be called
// concurrently.
type Client struct {
	a       *ul.Association
	timeout time.Duration
	msgID   uint16
	// proposed maps context IDs to what we proposed (the A-ASSOCIATE-AC
	// carries only the transfer syntax).
	proposed map[byte]ul.PresentationContextRQ
}

// Dial connects to addr and requests an association.
func Dial(ctx context.Context, addr string, cfg Config) (*Client, error) {
	if cfg.CallingAE == "" {
		cfg.CallingAE = DefaultCallingAE
	}
	if cfg.CalledAE == "" {
		cfg.CalledAE = DefaultCalledAE
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	pcs, err := presentationContexts(cfg.Contexts)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if cfg.TLS != nil {
		if conn, err = tlsconf.ClientHandshake(ctx, conn, cfg.TLS, addr, cfg.Timeout); err != nil {
			return nil, fmt.Errorf("TLS with %s: %w", addr, err)
		}
	}
	a, err := ul.Request(ctx, conn, ul.RequestConfig{
		CallingAE:            cfg.CallingAE,
		CalledAE:             cfg.CalledAE,
		PresentationContexts: pcs,
		MaxPDULength:         cfg.MaxPDU,
		Timeout:              cfg.Timeout,
	})
	var rj *ul.RejectError
	if errors.As(err, &rj) {
		return nil, &RejectError{Result: rj.Result, Source: rj.Source, Reason: rj.Reason, CallingAE: cfg.CallingAE, CalledAE: cfg.CalledAE}
	}
	if err != nil {
		return nil, fmt.Errorf("associate with %s: %w", addr, err)
	}
	c := &Client{a: a, timeout: cfg.Timeout, proposed: make(map[byte]ul.PresentationContextRQ)}
	for _, pc := range pcs {
		c.proposed[pc.ID] = pc
	}
	return c, nil
}

// presentationContexts proposes Verification and one context per
// (abstract syntax, transfer syntax) pair, without duplicates.
func presentationContexts(ctxs []Context) ([]ul.PresentationContextRQ, error) {
	type pair struct{ as, ts string }
	seen := map[pair]bool{}
	var out []ul.PresentationContextRQ
	add := func(as, ts string) {
		if as == "" || ts == "" || seen[pair{as, ts}] {
			return
		}
		seen[pair{as, ts}] = true
		out = append(out, ul.PresentationContextRQ{ID: byte(2*len(out) + 1), AbstractSyntax: as, TransferSyntaxes: []string{ts}})
	}
	add(VerificationSOPClass, dataset.ImplicitVRLittleEndian)
	for _, c := range ctxs {
		for _, ts := range c.TransferSyntaxes {
			if len(out) == maxContexts && !seen[pair{c.AbstractSyntax, ts}] {
				return nil, fmt.Errorf("propose %s in %s: %w", c.AbstractSyntax, ts, ErrTooManyContexts)
			}
			add(c.AbstractSyntax, ts)
		}
	}
	return out, nil
}

// Accepted reports whether a presentation context for sopClass in
// transferSyntax was accepted.
func (c *Client) Accepted(sopClass, transferSyntax string) bool {
	_, err := c.context(sopClass, transferSyntax)
	return err == nil
}

// AcceptedTransferSyntaxes returns the transfer syntaxes accepted for
// sopClass, in the order proposed.
func (c *Client) AcceptedTransferSyntaxes(sopClass string) []string {
	var out []string
	for i := range len(c.proposed) {
		id := byte(2*i + 1)
		if pc, ok := c.a.Context(id); ok && c.proposed[id].AbstractSyntax == sopClass {
			out = append(out, pc.TransferSyntax)
		}
	}
	return out
}

func (c *Client) context(sopClass, transferSyntax string) (byte, error) {
	for id, rq := range c.proposed {
		if rq.AbstractSyntax != sopClass {
			continue
		}
		if pc, ok := c.a.Context(id); ok && (transferSyntax == "" || pc.TransferSyntax == transferSyntax) {
			return id, nil
		}
	}
	return 0, fmt.Errorf("%s in %s: %w", sopClass, transferSyntax, ErrNoContext)
}

// watch aborts the association when ctx ends; the returned function stops
// watching.
func (c *Client) watch(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { c.a.Abort(ul.AbortNotSpecified) })
}

func (c *Client) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// response reads the response to the last request; any data set is
// discarded.
func (c *Client) response(field uint16) (*dimse.Command, error) {
	m, err := dimse.ReadMessage(c.a, 0)
	if err != nil {
		return nil, err
	}
	if m.Data != nil {
		if err := m.Data.Drain(); err != nil {
			return nil, err
		}
	}
	if m.Command.CommandField != field || m.Command.MessageIDBeingRespondedTo != c.msgID {
		return nil, fmt.Errorf("got command 0x%04x for message %d, want 0x%04x for %d: %w",
			m.Command.CommandField, m.Command.MessageIDBeingRespondedTo, field, c.msgID, ErrUnexpectedResponse)
	}
	return m.Command, nil
}

// StatusError is a DIMSE failure status from the peer.
type StatusError struct {
	Status  dimse.Status
	Comment string
}

func (e *StatusError) Error() string {
	if e.Comment != "" {
		return fmt.Sprintf("status %v: %s", e.Status, e.Comment)
	}
	return fmt.Sprintf("status %v", e.Status)
}

// Echo sends a C-ECHO-RQ (PS3.7 section 9.3.5) and waits for success.
func (c *Client) Echo(ctx context.Context) error {
	id, err := c.context(VerificationSOPClass, "")
	if err != nil {
		return fmt.Errorf("C-ECHO: %w", err)
	}
	defer c.watch(ctx)()
	c.msgID++
	cmd := &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: c.msgID, AffectedSOPClassUID: VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}
	if err := c.a.WriteMessage(id, cmd.Encode(), nil); err != nil {
		return fmt.Errorf("C-ECHO: %w", c.ctxErr(ctx, err))
	}
	rsp, err := c.response(dimse.CEchoRSP)
	if err != nil {
		return fmt.Errorf("C-ECHO: %w", c.ctxErr(ctx, err))
	}
	if rsp.Status != dimse.StatusSuccess {
		return fmt.Errorf("C-ECHO: %w", &StatusError{Status: rsp.Status, Comment: rsp.ErrorComment})
	}
	return nil
}

// Store sends a C-STORE-RQ (PS3.7 section 9.3.1) whose data set, encoded
// in transferSyntax without File Meta Information, is streamed from data in
// P-DATA-TF fragments within the peer's maximum PDU length. It returns the
// peer's status; a failure status is also returned as a *StatusError.
func (c *Client) Store(ctx context.Context, sopClass, sopInstance, transferSyntax string, data io.Reader) (dimse.Status, error) {
	id, err := c.context(sopClass, transferSyntax)
	if err != nil {
		return 0, fmt.Errorf("C-STORE %s: %w", sopInstance, err)
	}
	defer c.watch(ctx)()
	c.msgID++
	cmd := &dimse.Command{
		CommandField:           dimse.CStoreRQ,
		MessageID:              c.msgID,
		AffectedSOPClassUID:    sopClass,
		AffectedSOPInstanceUID: sopInstance,
		Priority:               dimse.PriorityMedium,
		CommandDataSetType:     dimse.DataSetPresent,
	}
	if err := c.a.WriteMessage(id, cmd.Encode(), nil); err != nil {
		return 0, fmt.Errorf("C-STORE %s: %w", sopInstance, c.ctxErr(ctx, err))
	}
	w := c.a.NewWriter(id, false)
	if _, err := io.Copy(w, data); err != nil {
		// The data set cannot be completed: the association is unusable.
		c.a.Abort(ul.AbortNotSpecified)
		return 0, fmt.Errorf("C-STORE %s: send data set: %w", sopInstance, c.ctxErr(ctx, err))
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("C-STORE %s: %w", sopInstance, c.ctxErr(ctx, err))
	}
	rsp, err := c.response(dimse.CStoreRSP)
	if err != nil {
		return 0, fmt.Errorf("C-STORE %s: %w", sopInstance, c.ctxErr(ctx, err))
	}
	if rsp.Status.IsFailure() {
		return rsp.Status, fmt.Errorf("C-STORE %s: %w", sopInstance, &StatusError{Status: rsp.Status, Comment: rsp.ErrorComment})
	}
	return rsp.Status, nil
}

// Close releases the association (A-RELEASE, PS3.8 section 7.2).
func (c *Client) Close() error {
	return c.a.Release()
}

// Abort aborts the association (A-ABORT).
func (c *Client) Abort() {
	c.a.Abort(ul.AbortNotSpecified)
}

// NewUID returns a UUID-derived UID (PS3.5 annex B.2).
func NewUID() string {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return "2.25." + n.String()
}
