package cli

import (
	"crypto/tls"
	"flag"

	"radbridge/internal/tlsconf"
)

// tlsClientFlags are the TLS flags of the client commands (echo, store,
// send-hl7, tail, healthcheck).
type tlsClientFlags struct {
	on                        *bool
	ca, cert, key, serverName *string
}

func newTLSClientFlags(fs *flag.FlagSet) tlsClientFlags {
	return tlsClientFlags{
		on:         fs.Bool("tls", false, "connect with TLS (TLS 1.2+, BCP 195 suites); implied by the other --tls-* flags"),
		ca:         fs.String("tls-ca-file", "", "PEM CA certificates that verify the server (default: the system's)"),
		cert:       fs.String("tls-cert-file", "", "PEM client certificate, for a server that requires one (mutual TLS)"),
		key:        fs.String("tls-key-file", "", "PEM private key of --tls-cert-file"),
		serverName: fs.String("tls-server-name", "", "name the server certificate must carry (default: the host of --addr)"),
	}
}

// tlsClientFlagNames are the flags newTLSClientFlags adds (for completion).
var tlsClientFlagNames = []string{"tls", "tls-ca-file", "tls-cert-file", "tls-key-file", "tls-server-name"}

// config is the client TLS configuration, nil when TLS is not asked for.
func (f tlsClientFlags) config() (*tls.Config, error) {
	if !*f.on && *f.ca == "" && *f.cert == "" && *f.key == "" && *f.serverName == "" {
		return nil, nil
	}
	return tlsconf.ClientConfig(tlsconf.ClientFiles{CAFile: *f.ca, CertFile: *f.cert, KeyFile: *f.key, ServerName: *f.serverName})
}
