package bench

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"radbridge/hl7/mllp"
	"radbridge/internal/tlsconf/tlstest"
)

// startMLLPTLSDaemon starts an in-process daemon with a plain and a TLS
// MLLP listener (same receiver; RSA 2048 certificate from a test CA) and
// returns both addresses and a client configuration that trusts the CA.
func startMLLPTLSDaemon(b *testing.B, extra ...string) (plain, secure string, client *tls.Config) {
	b.Helper()
	dir := b.TempDir()
	ca := tlstest.NewCA(b, "bench CA")
	ca.Issue(b, tlstest.Leaf{CN: "radbridge", DNS: []string{"localhost"}, RSA: true}).Write(b, dir, "server")
	d := startAppDaemon(b, append([]string{"--mllp-tls-addr", "127.0.0.1:0",
		"--tls-cert-file", filepath.Join(dir, "server.crt"), "--tls-key-file", filepath.Join(dir, "server.key")}, extra...)...)
	return d.MLLPAddr(), d.MLLPTLSAddr(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
}

// BenchmarkMLLPTLS compares MLLP over TLS with plain MLLP on the same
// in-process daemon (--fsync=false, so that the store does not hide the
// transport's cost), one message in flight: on one long-lived connection,
// and with a new connection (and so a new TLS handshake) per message, as
// some senders do. The plain rows are the baselines.
//
//	go test ./bench -run '^$' -bench MLLPTLS -benchtime=3000x
func BenchmarkMLLPTLS(b *testing.B) {
	plain, secure, client := startMLLPTLSDaemon(b, "--fsync=false")
	dialPlain := func() (net.Conn, error) { return net.DialTimeout("tcp", plain, 5*time.Second) }
	dialTLS := func() (net.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		return tls.DialWithDialer(d, "tcp", secure, client)
	}
	b.Run("plain", func(b *testing.B) { benchMLLPDial(b, dialPlain, false) })
	b.Run("tls", func(b *testing.B) { benchMLLPDial(b, dialTLS, false) })
	b.Run("plain-reconnect", func(b *testing.B) { benchMLLPDial(b, dialPlain, true) })
	b.Run("tls-reconnect", func(b *testing.B) { benchMLLPDial(b, dialTLS, true) })
}

// benchMLLPDial sends b.N ORU^R01, each answered before the next, over one
// connection or a new connection per message (reconnect).
func benchMLLPDial(b *testing.B, dial func() (net.Conn, error), reconnect bool) {
	var c net.Conn
	var r *mllp.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	send := func(i int) time.Duration {
		t0 := time.Now()
		if c == nil {
			var err error
			if c, err = dial(); err != nil {
				b.Fatal(err)
			}
			r = mllp.NewReader(c, 1<<20)
		}
		msg := []byte(hl7ORUHead + "T" + run + "-" + strconv.Itoa(i) + hl7ORUTail)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if err := mllp.WriteMessage(c, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadMessage(); err != nil {
			b.Fatal(err)
		}
		if reconnect {
			c.Close()
			c = nil
		}
		return time.Since(t0)
	}
	reportMessageLatency(b, 100, send)
}
