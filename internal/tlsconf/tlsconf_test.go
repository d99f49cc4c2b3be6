package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"radbridge/internal/tlsconf"
	"radbridge/internal/tlsconf/tlstest"
)

// serve runs one TLS listener on loopback that echoes one line per
// connection.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlsconf.NewListener(raw, cfg, 0, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				n, err := c.Read(buf)
				if err == nil {
					_, _ = c.Write(buf[:n])
				}
			}()
		}
	}()
	return raw.Addr().String()
}

// roundTrip connects, sends "ping" and returns the server certificate's
// serial number; the error is the handshake's or the echo's.
func roundTrip(addr string, cfg *tls.Config) (string, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		return "", err
	}
	// Under TLS 1.3 a refused client certificate shows up on the first read.
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func TestReloadAndBrokenFilesKeepTheOldPair(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "Test CA")
	first := ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}, IP: []string{"127.0.0.1"}})
	first.Write(t, dir, "server")
	st, err := tlsconf.Load(tlsconf.Files{CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.SetCheckInterval(0)
	addr := serve(t, st.ServerConfig(&tlsconf.Front{Name: "test", Flag: "test-allowed-subjects"}))
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}

	got, err := roundTrip(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if want := first.Cert.SerialNumber.String(); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}

	second := ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}})
	second.Write(t, dir, "server")
	if got, err = roundTrip(addr, client); err != nil {
		t.Fatal(err)
	}
	if want := second.Cert.SerialNumber.String(); got != want {
		t.Fatalf("after replacing the files: serial %s, want the new %s", got, want)
	}

	// A broken certificate file (a half-written one, say) keeps the pair in use.
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), []byte("-----BEGIN CERTIFICATE-----\nMIIB"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err = roundTrip(addr, client); err != nil {
		t.Fatal(err)
	}
	if want := second.Cert.SerialNumber.String(); got != want {
		t.Fatalf("after breaking the file: serial %s, want the previous %s", got, want)
	}
	if err := st.Reload(); err == nil {
		t.Fatal("Reload of a broken certificate file succeeded")
	}
	// A key that does not match the certificate is refused too.
	third := ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}})
	third.Write(t, dir, "server")
	if err := os.WriteFile(filepath.Join(dir, "server.key"), second.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Reload(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("Reload with a mismatched key: %v", err)
	}
	if got, err = roundTrip(addr, client); err != nil || got != second.Cert.SerialNumber.String() {
		t.Fatalf("after a mismatched key: serial %s (%v), want the previous %s", got, err, second.Cert.SerialNumber)
	}
}

