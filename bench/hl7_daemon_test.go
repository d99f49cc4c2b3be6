package bench

import (
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"radbridge/hl7/mllp"
)

// hl7ORU is the same small ORU^R01 that cmd/hl7load sends; %s is MSH-10.
const hl7ORUHead = "MSH|^~\\&|LOADGEN|TEST|RADBRIDGE|IMAGING|20250101120000||ORU^R01^ORU_R01|"
const hl7ORUTail = "|P|2.5.1\r" +
	"PID|1||LOAD0001^^^TEST^MR||LOAD^TEST^^^^^L||19700101|U\r" +
	"ORC|RE|PLC1|FIL1||CM\r" +
	"OBR|1|PLC1|FIL1|CTCHEST^CT CHEST^L|||20250101110000|||||||||||ACC1||||||CT|F\r" +
	"OBX|1|TX|RPT^Report^L||Synthetic load-test report line one.||||||F\r" +
	"OBX|2|TX|RPT^Report^L||IMPRESSION: nothing, this is a load test.||||||F\r"

// startMLLPDaemon starts the daemon in this process (so `go test
// -cpuprofile` sees the daemon's work) with its MLLP listener on a loopback
// port and returns that address.
func startMLLPDaemon(tb testing.TB, extra ...string) string {
	tb.Helper()
	return startAppDaemon(tb, extra...).MLLPAddr()
}

// BenchmarkHL7Daemon sends b.N ORU^R01 over one MLLP connection to an
// in-process daemon, one message in flight, and reports msg/s and ACK
// latency. The "ackonly" sub-benchmark is the baseline in the same run: a
// constant-ACK MLLP server in the same process. Use it to profile where the
// daemon's time goes:
//
//	go test ./bench -run '^$' -bench HL7Daemon -benchtime=5000x -cpuprofile /tmp/hl7.cpu
//	go tool pprof -top -nodecount=40 bench.test /tmp/hl7.cpu
func BenchmarkHL7Daemon(b *testing.B) {
	b.Run("ackonly", func(b *testing.B) { benchMLLP(b, ackOnlyServer(b)) })
	b.Run("fsync", func(b *testing.B) { benchMLLP(b, startMLLPDaemon(b)) })
	b.Run("nofsync", func(b *testing.B) { benchMLLP(b, startMLLPDaemon(b, "--fsync=false")) })
}

func ackOnlyServer(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	ack := []byte("MSH|^~\\&|ACKONLY||||20250101||ACK^R01^ACK|1|P|2.5.1\rMSA|AA|\r")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := mllp.NewReader(c, 1<<20)
				for {
					if _, err := r.ReadMessage(); err != nil {
						return
					}
					if err := mllp.WriteMessage(c, ack); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func benchMLLP(b *testing.B, addr string) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r := mllp.NewReader(c, 1<<20)
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	send := func(i int) time.Duration {
		msg := []byte(hl7ORUHead + "B" + run + "-" + strconv.Itoa(i) + hl7ORUTail)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		t0 := time.Now()
		if err := mllp.WriteMessage(c, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadMessage(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	reportMessageLatency(b, 200, send)
}

// reportMessageLatency calls send warm times (indices -1, -2, …) before
// timing, then once per iteration (0, 1, …), and reports msg/s and the
// p50/p99 of the durations send returns.
func reportMessageLatency(b *testing.B, warm int, send func(i int) time.Duration) {
	for i := range warm {
		send(-1 - i)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	i := 0
	for b.Loop() {
		lat = append(lat, send(i))
		i++
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "msg/s")
	b.ReportMetric(us(percentile(lat, 50)), "p50-µs")
	b.ReportMetric(us(percentile(lat, 99)), "p99-µs")
}
