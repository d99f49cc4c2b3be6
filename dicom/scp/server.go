// Package scp is radbridge's DICOM service class provider: it accepts
// associations (PS3.8, package ul) and serves Verification (PS3.4 annex A),
// every Storage SOP class (PS3.4 annex B) with streaming, bounded-memory
// C-STORE, Instance Availability Notification (PS3.4 annex R) and Modality
// Performed Procedure Step (PS3.4 annex F.7) over DIMSE (PS3.7, package
// dimse). Instances can be written as PS3.10 files.
//
// A C-STORE is answered with success only after Handler.StoreInstance
// returned nil. Patient data is never logged.
package scp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
	"radbridge/dicom/part10"
	"radbridge/dicom/ul"
	"radbridge/ingest"
	"radbridge/internal/lograte"
)

// AllowedCaller is one entry of Config.AllowedCallers.
type AllowedCaller struct {
	AETitle string
	// Host, when set, is the IP address the caller must connect from.
	Host string
}

// Config configures the SCP. Zero values take the documented defaults.
type Config struct {
	// AETitle is our called AE title (default RADBRIDGE).
	AETitle string
	// AllowedCallers, when not empty, lists the calling AE titles (and
	// optionally hosts) allowed to associate; others are rejected with
	// A-ASSOCIATE-RJ reason 3.
	AllowedCallers []AllowedCaller
	// MaxAssociations bounds concurrent associations (default 32); beyond
	// it A-ASSOCIATE-RJ transient, source 3, reason 2 (local limit exceeded).
	// A connection holds a slot from the moment it is accepted (awaiting
	// its A-ASSOCIATE-RQ counts); a rejected one holds none.
	MaxAssociations int
	// MaxAssociationsPerHost bounds the associations of one remote IP
	// address (0: MaxAssociations); beyond it the same A-ASSOCIATE-RJ, so
	// that a flood from one host leaves room for the others. Connections
	// still negotiating beyond twice either limit are closed at once.
	MaxAssociationsPerHost int
	// MaxPDULength is the maximum P-DATA-TF length we advertise (default
	// 64 KiB). Any PDU longer than max(1 MiB, MaxPDULength) is aborted.
	MaxPDULength uint32
	// ARTIMTimeout bounds association setup and release (default 30 s).
	ARTIMTimeout time.Duration
	// IdleTimeout aborts an association silent this long (default 5 min).
	IdleTimeout time.Duration
	// DrainTimeout is how long associations may finish after shutdown
	// starts before they are aborted (default 10 s).
	DrainTimeout time.Duration
	// MaxHeaderBytes bounds the data set header (everything before Pixel
	// Data) held in memory (default 4 MiB).
	MaxHeaderBytes int
	// MaxNotificationBytes bounds an N-CREATE or N-SET data set (default
	// 32 MiB: the IAN of a 100,000-instance study is about 14 MB). A larger
	// one is refused with 0213 (resource limitation), a failure a sender
	// does not retry unchanged, not with A700.
	MaxNotificationBytes int
	// MaxElements bounds the elements of a C-STORE data set header
	// (default dataset.DefaultMaxElements): parsing costs heap per element,
	// so a header of many tiny elements is refused with A700 before it is
	// parsed.
	MaxElements int
	// StoreDir, when set, receives each instance as a Part-10 file
	// <StoreDir>/<study>/<series>/<sop>.dcm, written atomically.
	StoreDir string
	// Sampler, when set and StoreDir is not, is offered the instances it
	// wants, in memory (package internal/app: previews).
	Sampler Sampler
	// Logger receives connection-level logs (default slog.Default()).
	Logger *slog.Logger
}

// Stats are cumulative counters.
type Stats struct {
	AssociationsAccepted uint64
	AssociationsRejected uint64
	AssociationsAborted  uint64
	InstancesStored      uint64
	BytesReceived        uint64
	StoreFailures        uint64
	Echoes               uint64
	Notifications        uint64 // IAN and MPPS messages answered with success
	IANs                 uint64 // of Notifications: Instance Availability Notifications
	MPPS                 uint64 // of Notifications: MPPS N-CREATE and N-SET
	// RejectedBy splits AssociationsRejected by reason, a bounded set fit
	// for metric labels: called_ae_not_recognized, calling_ae_not_recognized,
	// local_limit_exceeded, temporary_congestion, protocol_version,
	// application_context, other.
	RejectedBy map[string]uint64
	// ActiveAssociations is the number of associations open now (including
	// those still negotiating).
	ActiveAssociations int64
}

