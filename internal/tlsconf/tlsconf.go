// Package tlsconf builds the TLS configurations of radbridge's fronts (MLLP,
// DICOM, gRPC, HTTPS/WSS) and of its client commands.
//
// Every configuration follows BCP 195 (RFC 9325), which DICOM PS3.15 Annex
// B.9 ("BCP195 TLS Secure Transport Connection Profile") and its
// non-downgrading variant (B.10) adopt: TLS 1.2 or later; under TLS 1.2 only
// ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305), which
// excludes RSA key transport, CBC, RC4, 3DES and NULL suites; TLS 1.3 with
// Go's suites (all AEAD). The DHE suites the profile also lists are not
// offered (Go does not implement them); the ECDHE ones are.
//
// The server certificate, its key and the client CA bundle are read from
// files and re-read without a restart when they change (checked at most
// once per CheckInterval, on the next handshake) or when Reload is called
// (SIGHUP). A change that does not load (a half-written file, a key that
// does not match) keeps the previous pair and is logged.
//
// With a client CA file, clients must present a certificate that verifies
// against it (mutual TLS); a front may further restrict clients to an
// allow-list of subjects (see Allowed).
package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CipherSuites are the TLS 1.2 suites we accept (BCP 195 / RFC 9325 section
// 4.2 recommended suites with ECDHE): forward secrecy and authenticated
// encryption only. TLS 1.3 suites are not configurable in Go and are all
// AEAD.
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// MinVersion is the lowest protocol version we speak.
const MinVersion = tls.VersionTLS12

// CheckInterval is how often, at most, the files are checked for changes.
const CheckInterval = time.Second

// DefaultHandshakeTimeout bounds a TLS handshake on our listeners.
const DefaultHandshakeTimeout = 10 * time.Second

// Files names the server's certificate (PEM, the leaf first, then any
// intermediates), its private key (PEM) and, optionally, the CA
// certificates client certificates must chain to.
type Files struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string
}

// Store holds the current certificate and client CAs and reloads them when
// their files change.
type Store struct {
	files Files
	log   *slog.Logger

	mu        sync.Mutex // serialises checks and reloads
	interval  time.Duration
	lastCheck time.Time
	failed    [3][]byte // the files' bytes of the last load that failed
	failedErr string

	state atomic.Pointer[state]
}

type state struct {
	gen       uint64
	cert      *tls.Certificate
	clientCAs *x509.CertPool
	raw       [3][]byte // the files' bytes this state was built from
}

// Load reads the files once; they must be valid. log receives reload
// messages.
func Load(files Files, log *slog.Logger) (*Store, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, errors.New("a certificate file and a key file are both required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{files: files, log: log.With("component", "tls"), interval: CheckInterval}
	raw, err := s.read()
	if err != nil {
		return nil, err
	}
	st, err := s.parse(raw, 0)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	s.lastCheck = time.Now()
	s.logLoaded("TLS certificate loaded", st)
	return s, nil
}

// SetCheckInterval changes how often the files are checked at most (tests
// use 0: on every handshake).
func (s *Store) SetCheckInterval(d time.Duration) {
	s.mu.Lock()
	s.interval = d
	s.mu.Unlock()
}

// MutualTLS reports whether clients must present a certificate.
func (s *Store) MutualTLS() bool { return s.files.ClientCAFile != "" }

// Certificate is the current certificate.
func (s *Store) Certificate() *tls.Certificate { return s.state.Load().cert }

func (s *Store) read() ([3][]byte, error) {
	var raw [3][]byte
	for i, p := range []string{s.files.CertFile, s.files.KeyFile, s.files.ClientCAFile} {
		if p == "" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return raw, err
		}
		raw[i] = b
	}
	return raw, nil
}

func (s *Store) parse(raw [3][]byte, gen uint64) (*state, error) {
	st := &state{gen: gen, raw: raw}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", s.files.CertFile, s.files.KeyFile, err)
	}
	st.cert = &cert
	if s.files.ClientCAFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw[2]) {
			return nil, fmt.Errorf("client CA file %s: no PEM certificate in it", s.files.ClientCAFile)
		}
		st.clientCAs = pool
	}
	return st, nil
}

