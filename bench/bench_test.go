// Package bench measures radbridge's hot paths against baselines taken in
// the same run. The machine the numbers come from is usually shared and
// small (two cores, other builds running), so every benchmark reports a
// baseline next to its subject and BENCHMARKS.md gives ratios, never bare
// times; nothing here asserts on timing.
//
// Benchmarks (all listen on 127.0.0.1 only, use temporary data directories
// and stop what they start):
//
//   - BenchmarkEventAppendFsync, BenchmarkEventAppendNoFsync,
//     BenchmarkRawFileWriteFsync: one event appended to the embedded
//     JetStream event log with and without fsync per write, and the same
//     number of bytes written to a plain file followed by fsync. Metrics:
//     p50-us, p99-us, ops/s.
//   - BenchmarkFanOut/{grpc,ws}/subs=N: the daemon runs in-process; N
//     subscribers follow one patient over gRPC (spread over 16 client
//     connections) or WebSocket; each iteration publishes one event
//     (gRPC PublishEvent) and times until the last subscriber has it.
//     subs=1 is the baseline. Metrics: ms-to-last-p50/p99, ms-to-first-p50,
//     spread-ms-p50/p99 (last receipt minus first receipt).
//   - BenchmarkFanOutProcess/{grpc,ws}/subs=N: the same with the daemon
//     in a child process (built from ./cmd/radbridge). Needed where the
//     descriptor limit cannot hold both ends of 10,000 WebSocket
//     connections in one process.
//   - BenchmarkHostile/<attack>: the daemon in a child process; a
//     well-behaved PACS (new association, C-ECHO, release) and RIS (new
//     MLLP connection, one ORU, its ACK) measured with no attack and
//     during each attack (bench/hostile_test.go). Metrics: echo/hl7
//     p50/p99 in ms and as ratios of the no-attack phase, peak VmRSS.
//   - BenchmarkIdleMemory/{grpc,ws}: the daemon runs as a separate process
//     (built from ./cmd/radbridge); its VmRSS is read before and after
//     10,000 idle subscribers connect. Metric: B/sub.
//   - BenchmarkFHIRSearchPatient10k/...: a FHIR search of a patient with
//     10,000 studies against the REST listing of the same patient
//     (bench/fhir_test.go). Metrics: ns/op, index-B/resource.
//   - BenchmarkFHIRSubscriptionLatency/subs=N: HL7 ACK until a FHIR
//     rest-hook receipt and a FHIR websocket notification, against a gRPC
//     stream on the same patient (bench/fhirsubs_test.go). Metrics: p50/p99
//     in ms and p50 as a multiple of the gRPC stream's.
//
// Run (see BENCHMARKS.md for the latest numbers):
//
//	go test ./bench -run '^$' -bench 'Append|RawFile' -benchtime=2000x
//	go test ./bench -run '^$' -bench FanOut -benchtime=20x -timeout 30m
//	go test ./bench -run '^$' -bench IdleMemory -benchtime=1x -timeout 20m
//	go test ./bench -run '^$' -bench Hostile -benchtime=200x -timeout 30m
//	go test ./bench -run '^$' -bench FHIRSearchPatient10k -benchtime=3s -count=3 -timeout 25m
//
// Set RADBRIDGE_BENCH_SUBS (comma-separated) to change the fan-out sizes.
package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"radbridge/internal/testkit"
	"radbridge/internal/testkit/inproc"
	rbv1 "radbridge/proto/radbridge/v1"
)

// patient is the patient every benchmark subscriber follows.
const patient = "BENCH-P1"

// percentile returns the p-th percentile (0..100) of d, nearest rank.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// raiseFDLimit lifts RLIMIT_NOFILE so that many connections (both of their
// ends when client and server share the process) fit. It tries want, then
// the hard limit, and returns the soft limit in force.
func raiseFDLimit(tb testing.TB, want uint64) uint64 {
	tb.Helper()
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		tb.Fatalf("getrlimit: %v", err)
	}
	if r.Cur >= want {
		return r.Cur
	}
	n := syscall.Rlimit{Cur: want, Max: max(want, r.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err == nil {
		return want
	}
	n = syscall.Rlimit{Cur: r.Max, Max: r.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err != nil {
		tb.Logf("setrlimit NOFILE %d: %v", r.Max, err)
		return r.Cur
	}
	return r.Max
}

// needFDs skips when the process cannot hold n more descriptors.
func needFDs(tb testing.TB, n int) {
	tb.Helper()
	if lim := raiseFDLimit(tb, 1<<16); lim < uint64(n)+256 {
		fmt.Fprintf(os.Stderr, "%s: skipped: RLIMIT_NOFILE is %d (cannot be raised), need about %d\n", tb.Name(), lim, n+256)
		tb.Skipf("RLIMIT_NOFILE is %d, need about %d", lim, n+256)
	}
}

// daemon is a radbridge under test: in-process or a child process.
type daemon struct {
	grpcAddr, httpAddr  string
	mllpAddr, dicomAddr string // from a child's log; "" when off
	pid                 int    // child process, 0 in-process
	stop                func() // stops the daemon (idempotent); also runs at cleanup
}

// startInProcess starts the daemon in this process with a temporary data
// directory; it stops when the benchmark ends.
func startInProcess(tb testing.TB, extra ...string) *daemon {
	tb.Helper()
	d := inproc.Start(tb, "", nil, extra...)
	stop := func() {
		if err := d.Stop(); err != nil {
			tb.Logf("daemon stopped: %v", err)
		}
	}
	return &daemon{grpcAddr: d.GRPCAddr(), httpAddr: d.HTTPAddr(), stop: stop}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildDaemon builds ./cmd/radbridge once per test binary run.
func buildDaemon(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "radbridge-bench-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "radbridge")
		buildErr = testkit.Build("..", binPath, "./cmd/radbridge") // go test runs in the package directory
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// startProcess runs the daemon binary as a child process and waits until it
// is ready; it is stopped with SIGTERM (then SIGKILL) when the benchmark
// ends. Its warnings and errors go to stderr as they come.
func startProcess(tb testing.TB, extra ...string) *daemon {
	tb.Helper()
	args := append([]string{"serve", "--data-dir", filepath.Join(tb.TempDir(), "data"),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, extra...)
	p := testkit.Serve(tb, buildDaemon(tb), testkit.ServeOptions{Echo: os.Stderr, KillWithParent: true}, args...)
	tb.Cleanup(p.Stop)
	return &daemon{grpcAddr: p.GRPC, httpAddr: p.HTTP, mllpAddr: p.MLLP, dicomAddr: p.DICOM, pid: p.Cmd.Process.Pid, stop: p.Stop}
}

// rss returns the process's resident set size in bytes.
func rss(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc status")
	return 0
}

// grpcConn opens a client connection to addr.
func grpcConn(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// publish records one IMAGING_STUDY_VIEWED event for the bench patient and
// returns its sequence.
func publish(ctx context.Context, c rbv1.EventServiceClient, i int) (uint64, error) {
	ev, err := c.PublishEvent(ctx, &rbv1.PublishEventRequest{
		Type: rbv1.EventType_IMAGING_STUDY_VIEWED, PatientId: patient,
		StudyInstanceUid: "1.2.826.0.1.3680043.8.498." + strconv.Itoa(i+1),
		ViewerId:         "bench", ViewerName: "Bench Viewer",
	})
	if err != nil {
		return 0, err
	}
	return ev.GetSequence(), nil
}

// memStats is this process's heap and stack in use after a GC.
func memStats() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