type counters struct {
	accepted, rejected, aborted, stored, bytes, failures, echoes, notifications atomic.Uint64
	ians, mpps                                                                  atomic.Uint64
	rejectedBy                                                                  [len(rejectReasons)]atomic.Uint64
}

// rejectReasons name the A-ASSOCIATE-RJ reasons we count (PS3.8 table 9-21).
var rejectReasons = [...]string{"called_ae_not_recognized", "calling_ae_not_recognized", "local_limit_exceeded",
	"temporary_congestion", "protocol_version", "application_context", "other"}

// rejectReason names rj for Stats.RejectedBy.
func rejectReason(rj ul.AssociateRJ) int {
	switch {
	case rj.Source == ul.RejectSourceServiceUser && rj.Reason == ul.RejectCalledAENotRecognized:
		return 0
	case rj.Source == ul.RejectSourceServiceUser && rj.Reason == ul.RejectCallingAENotRecognized:
		return 1
	case rj.Source == ul.RejectSourceServiceProviderPres && rj.Reason == ul.RejectLocalLimitExceeded:
		return 2
	case rj.Source == ul.RejectSourceServiceProviderPres && rj.Reason == ul.RejectTemporaryCongestion:
		return 3
	case rj.Source == ul.RejectSourceServiceProviderACSE && rj.Reason == ul.RejectProtocolVersionNotSupp:
		return 4
	case rj.Source == ul.RejectSourceServiceUser && rj.Reason == ul.RejectApplicationContextNotSupp:
		return 5
	}
	return 6
}

// Server is a DICOM SCP.
type Server struct {
	cfg     Config
	h       Handler
	log     *slog.Logger
	c       counters
	active  atomic.Int64
	pending atomic.Int64
	mu      sync.Mutex
	hosts   map[string]*hostCount // by remote IP, under mu
	// logs bounds the lines bad peers cause (rejections, failed setups,
	// aborts): 10 a second of each kind, then a count of those left out.
	logs *lograte.Limiter
}

// hostCount counts one remote host's connections: pending (accepted, not
// yet ended) and active (holding an association slot).
type hostCount struct{ pending, active int }

// New returns a Server; h must not be nil.
func New(cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, errors.New("new SCP: nil handler")
	}
	if cfg.AETitle == "" {
		cfg.AETitle = "RADBRIDGE"
	}
	if len(cfg.AETitle) > 16 {
		return nil, fmt.Errorf("new SCP: AE title %q longer than 16", cfg.AETitle)
	}
	if cfg.MaxAssociations <= 0 {
		cfg.MaxAssociations = 32
	}
	if cfg.MaxAssociationsPerHost <= 0 || cfg.MaxAssociationsPerHost > cfg.MaxAssociations {
		cfg.MaxAssociationsPerHost = cfg.MaxAssociations
	}
	if cfg.MaxPDULength == 0 {
		cfg.MaxPDULength = ul.DefaultMaxPDULength
	}
	if cfg.ARTIMTimeout <= 0 {
		cfg.ARTIMTimeout = ul.DefaultARTIMTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = ul.DefaultIdleTimeout
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 4 << 20
	}
	if cfg.MaxNotificationBytes <= 0 {
		cfg.MaxNotificationBytes = 32 << 20
	}
	if cfg.MaxElements <= 0 {
		cfg.MaxElements = dataset.DefaultMaxElements
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StoreDir != "" {
		// A live reception writes its temporary file at least once per idle
		// timeout; one untouched for twice that was left by a crash.
		if n := part10.SweepIncoming(cfg.StoreDir, 2*cfg.IdleTimeout); n > 0 {
			cfg.Logger.Info("removed temporary files of receptions a crash interrupted", "component", "dicom", "files", n)
		}
	}
	return &Server{cfg: cfg, h: h, log: cfg.Logger.With("component", "dicom"), hosts: make(map[string]*hostCount),
		logs: lograte.New(10, time.Second)}, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		AssociationsAccepted: s.c.accepted.Load(),
		AssociationsRejected: s.c.rejected.Load(),
		AssociationsAborted:  s.c.aborted.Load(),
		InstancesStored:      s.c.stored.Load(),
		BytesReceived:        s.c.bytes.Load(),
		StoreFailures:        s.c.failures.Load(),
		Echoes:               s.c.echoes.Load(),
		Notifications:        s.c.notifications.Load(),
		IANs:                 s.c.ians.Load(),
		MPPS:                 s.c.mpps.Load(),
		RejectedBy:           make(map[string]uint64, len(rejectReasons)),
		ActiveAssociations:   s.active.Load(),
	}
	for i, r := range rejectReasons {
		st.RejectedBy[r] = s.c.rejectedBy[i].Load()
	}
	return st
}