func (s *Store) logLoaded(msg string, st *state) {
	leaf := st.cert.Leaf
	s.log.Info(msg, "cert_file", s.files.CertFile, "subject", SubjectDN(leaf),
		"serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"client_ca_file", s.files.ClientCAFile)
	if time.Now().After(leaf.NotAfter) {
		s.log.Warn("TLS certificate has expired", "cert_file", s.files.CertFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// check reloads the files if their contents changed, looking at most once
// per interval (the files are small; comparing bytes catches a change that
// keeps the size and modification time).
func (s *Store) check() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.lastCheck) < s.interval {
		return
	}
	s.lastCheck = time.Now()
	_ = s.reloadLocked(false)
}

// Reload re-reads the files now (SIGHUP). It returns why the new files were
// not taken; the previous certificate then stays in use.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastCheck = time.Now()
	return s.reloadLocked(true)
}

func (s *Store) reloadLocked(force bool) error {
	old := s.state.Load()
	raw, err := s.read()
	if err == nil && same(raw, old.raw) {
		s.failed = [3][]byte{}
		return nil
	}
	if err == nil && !force && same(raw, s.failed) {
		return errors.New("unchanged since the last failed load")
	}
	var st *state
	if err == nil {
		st, err = s.parse(raw, old.gen+1)
	}
	if err != nil {
		// Say so once per distinct failure, not at every check.
		if force || !same(raw, s.failed) || err.Error() != s.failedErr {
			s.log.Warn("TLS files changed but do not load; keeping the previous certificate", "err", err)
		}
		s.failed, s.failedErr = raw, err.Error()
		return err
	}
	s.failed, s.failedErr = [3][]byte{}, ""
	s.state.Store(st)
	s.logLoaded("TLS certificate reloaded", st)
	return nil
}

func same(a, b [3][]byte) bool {
	return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1]) && bytes.Equal(a[2], b[2])
}

// Front is one listener's TLS setup: the shared store plus the front's
// client allow-list.
type Front struct {
	// Name names the front in logs (the daemon's log components: "hl7",
	// "dicom", "grpc", "https").
	Name string
	// Flag is the allow-list's flag, named in refusals.
	Flag string
	// Allowed restricts verified clients (only with a client CA); empty
	// allows any client whose certificate verifies.
	Allowed []string
	// NextProtos are the ALPN protocols (h2 for gRPC).
	NextProtos []string
	Log        *slog.Logger

	store  *Store
	cached atomic.Pointer[frontConfig]
}

type frontConfig struct {
	gen uint64
	cfg *tls.Config
}

// ServerConfig returns the server configuration of a front. Every handshake
// takes the store's current certificate and client CAs.
func (s *Store) ServerConfig(f *Front) *tls.Config {
	f.store = s
	if f.Log == nil {
		f.Log = s.log
	}
	return &tls.Config{
		MinVersion:   MinVersion,
		CipherSuites: CipherSuites,
		NextProtos:   f.NextProtos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.check()
			return s.state.Load().cert, nil
		},
		GetConfigForClient: f.configForClient,
	}
}

func (f *Front) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	f.store.check()
	st := f.store.state.Load()
	c := f.cached.Load()
	if c == nil || c.gen != st.gen {
		cfg := &tls.Config{
			MinVersion:   MinVersion,
			CipherSuites: CipherSuites,
			NextProtos:   f.NextProtos,
			Certificates: []tls.Certificate{*st.cert},
		}
		if st.clientCAs != nil {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			cfg.ClientCAs = st.clientCAs
		}
		c = &frontConfig{gen: st.gen, cfg: cfg}
		f.cached.Store(c)
	}
	if c.cfg.ClientAuth != tls.RequireAndVerifyClientCert || len(f.Allowed) == 0 {
		return c.cfg, nil
	}
	// The allow-list check logs the remote address of a refused client.
	cfg := c.cfg.Clone()
	remote := "?"
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr().String()
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no client certificate")
		}
		leaf := cs.PeerCertificates[0]
		if Allowed(leaf, f.Allowed) {
			return nil
		}
		f.Log.Warn("TLS client refused: certificate subject not on the allow-list", "component", f.Name, "remote", remote,
			"subject", SubjectDN(leaf), "dns_names", leaf.DNSNames, "allow_list", "--"+f.Flag)
		return fmt.Errorf("client certificate %q is not on --%s", SubjectDN(leaf), f.Flag)
	}
	return cfg, nil
}

