package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"time"
)

// The protocols a client command may find on a port.
const (
	protoHTTP  = "HTTP"
	protoGRPC  = "gRPC"
	protoMLLP  = "HL7 MLLP"
	protoDICOM = "DICOM"
	protoTLS   = "TLS"
)

// portFlags names, for each protocol, the daemon's flag of that port, its
// default and the client commands that speak it.
var portFlags = map[string]struct{ flag, def, clients string }{
	protoHTTP:  {"--http-addr", "8080", "status, healthcheck"},
	protoGRPC:  {"--grpc-addr", "9090", "tail"},
	protoMLLP:  {"--mllp-addr", "2575", "send-hl7"},
	protoDICOM: {"--dicom-addr", "11112", "echo, store"},
}

// probeProbe is what probeProtocol sends: an MLLP frame that holds no HL7
// message (an MLLP receiver answers it with a negative ACK and records
// nothing), which an HTTP server reads as a bad request line and a DICOM
// acceptor as an unknown PDU type.
var probeProbe = []byte("\x0bPROBE\x1c\r\n\r\n")

// probeProtocol tells which protocol the server at addr speaks from its
// answer to probeProbe: "" when nothing answers or the answer is not
// recognised.
func probeProtocol(ctx context.Context, addr string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return ""
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := conn.Write(probeProbe); err != nil {
		return ""
	}
	b := make([]byte, 64)
	n, _ := conn.Read(b)
	return classifyAnswer(b[:n])
}

// classifyAnswer names the protocol of a server's first bytes.
func classifyAnswer(b []byte) string {
	switch {
	case len(b) == 0:
		return ""
	case bytes.HasPrefix(b, []byte("HTTP/")):
		return protoHTTP
	case b[0] == 0x0b:
		return protoMLLP
	case len(b) >= 9 && b[0] == 0 && b[3] == 0x04: // an HTTP/2 SETTINGS frame: gRPC servers send it first
		return protoGRPC
	case (b[0] == 0x07 || b[0] == 0x03) && len(b) >= 6 && b[1] == 0: // A-ABORT, A-ASSOCIATE-RJ
		return protoDICOM
	case b[0] == 0x15 && len(b) >= 3 && b[1] == 0x03: // a TLS alert record
		return protoTLS
	}
	return ""
}

// wrongPort says what the server at addr speaks when it is not want, and
// which address to give instead ("" when it speaks want or cannot be told).
// cmd is the client command ("radbridge tail"); usingTLS says whether it
// spoke TLS.
func wrongPort(ctx context.Context, cmd, addr, want string, usingTLS bool) string {
	got := probeProtocol(ctx, addr)
	if got == "" {
		return ""
	}
	w := portFlags[want]
	if got == want {
		if usingTLS {
			return fmt.Sprintf("%s: %s speaks %s without TLS: leave out --tls, or give the daemon's TLS address", cmd, addr, got)
		}
		return ""
	}
	if got == protoTLS {
		if usingTLS {
			return ""
		}
		return fmt.Sprintf("%s: %s speaks TLS: add --tls (and --tls-ca-file when the daemon's certificate is from a private CA)", cmd, addr)
	}
	g := portFlags[got]
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = "localhost"
	}
	return fmt.Sprintf("%s: %s speaks %s, not %s (it is the daemon's %s, for %s): give the daemon's %s address, its %s (port %s by default): %s --addr %s",
		cmd, addr, got, want, g.flag, g.clients, want, w.flag, w.def, cmd, net.JoinHostPort(host, w.def))
}