// Serve accepts associations on ln until ctx is cancelled. Then it closes
// ln, lets open associations finish for DrainTimeout, aborts the rest and
// returns when every connection goroutine has ended.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// A listener failure shuts down like a cancellation: drain, then abort.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var err error
	backoff := 5 * time.Millisecond
	for {
		conn, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(aerr, net.ErrClosed) {
				err = fmt.Errorf("accept: %w", aerr)
				cancel()
				break
			}
			// Out of file descriptors and the like: wait and retry.
			s.log.Warn("accept failed", "err", aerr, "retry_in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		// Connections still negotiating count towards the limit; past twice
		// the limit (or twice the per-host limit from one host) we do not
		// even spend a goroutine on a rejection.
		host := remoteHost(conn.RemoteAddr())
		n := s.pending.Add(1)
		s.mu.Lock()
		hc := s.hosts[host]
		if hc == nil {
			hc = &hostCount{}
			s.hosts[host] = hc
		}
		hc.pending++
		over := n > int64(2*s.cfg.MaxAssociations) || hc.pending > 2*s.cfg.MaxAssociationsPerHost
		s.mu.Unlock()
		if over {
			s.release(host, false)
			s.c.rejected.Add(1)
			s.c.rejectedBy[2].Add(1) // local limit, without even an A-ASSOCIATE-RJ
			_ = conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.release(host, false)
			s.serveConn(ctx, conn, host)
		}()
	}
	wg.Wait()
	return err
}

// remoteHost is the IP address of a remote address.
func remoteHost(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// acquire takes an association slot for host; false when the global or
// the per-host limit is reached.
func (s *Server) acquire(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	hc := s.hosts[host]
	if hc == nil {
		hc = &hostCount{}
		s.hosts[host] = hc
	}
	if s.active.Load() >= int64(s.cfg.MaxAssociations) || hc.active >= s.cfg.MaxAssociationsPerHost {
		return false
	}
	s.active.Add(1)
	hc.active++
	return true
}

// release gives back host's association slot (active) or its pending
// count (not active).
func (s *Server) release(host string, active bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hc := s.hosts[host]
	if active {
		s.active.Add(-1)
		hc.active--
	} else {
		s.pending.Add(-1)
		hc.pending--
	}
	if hc.pending <= 0 && hc.active <= 0 {
		delete(s.hosts, host)
	}
}

func (s *Server) callerAllowed(calling string, remote net.Addr) bool {
	if len(s.cfg.AllowedCallers) == 0 {
		return true
	}
	host := ""
	if ta, ok := remote.(*net.TCPAddr); ok {
		host = ta.IP.String()
	} else if remote != nil {
		host, _, _ = net.SplitHostPort(remote.String())
	}
	for _, c := range s.cfg.AllowedCallers {
		if c.AETitle != calling {
			continue
		}
		if c.Host == "" {
			return true
		}
		if ip := net.ParseIP(c.Host); ip != nil && ip.Equal(net.ParseIP(host)) {
			return true
		}
		if strings.EqualFold(c.Host, host) {
			return true
		}
	}
	return false
}

func (s *Server) serveConn(ctx context.Context, conn net.Conn, host string) {
	log := s.log.With("remote", conn.RemoteAddr().String())
	cfg := ul.AcceptConfig{
		AETitle:                   s.cfg.AETitle,
		CallerAllowed:             s.callerAllowed,
		Negotiate:                 negotiate,
		MaxPDULength:              s.cfg.MaxPDULength,
		ImplementationClassUID:    part10.ImplementationClassUID,
		ImplementationVersionName: part10.ImplementationVersionName,
		ARTIMTimeout:              s.cfg.ARTIMTimeout,
		IdleTimeout:               s.cfg.IdleTimeout,
	}
	if s.acquire(host) {
		defer s.release(host, true)
	} else {
		cfg.Reject = &ul.AssociateRJ{Result: ul.RejectTransient, Source: ul.RejectSourceServiceProviderPres, Reason: ul.RejectLocalLimitExceeded}
	}
	if ctx.Err() != nil {
		cfg.Reject = &ul.AssociateRJ{Result: ul.RejectTransient, Source: ul.RejectSourceServiceProviderPres, Reason: ul.RejectTemporaryCongestion}
	}
	a, err := ul.Accept(ctx, conn, cfg)
	if err != nil {
		var rj *ul.RejectError
		if errors.As(err, &rj) {
			s.c.rejected.Add(1)
			s.c.rejectedBy[rejectReason(rj.AssociateRJ)].Add(1)
			if ok, left := s.logs.Allow("rejected"); ok {
				log.Warn("association rejected", "calling_ae", rj.CallingAE, "called_ae", rj.CalledAE,
					"result", rj.Result, "source", rj.Source, "reason", rj.Reason, "suppressed", left)
			}
			return
		}
		s.c.aborted.Add(1)
		if ok, left := s.logs.Allow("setup failed"); ok {
			log.Warn("association setup failed", "err", err, "suppressed", left)
		}
		return
	}
	s.c.accepted.Add(1)
	log = log.With("calling_ae", a.CallingAE)
	log.Info("association accepted", "called_ae", a.CalledAE, "contexts", len(a.Contexts()),
		"peer_max_pdu", a.PeerMaxPDULength, "peer_implementation", a.PeerImplementationClassUID)

	// Handler calls survive the server's cancellation for the drain period:
	// an instance being committed gets to finish.
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var mu sync.Mutex
	var drainTimer *time.Timer
	stopDrain := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		drainTimer = time.AfterFunc(s.cfg.DrainTimeout, func() {
			cancel()
			a.Abort(ul.AbortNotSpecified)
		})
	})
	defer func() {
		stopDrain()
		mu.Lock()
		if drainTimer != nil {
			drainTimer.Stop()
		}
		mu.Unlock()
	}()

	c := &assoc{s: s, a: a, log: log, peer: ingest.Peer{CallingAE: a.CallingAE, CalledAE: a.CalledAE, RemoteAddr: conn.RemoteAddr().String()}}
	err = c.run(actx)
	switch {
	case errors.Is(err, ul.ErrReleased):
		log.Info("association released")
	default:
		s.c.aborted.Add(1)
		if ok, left := s.logs.Allow("aborted"); ok {
			log.Warn("association aborted", "err", err, "suppressed", left)
		}
	}
}

