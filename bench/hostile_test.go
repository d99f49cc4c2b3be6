package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"radbridge/dicom/scu"
	"radbridge/dicom/ul"
	"radbridge/hl7"
	"radbridge/hl7/mllp"
)

// hostileDaemonFlags: production limits (256 MLLP connections, 32
// associations, 1 MiB messages), per-host limits so that one host's flood
// leaves room for the others, and deadlines short enough that attackers
// cycle within a phase.
var hostileDaemonFlags = []string{
	"--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0",
	"--mllp-read-timeout", "2s", "--mllp-idle-timeout", "5s",
	"--dicom-idle-timeout", "5s", "--dicom-artim-timeout", "5s",
	"--http-read-header-timeout", "5s",
	"--mllp-max-connections-per-host", "32", "--dicom-max-associations-per-host", "8",
}

// attack runs workers goroutines of f until ctx ends; f returns when its
// connection is done and is called again.
type attack struct {
	name    string
	workers int
	f       func(ctx context.Context, a hostileTargets, r *rand.Rand)
}

type hostileTargets struct{ mllp, dicom, http, grpc string }

// attackConns counts the attackers' connections.
var attackConns atomic.Int64

// dialFromCtx dials addr from the loopback address ip; the connection is
// closed when ctx ends.
func dialFromCtx(ctx context.Context, ip, addr string) (net.Conn, func(), error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, func() {}, err
	}
	attackConns.Add(1)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return c, func() { stop(); c.Close() }, nil
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

// pause waits d or until ctx ends; false when ctx ended.
func pause(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

var hostileAttacks = []attack{
	// A started MLLP frame, one byte every 200 ms, until the read timeout
	// closes it; then again.
	{"mllp-slowloris", 32, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		c, done, err := dialFromCtx(ctx, "127.0.0.2", a.mllp)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			return
		}
		defer done()
		c.Write([]byte{mllp.StartBlock})
		for pause(ctx, 200*time.Millisecond) {
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}},
	// Connections opened as fast as they are accepted and held silent:
	// the host's first 32 until the idle timeout, the rest closed at once.
	{"mllp-connection-flood", 4, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		var held []func()
		defer func() {
			for _, done := range held {
				done()
			}
		}()
		for ctx.Err() == nil && len(held) < 200 {
			_, done, err := dialFromCtx(ctx, "127.0.0.2", a.mllp)
			if err != nil {
				pause(ctx, 10*time.Millisecond)
				continue
			}
			held = append(held, done)
		}
	}},
	// 2 MiB frames (over the 1 MiB limit): AR, close, reconnect.
	{"mllp-oversized", 2, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		c, done, err := dialFromCtx(ctx, "127.0.0.2", a.mllp)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			return
		}
		defer done()
		big := make([]byte, 2<<20)
		copy(big, fmt.Sprintf(hl7ORUHead+"BIG-%d"+hl7ORUTail, r.Int()))
		for i := len(hl7ORUHead) + 100; i < len(big); i++ {
			big[i] = 'x'
		}
		go mllp.WriteMessage(c, big)
		io.Copy(io.Discard, c)
	}},
	// Random bytes (framing bytes included) as fast as the daemon takes
	// them; its answers (AR to the frames that happen) are read and dropped.
	{"mllp-random-bytes", 2, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		c, done, err := dialFromCtx(ctx, "127.0.0.2", a.mllp)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			return
		}
		defer done()
		go io.Copy(io.Discard, c)
		buf := randomBytes(r, 64<<10)
		for ctx.Err() == nil {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}},
	// TCP connections to the DICOM port that never send the A-ASSOCIATE-RQ
	// (closed by ARTIM), 64 at a time.
	{"dicom-half-open", 64, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		c, done, err := dialFromCtx(ctx, "127.0.0.3", a.dicom)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			return
		}
		defer done()
		io.Copy(io.Discard, c)
	}},
	// Associations requested as fast as they are answered and held: the
	// host's first 8 until the idle timeout, the rest A-ASSOCIATE-RJ.
	{"dicom-association-flood", 16, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		c, done, err := dialFromCtx(ctx, "127.0.0.2", a.dicom)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			return
		}
		defer done()
		rq, _ := ul.AppendPDU(nil, &ul.AssociateRQ{ProtocolVersion: 1, CalledAE: "RADBRIDGE", CallingAE: "FLOOD",
			ApplicationContext:   ul.ApplicationContextName,
			PresentationContexts: []ul.PresentationContextRQ{{ID: 1, AbstractSyntax: scu.VerificationSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}}},
			UserInfo:             ul.UserInfo{MaxPDULength: 16384, ImplementationClassUID: "1.2.826.0.1.3680043.10.1447.99"}})
		c.Write(rq)
		hdr := make([]byte, 6)
		if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != byte(ul.TypeAssociateAC) {
			return // rejected: close and ask again
		}
		io.Copy(io.Discard, c) // held until the idle timeout aborts it
	}},
	// Random bytes and oversized PDU headers: A-ABORT, reconnect.
	{"dicom-garbage", 4, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		c, done, err := dialFromCtx(ctx, "127.0.0.2", a.dicom)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			return
		}
		defer done()
		b := randomBytes(r, 512)
		if r.IntN(2) == 0 {
			copy(b, []byte{1, 0, 0x7f, 0xff, 0xff, 0xff})
		}
		c.Write(b)
		io.Copy(io.Discard, c)
	}},
	// HTTP requests whose headers trickle in, 64 at a time, until
	// ReadHeaderTimeout closes them.
	{"http-slow-headers", 64, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		c, done, err := dialFromCtx(ctx, "127.0.0.4", a.http)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			return
		}
		defer done()
		c.Write([]byte("GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow: "))
		for pause(ctx, 200*time.Millisecond) {
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
		}
	}},
	// Random bytes instead of the HTTP/2 preface on the gRPC port.
	{"grpc-random-bytes", 4, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
		c, done, err := dialFromCtx(ctx, "127.0.0.5", a.grpc)
		if err != nil {
			pause(ctx, 100*time.Millisecond)
			return
		}
		defer done()
		c.Write(randomBytes(r, 256))
		io.Copy(io.Discard, c)
	}},
}