// Allowed reports whether a verified client certificate is on an
// allow-list; an empty list allows any. An entry matches the certificate's
// subject common name (CN) exactly, its whole subject distinguished name in
// RFC 2253 form as `openssl x509 -noout -subject -nameopt RFC2253` prints it
// ("CN=modality1,O=Hospital,C=NL"), one of its DNS subject alternative
// names (case-insensitively) or one of its URI subject alternative names.
func Allowed(leaf *x509.Certificate, allowed []string) bool {
	if len(allowed) == 0 {
		return true
	}
	dn := SubjectDN(leaf)
	for _, a := range allowed {
		if a == leaf.Subject.CommonName || a == dn || a == leaf.Subject.String() {
			return true
		}
		for _, n := range leaf.DNSNames {
			if strings.EqualFold(a, n) {
				return true
			}
		}
		for _, u := range leaf.URIs {
			if a == u.String() {
				return true
			}
		}
	}
	return false
}

// SubjectDN is the certificate's subject in RFC 2253 form, in the order
// the certificate has its attributes (the last first), as
// `openssl x509 -noout -subject -nameopt RFC2253` prints it. (Go's
// Subject.String() reorders the attributes; it is accepted too.)
func SubjectDN(leaf *x509.Certificate) string {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(leaf.RawSubject, &seq); err != nil || len(rest) > 0 {
		return leaf.Subject.String()
	}
	return seq.String()
}

// SplitSubjects splits an allow-list flag. Entries are separated by
// commas; a value with a semicolon is separated by semicolons instead (a
// full DN has commas), and a value without one whose every comma-separated
// part is ATTR=value is a single DN.
func SplitSubjects(s string) []string {
	sep := ","
	if strings.Contains(s, ";") {
		sep = ";"
	} else if dn := strings.TrimSpace(s); dn != "" {
		single := true
		for _, part := range strings.Split(dn, ",") {
			if !strings.Contains(part, "=") {
				single = false
			}
		}
		if single {
			return []string{dn}
		}
	}
	var out []string
	for _, f := range strings.Split(s, sep) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// NewListener wraps ln so that its connections speak TLS. The handshake
// runs on the connection's first Read or Write (in the connection's own
// goroutine, never in the accept loop) and must finish within timeout; a
// failed handshake is logged once with the peer's address and every later
// Read or Write returns its error.
func NewListener(ln net.Listener, cfg *tls.Config, timeout time.Duration, log *slog.Logger) net.Listener {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &listener{Listener: ln, cfg: cfg, timeout: timeout, log: log}
}

type listener struct {
	net.Listener
	cfg     *tls.Config
	timeout time.Duration
	log     *slog.Logger
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: tls.Server(c, l.cfg), timeout: l.timeout, log: l.log}, nil
}

// Conn is a server-side TLS connection whose handshake is bounded in time.
type Conn struct {
	*tls.Conn
	timeout time.Duration
	log     *slog.Logger
	once    sync.Once
	err     error
}

// Handshake runs the handshake once, within the listener's timeout.
func (c *Conn) Handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		c.err = c.Conn.HandshakeContext(ctx)
		if c.err != nil {
			c.log.Warn("TLS handshake failed", "remote", c.RemoteAddr().String(), "err", c.err)
			return
		}
		if st := c.ConnectionState(); len(st.PeerCertificates) > 0 {
			c.log.Info("TLS client authenticated", "remote", c.RemoteAddr().String(), "subject", SubjectDN(st.PeerCertificates[0]))
		}
	})
	return c.err
}

func (c *Conn) Read(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *Conn) Write(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// ClientFiles configure a client: the CA certificates that verify the
// server (empty: the system's), an optional client certificate and key
// (mutual TLS) and the server name to verify (empty: the dialled host).
type ClientFiles struct {
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string
}

// ClientConfig builds a client configuration with the same protocol floor
// and suites as our servers.
func ClientConfig(f ClientFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: MinVersion, CipherSuites: CipherSuites, ServerName: f.ServerName}
	if f.CAFile != "" {
		b, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", f.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("a client certificate needs both a certificate file and a key file")
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Describe says, for logs, what a front's TLS does.
func (s *Store) Describe(f *Front) string {
	switch {
	case !s.MutualTLS():
		return "tls"
	case len(f.Allowed) == 0:
		return "mtls (any client certificate from the client CA)"
	default:
		return "mtls (allow-list " + strings.Join(f.Allowed, "; ") + ")"
	}
}

// ClientHandshake runs a client handshake on conn within timeout; an empty
// ServerName in cfg verifies the host of addr. On failure conn is closed.
func ClientHandshake(ctx context.Context, conn net.Conn, cfg *tls.Config, addr string, timeout time.Duration) (net.Conn, error) {
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(conn, cfg)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}
