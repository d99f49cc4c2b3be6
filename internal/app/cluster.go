package app

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"os"

	"radbridge/api"
	"radbridge/internal/config"
	"radbridge/internal/tlsconf"
	"radbridge/mapper/leased"
)

// The API asks the mapper under the lease whether this process maps.
var _ api.Leader = (*leased.Mapper)(nil)

// nodeID is the configured id or the hostname with a random suffix, so two
// processes on one host differ.
func nodeID(configured string) string {
	if configured != "" {
		return configured
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "radbridge"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// natsClientTLS is the TLS configuration of the connection to an external
// NATS (nil: as the URL says).
func natsClientTLS(cfg *config.Config) (*tls.Config, error) {
	if cfg.NATSTLSCAFile == "" && cfg.NATSTLSCertFile == "" {
		return nil, nil
	}
	c, err := tlsconf.ClientConfig(tlsconf.ClientFiles{CAFile: cfg.NATSTLSCAFile, CertFile: cfg.NATSTLSCertFile, KeyFile: cfg.NATSTLSKeyFile})
	if err != nil {
		return nil, fmt.Errorf("NATS TLS: %w", err)
	}
	return c, nil
}