// wellBehavedEcho is a PACS's verification: associate, C-ECHO, release.
func wellBehavedEcho(ctx context.Context, addr string) error {
	c, err := scu.Dial(ctx, addr, scu.Config{CallingAE: "PACS", CalledAE: "RADBRIDGE",
		Contexts: []scu.Context{{AbstractSyntax: scu.VerificationSOPClass}}, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	if err := c.Echo(ctx); err != nil {
		c.Abort()
		return err
	}
	return c.Close()
}

// wellBehavedHL7 is a RIS sending one ORU on a new connection (as
// mllp_send does) and reading its ACK.
func wellBehavedHL7(ctx context.Context, addr string, n int) error {
	d := net.Dialer{Timeout: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := mllp.WriteMessage(c, []byte(hl7ORUHead+"WELL-"+strconv.Itoa(n)+hl7ORUTail)); err != nil {
		return err
	}
	b, err := mllp.NewReader(c, 1<<20).ReadMessage()
	if err != nil {
		return err
	}
	m, err := hl7.Parse(b)
	if err != nil {
		return err
	}
	if code := m.Get("MSA-1"); code != "AA" {
		return fmt.Errorf("ACK %s", code)
	}
	return nil
}

// BenchmarkHostile measures a well-behaved PACS's C-ECHO round trip and a
// well-behaved RIS's HL7 ACK round trip (b.N of each, alternating) with no
// attack, then during each attack alone, then during all of them at once,
// against one daemon in a child process. Each sub-benchmark reports p50
// and p99 in ms, the same as a ratio of the no-attack run ("x"), and the
// daemon's peak VmRSS during the phase. Attackers connect from 127.0.0.2-5;
// the well-behaved peers from 127.0.0.1.
//
//	go test ./bench -run '^$' -bench Hostile -benchtime=200x -timeout 30m
func BenchmarkHostile(b *testing.B) {
	d := startProcess(b, append(hostileDaemonFlags, strings.Fields(os.Getenv("RADBRIDGE_BENCH_HOSTILE_FLAGS"))...)...)
	if d.mllpAddr == "" || d.dicomAddr == "" {
		b.Fatalf("daemon did not log its MLLP and DICOM addresses: %+v", d)
	}
	targets := hostileTargets{mllp: d.mllpAddr, dicom: d.dicomAddr, http: d.httpAddr, grpc: d.grpcAddr}
	var base struct{ echo50, echo99, hl750, hl799 float64 }
	seq := 0
	phase := func(name string, attacks []attack) {
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for i, at := range attacks {
				for w := 0; w < at.workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := rand.New(rand.NewPCG(uint64(i), uint64(w)))
						for ctx.Err() == nil {
							at.f(ctx, targets, r)
						}
					}()
				}
			}
			var peak atomic.Int64
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				for {
					if v := rss(b, d.pid); v > peak.Load() {
						peak.Store(v)
					}
					if !pause(ctx, 50*time.Millisecond) {
						return
					}
				}
			}()
			if len(attacks) > 0 {
				pause(context.Background(), 2*time.Second) // let the attack build up
			}
			attackConns.Store(0)
			measured := time.Now()
			echo := make([]time.Duration, 0, b.N)
			ack := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
				t0 := time.Now()
				if err := wellBehavedEcho(rctx, targets.dicom); err != nil {
					b.Errorf("C-ECHO %d: %v", i, err)
				}
				t1 := time.Now()
				seq++
				if err := wellBehavedHL7(rctx, targets.mllp, seq); err != nil {
					b.Errorf("HL7 %d: %v", i, err)
				}
				t2 := time.Now()
				rcancel()
				echo = append(echo, t1.Sub(t0))
				ack = append(ack, t2.Sub(t1))
			}
			b.StopTimer()
			attackRate := float64(attackConns.Load()) / time.Since(measured).Seconds()
			cancel()
			wg.Wait()
			<-sampled
			e50, e99 := ms(percentile(echo, 50)), ms(percentile(echo, 99))
			h50, h99 := ms(percentile(ack, 50)), ms(percentile(ack, 99))
			if name == "none" {
				base.echo50, base.echo99, base.hl750, base.hl799 = e50, e99, h50, h99
			}
			b.ReportMetric(e50, "echo-p50-ms")
			b.ReportMetric(e99, "echo-p99-ms")
			b.ReportMetric(h50, "hl7-p50-ms")
			b.ReportMetric(h99, "hl7-p99-ms")
			if base.echo50 > 0 {
				b.ReportMetric(e50/base.echo50, "echo-p50-x")
				b.ReportMetric(e99/base.echo99, "echo-p99-x")
				b.ReportMetric(h50/base.hl750, "hl7-p50-x")
				b.ReportMetric(h99/base.hl799, "hl7-p99-x")
			}
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak-rss-MB")
			b.ReportMetric(attackRate, "attack-conns/s")
			b.ReportMetric(0, "ns/op")
		})
	}
	phase("none", nil)
	for _, at := range hostileAttacks {
		phase(at.name, []attack{at})
	}
	phase("all", hostileAttacks)
	phase("none-again", nil)
}
