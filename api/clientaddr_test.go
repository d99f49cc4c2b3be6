package api_test

import (
	"net/netip"
	"testing"

	"radbridge/api"
)

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		trusted      []netip.Prefix
		want         string
	}{
		{"no proxies configured", "192.0.2.7:5000", []string{"203.0.113.9"}, nil, "192.0.2.7:5000"},
		{"peer not a proxy", "192.0.2.7:5000", []string{"203.0.113.9"}, trusted, "192.0.2.7:5000"},
		{"one trusted hop", "10.1.1.1:443", []string{"203.0.113.9"}, trusted, "203.0.113.9"},
		{"spoofed left entry", "10.1.1.1:443", []string{"198.51.100.1, 203.0.113.9"}, trusted, "203.0.113.9"},
		{"chain of trusted proxies", "127.0.0.1:80", []string{"203.0.113.9, 10.2.2.2", "10.3.3.3"}, trusted, "203.0.113.9"},
		{"all trusted", "10.1.1.1:443", []string{"10.2.2.2"}, trusted, "10.2.2.2"},
		{"garbage hop stops", "10.1.1.1:443", []string{"203.0.113.9, not-an-ip"}, trusted, "10.1.1.1:443"},
		{"no header", "10.1.1.1:443", nil, trusted, "10.1.1.1:443"},
		{"IPv4-mapped peer", "[::ffff:10.1.1.1]:443", []string{"203.0.113.9"}, trusted, "203.0.113.9"},
		{"IPv6 proxy", "[2001:db8::1]:443", []string{"203.0.113.9"}, []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}, "203.0.113.9"},
		{"IPv6 client", "10.1.1.1:443", []string{"2001:db8::7"}, trusted, "2001:db8::7"},
		{"untrusted hop before a trusted one", "10.1.1.1:443", []string{"10.9.9.9, 198.51.100.1, 10.2.2.2"}, trusted, "198.51.100.1"},
	} {
		if got := api.ClientAddr(tc.remote, tc.xff, tc.trusted); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