// assoc serves the DIMSE messages of one association.
type assoc struct {
	s    *Server
	a    *ul.Association
	log  *slog.Logger
	peer ingest.Peer
}

func (c *assoc) run(ctx context.Context) error {
	for {
		msg, err := dimse.ReadMessage(c.a, 0)
		if err != nil {
			// ul errors already answered the peer; DIMSE-level ones need an
			// abort here.
			if errors.Is(err, dimse.ErrMalformedCommand) || errors.Is(err, dimse.ErrCommandTooLarge) {
				c.a.Abort(ul.AbortInvalidParameterValue)
			} else if errors.Is(err, dimse.ErrUnexpectedPDV) {
				c.a.Abort(ul.AbortUnexpectedPDU)
			}
			return err
		}
		if err := c.dispatch(ctx, msg); err != nil {
			if errors.Is(err, dimse.ErrUnexpectedPDV) {
				c.a.Abort(ul.AbortUnexpectedPDU)
			} else {
				c.a.Abort(ul.AbortNotSpecified)
			}
			return err
		}
	}
}

func (c *assoc) dispatch(ctx context.Context, msg *dimse.Message) error {
	cmd := msg.Command
	switch cmd.CommandField {
	case dimse.CEchoRQ:
		if msg.Data != nil {
			if err := msg.Data.Drain(); err != nil {
				return err
			}
		}
		c.s.c.echoes.Add(1)
		return dimse.Respond(c.a, msg.ContextID, cmd, dimse.CEchoRSP, dimse.StatusSuccess, "")
	case dimse.CStoreRQ:
		return c.store(ctx, msg)
	case dimse.NCreateRQ, dimse.NSetRQ:
		return c.normalized(ctx, msg)
	case dimse.CCancelRQ:
		// C-CANCEL has no response (PS3.7 section 9.3.2.3).
		return nil
	}
	if msg.Data != nil {
		if err := msg.Data.Drain(); err != nil {
			return err
		}
	}
	if cmd.IsResponse() {
		// We never send requests; a stray response is ignored.
		return nil
	}
	c.log.Warn("unsupported DIMSE command", "command_field", fmt.Sprintf("0x%04x", cmd.CommandField))
	return dimse.Respond(c.a, msg.ContextID, cmd, cmd.CommandField|0x8000, dimse.StatusUnrecognizedOperation,
		"operation not supported by this SCP")
}

// handlerStatus maps a handler error to a status and an Error Comment: a
// StatusError's own, else A700 with a fixed comment; detail is the error
// the peer is not told.
func handlerStatus(err error) (st dimse.Status, comment string, detail error) {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status, se.Comment, nil
	}
	return dimse.StatusOutOfResources, commentNotRecorded, err
}
