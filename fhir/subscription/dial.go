package subscription

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrEndpointDenied: a rest-hook endpoint resolves to an address the
// operator has not allowed.
var ErrEndpointDenied = errors.New("rest-hook endpoint not allowed")

// Allow is the operator's rest-hook allow-list (--fhir-rest-hook-allow):
// addresses and prefixes, and host names (exact, or "*.example.org"),
// that may be reached even though they are loopback, link-local, private
// or otherwise internal. Public addresses are always allowed.
type Allow struct {
	Prefixes []netip.Prefix
	Hosts    []string
}

// ParseAllow parses a comma-separated allow-list: CIDRs, IP addresses and
// host names.
func ParseAllow(s string) (Allow, error) {
	var a Allow
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			a.Prefixes = append(a.Prefixes, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(f); err == nil {
			a.Prefixes = append(a.Prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		h := strings.ToLower(strings.TrimSuffix(f, "."))
		if strings.ContainsAny(h, "/: ") || h == "" || strings.Count(h, "*") > 1 || (strings.Contains(h, "*") && !strings.HasPrefix(h, "*.")) {
			return Allow{}, fmt.Errorf("%q: want a CIDR, an IP address or a host name (*.example.org)", f)
		}
		a.Hosts = append(a.Hosts, h)
	}
	return a, nil
}

func (a Allow) hostAllowed(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range a.Hosts {
		if h == host || (strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:])) {
			return true
		}
	}
	return false
}

// internal are the ranges denied unless allowed: besides loopback,
// link-local (169.254.169.254, the cloud metadata service, among them),
// private, multicast and unspecified addresses.
var internal = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
}

// IPAllowed reports whether a rest-hook may connect to ip.
func (a Allow) IPAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range a.Prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsPrivate() || !ip.IsValid() {
		return false
	}
	for _, p := range internal {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// CheckHost refuses an endpoint host that is an IP address the list does
// not allow (a name is checked when dialled, after resolution).
func (a Allow) CheckHost(host string) error {
	if a.hostAllowed(host) {
		return nil
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil && !a.IPAllowed(ip) {
		return fmt.Errorf("%w: %s is a loopback, link-local, private or otherwise internal address (see --fhir-rest-hook-allow)", ErrEndpointDenied, host)
	}
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return fmt.Errorf("%w: %s (see --fhir-rest-hook-allow)", ErrEndpointDenied, host)
	}
	return nil
}

// DialContext dials addr and checks the address actually connected to
// (after DNS resolution, in the dialer's Control hook, so a name that
// re-resolves to an internal address is refused too).
func (a Allow) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !a.hostAllowed(host) {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrEndpointDenied, address)
			}
			if !a.IPAllowed(ap.Addr()) {
				return fmt.Errorf("%w: %s resolves to %s, an internal address (see --fhir-rest-hook-allow)", ErrEndpointDenied, host, ap.Addr())
			}
			return nil
		}
	}
	return d.DialContext(ctx, network, addr)
}
