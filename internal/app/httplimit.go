package app

import (
	"log/slog"
	"net"
	"time"

	"radbridge/internal/connlimit"
	"radbridge/internal/lograte"
	"radbridge/internal/metrics"
)

// limitHTTP bounds the connections open on each HTTP listener
// (--http-max-connections; 0: no limit). Beyond it a plain HTTP connection
// gets a 503 once it has sent its request headers (within 2 s) and is
// closed, outside the server (connlimit.HTTP503); an HTTPS one is closed at
// once (a 503 would cost the TLS handshake a flood must not buy). It returns the listeners to serve (nil when off) and
// registers their metrics.
func (d *Daemon) limitHTTP(max int, headerTimeout time.Duration, log *slog.Logger) (plain, tls net.Listener) {
	logs := lograte.New(10, time.Second)
	warn := func(c net.Conn, front string) {
		if ok, left := logs.Allow(front); ok {
			log.Warn("connection limit reached, refusing new connection", "component", "http", "front", front,
				"remote", c.RemoteAddr().String(), "max_connections", max, "suppressed", left)
		}
	}
	http503 := connlimit.HTTP503(min(headerTimeout, 2*time.Second))
	var ls []*connlimit.Listener
	if d.httpLn != nil {
		l := connlimit.New(d.httpLn, max, func(c net.Conn) { warn(c, "http"); http503(c) })
		plain, ls = l, append(ls, l)
	}
	if d.httpsLn != nil {
		l := connlimit.New(d.httpsLn, max, func(c net.Conn) { warn(c, "https"); c.Close() })
		tls, ls = l, append(ls, l)
	}
	d.metrics.MustRegister(metrics.NewHTTPCollector(ls...))
	return plain, tls
}