func TestProtocolFloorAndCipherSuites(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "Test CA")
	ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}, RSA: true}).Write(t, dir, "server")
	st, err := tlsconf.Load(tlsconf.Files{CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, st.ServerConfig(&tlsconf.Front{Name: "test"}))
	for _, tc := range []struct {
		name     string
		min, max uint16
		suites   []uint16
		ok       bool
	}{
		{"TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, nil, true},
		{"TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, true},
		{"TLS 1.2 ECDHE-RSA-CHACHA20-POLY1305", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"TLS 1.1", tls.VersionTLS11, tls.VersionTLS11, nil, false},
		{"TLS 1.0", tls.VersionTLS10, tls.VersionTLS10, nil, false},
		{"TLS 1.2 RSA key transport AES128-GCM-SHA256", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}, false},
		{"TLS 1.2 AES128-SHA (CBC)", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}, false},
		{"TLS 1.2 ECDHE-RSA-AES128-SHA (CBC)", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}, false},
		{"TLS 1.2 ECDHE-RSA-3DES", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := roundTrip(addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tc.min, MaxVersion: tc.max, CipherSuites: tc.suites})
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestMutualTLSAllowList(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "Test CA")
	other := tlstest.NewCA(t, "Other CA")
	ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}}).Write(t, dir, "server")
	ca.WriteCert(t, filepath.Join(dir, "ca.crt"))
	st, err := tlsconf.Load(tlsconf.Files{CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key"), ClientCAFile: filepath.Join(dir, "ca.crt")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.MutualTLS() {
		t.Fatal("MutualTLS() false with a client CA file")
	}
	u, _ := url.Parse("spiffe://hospital.example/ris")
	clients := map[string]tlstest.Pair{
		"modality1":     ca.Issue(t, tlstest.Leaf{CN: "modality1", O: "Hospital", Client: true}),
		"by-dn":         ca.Issue(t, tlstest.Leaf{CN: "ws7", O: "Hospital", Client: true}),
		"by-dns":        ca.Issue(t, tlstest.Leaf{CN: "x", DNS: []string{"PACS.hospital.example"}, Client: true}),
		"by-uri":        ca.Issue(t, tlstest.Leaf{CN: "y", URIs: []*url.URL{u}, Client: true}),
		"stranger":      ca.Issue(t, tlstest.Leaf{CN: "stranger", O: "Hospital", Client: true}),
		"other-ca":      other.Issue(t, tlstest.Leaf{CN: "modality1", Client: true}),
		"dn-wrong-org":  ca.Issue(t, tlstest.Leaf{CN: "ws7", O: "Elsewhere", Client: true}),
		"cn-in-org-too": ca.Issue(t, tlstest.Leaf{CN: "z", O: "modality1", Client: true}),
	}
	allowed := tlsconf.SplitSubjects("modality1; CN=ws7,O=Hospital; pacs.hospital.example; spiffe://hospital.example/ris")
	if len(allowed) != 4 {
		t.Fatalf("SplitSubjects: %q", allowed)
	}
	restricted := serve(t, st.ServerConfig(&tlsconf.Front{Name: "test", Flag: "test-allowed-subjects", Allowed: allowed}))
	open := serve(t, st.ServerConfig(&tlsconf.Front{Name: "test", Flag: "test-allowed-subjects"}))

	for _, tc := range []struct {
		client        string // "" presents no certificate
		restricted    bool
		wantAllowedOK bool
	}{
		{"modality1", true, true},
		{"by-dn", true, true},
		{"by-dns", true, true},
		{"by-uri", true, true},
		{"stranger", true, false},
		{"dn-wrong-org", true, false},
		{"cn-in-org-too", true, false},
		{"other-ca", true, false},
		{"", true, false},
		{"stranger", false, true},
		{"other-ca", false, false},
		{"", false, false},
	} {
		name := tc.client
		if name == "" {
			name = "no certificate"
		}
		addr := open
		if tc.restricted {
			addr, name = restricted, "allow-list/"+name
		}
		t.Run(name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
			if tc.client != "" {
				cfg.Certificates = []tls.Certificate{clients[tc.client].TLS(t)}
			}
			_, err := roundTrip(addr, cfg)
			if tc.wantAllowedOK && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.wantAllowedOK && err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestSilentPeerDoesNotBlockAccept(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "Test CA")
	ca.Issue(t, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}}).Write(t, dir, "server")
	st, err := tlsconf.Load(tlsconf.Files{CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tlsconf.NewListener(raw, st.ServerConfig(&tlsconf.Front{Name: "test"}), 1, nil)
	defer ln.Close()
	silent, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Accept returns at once: the handshake is the connection's business.
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The silent peer's handshake ends with the handshake timeout.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a peer that never handshook succeeded")
	}
	if err := c.(*tlsconf.Conn).Handshake(); err == nil {
		t.Fatal("handshake with a silent peer succeeded")
	}
}

func TestClientConfig(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "Test CA")
	ca.WriteCert(t, filepath.Join(dir, "ca.crt"))
	ca.Issue(t, tlstest.Leaf{CN: "c", Client: true}).Write(t, dir, "client")
	cfg, err := tlsconf.ClientConfig(tlsconf.ClientFiles{CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key"), ServerName: "pacs"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.ServerName != "pacs" || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("config %+v", cfg)
	}
	if _, err := tlsconf.ClientConfig(tlsconf.ClientFiles{CertFile: filepath.Join(dir, "client.crt")}); err == nil {
		t.Fatal("a certificate without a key was accepted")
	}
	if _, err := tlsconf.ClientConfig(tlsconf.ClientFiles{CAFile: filepath.Join(dir, "client.key")}); err == nil {
		t.Fatal("a CA file without certificates was accepted")
	}
}

// TestAllowedOpenSSLOrder: a subject made by `openssl req -subj
// "/CN=modality1/O=Hospital"` (CN first in the certificate) is matched in
// the order openssl prints it with -nameopt RFC2253.
func TestAllowedOpenSSLOrder(t *testing.T) {
	seq := pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "modality1"}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "Hospital"}},
	}
	raw, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{RawSubject: raw}
	leaf.Subject.FillFromRDNSequence(&seq)
	if got, want := tlsconf.SubjectDN(leaf), "O=Hospital,CN=modality1"; got != want {
		t.Errorf("SubjectDN = %q, want %q", got, want)
	}
	for _, entry := range []string{"O=Hospital,CN=modality1", "CN=modality1,O=Hospital", "modality1"} {
		if !tlsconf.Allowed(leaf, []string{entry}) {
			t.Errorf("%q does not match", entry)
		}
	}
	if tlsconf.Allowed(leaf, []string{"O=Elsewhere,CN=modality1", "Hospital"}) {
		t.Error("a wrong DN or the organisation alone matched")
	}
}

func TestAllowedEmptyListAllowsAny(t *testing.T) {
	if !tlsconf.Allowed(&x509.Certificate{Subject: pkix.Name{CommonName: "anyone"}}, nil) {
		t.Fatal("an empty allow-list refused a client")
	}
}

func TestSplitSubjects(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"modality1, ris.hospital.example", []string{"modality1", "ris.hospital.example"}},
		{"CN=ws7,O=Hospital,C=NL", []string{"CN=ws7,O=Hospital,C=NL"}},
		{"CN=ws7,O=Hospital; modality1;", []string{"CN=ws7,O=Hospital", "modality1"}},
		{"modality1,CN=ws7", []string{"modality1", "CN=ws7"}},
	} {
		got := tlsconf.SplitSubjects(tc.in)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("SplitSubjects(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
