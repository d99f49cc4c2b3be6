package config_test

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"radbridge/internal/config"
)

// TestValidateErrorOrder: a configuration with many mistakes gets them
// reported in the same order every time, sorted (several checks loop over
// maps of flags, whose order changes from run to run).
func TestValidateErrorOrder(t *testing.T) {
	args := []string{
		"--data-dir", t.TempDir(), "--timezone", "UTC",
		"--grpc-addr", "grpc", "--http-addr", "http", "--mllp-addr", "mllp", "--dicom-addr", "dicom", "--metrics-addr", "metrics",
		"--mllp-tls-addr", "mllp-tls", "--dicom-tls-addr", "dicom-tls", "--grpc-tls-addr", "grpc-tls", "--https-addr", "https",
		"--duplicate-window", "0s", "--heartbeat", "0s", "--ws-write-timeout", "0s", "--shutdown-timeout", "0s",
		"--mllp-read-timeout", "0s", "--mllp-idle-timeout", "0s", "--dicom-idle-timeout", "0s", "--study-quiet-period", "0s",
		"--events-max-bytes", "-1", "--ingest-max-bytes", "-1",
		"--hl7-max-order-groups", "0", "--stow-max-parts", "0", "--dicom-max-elements", "0",
	}
	flagOf := regexp.MustCompile(`(?m)^--([a-z0-9-]+) `)
	var first string
	for i := range 20 {
		_, err := config.Load("test", args, func(string) string { return "" }, io.Discard)
		if err == nil {
			t.Fatal("Load accepted a configuration full of mistakes")
		}
		if i == 0 {
			first = err.Error()
			lines := strings.Split(first, "\n")
			if !slices.IsSorted(lines) {
				t.Fatalf("errors not sorted:\n%s", first)
			}
			var flags []string
			for _, m := range flagOf.FindAllStringSubmatch(first, -1) {
				flags = append(flags, m[1])
			}
			if len(flags) < 22 {
				t.Fatalf("%d flags named by the errors, want every mistake (22):\n%s", len(flags), first)
			}
			continue
		}
		if got := err.Error(); got != first {
			t.Fatalf("run %d reported the errors in another order:\n%s\nfirst run:\n%s", i+1, got, first)
		}
	}
}

// TestTrustedProxiesFromEnv: --trusted-proxies is read from the
// environment like every flag, and is empty (trust nobody) by default.
func TestTrustedProxiesFromEnv(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"", "[]"},
		{"10.0.0.0/8, 192.0.2.1,::1", "[10.0.0.0/8 192.0.2.1/32 ::1/128]"},
	} {
		getenv := func(k string) string {
			if k == "RADBRIDGE_TRUSTED_PROXIES" {
				return tc.env
			}
			return ""
		}
		cfg, err := config.Load("test", []string{"--data-dir", t.TempDir(), "--timezone", "UTC"}, getenv, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		p, err := cfg.TrustedProxyPrefixes()
		if got := fmt.Sprint(p); err != nil || got != tc.want {
			t.Errorf("RADBRIDGE_TRUSTED_PROXIES=%q: %s, %v; want %s", tc.env, got, err, tc.want)
		}
	}
}
