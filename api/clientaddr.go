package api

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// clientAddrKey is the gRPC metadata the REST gateway of this process sets
// to the HTTP client's address (after the trusted-proxy rule). Trusted only
// on the gateway's in-process connection.
const clientAddrKey = "x-radbridge-client-addr"

// ClientAddr returns the address of the client behind a request that came
// from remote (host:port or host) carrying X-Forwarded-For values xff:
// remote itself unless its IP is in trusted; then, walking X-Forwarded-For
// from the right, the first hop that is not a trusted proxy (a value that is
// not an IP address stops the walk there). Without trusted proxies nobody
// can choose the address recorded for them.
func ClientAddr(remote string, xff []string, trusted []netip.Prefix) string {
	var hops []string
	for _, v := range xff {
		for _, h := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	addr := remote
	for i := len(hops) - 1; i >= 0; i-- {
		if !trustedAddr(addr, trusted) {
			return addr
		}
		if _, err := netip.ParseAddr(hops[i]); err != nil {
			return addr
		}
		addr = hops[i]
	}
	return addr
}

func trustedAddr(addr string, trusted []netip.Prefix) bool {
	if len(trusted) == 0 {
		return false
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// httpClientAddr is ClientAddr of an HTTP request.
func httpClientAddr(r *http.Request, trusted []netip.Prefix) string {
	return ClientAddr(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), trusted)
}

// clientAddr is the address of the client of a gRPC call: through the REST
// gateway (the in-process bufconn connection), the one the gateway
// recorded; otherwise the peer's, or the forwarded one when the peer is a
// trusted proxy.
func (s *Service) clientAddr(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if p.Addr.Network() == "bufconn" {
		if v := md.Get(clientAddrKey); len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	return ClientAddr(p.Addr.String(), md.Get("x-forwarded-for"), s.TrustedProxies)
}
