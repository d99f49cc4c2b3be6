package bench

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"radbridge/hl7/mllp"
	"radbridge/internal/testkit"
)

// BenchmarkHL7Memory measures the daemon's memory under a long HL7 load
// (the target: RSS after 200,000 messages at most 1.2× RSS after 20,000).
// The daemon runs in a child process with its defaults (durable, group
// commit); 4 MLLP connections send ORU^R01 messages, each with its own
// MSH-10. By default they are cmd/hl7load's: one patient, one accession
// (a final report sent again and again), so the mapper's state does not
// grow with the count and what grows is per-message bookkeeping. With
// RADBRIDGE_BENCH_HL7MEM_PATIENTS=N every message has its own accession,
// over N patients: the state grows with the reports, as at a hospital.
// At each checkpoint (RADBRIDGE_BENCH_HL7MEM, default
// 20000,200000 messages in total) it waits until the mapper has applied
// every record, then samples the daemon's VmRSS for 2 s and reports the
// last value:
//
//	go test ./bench -run '^$' -bench HL7Memory -benchtime=1x -timeout 60m -v
//
// With RADBRIDGE_BENCH_HL7MEM_INPROCESS=/tmp/dir the daemon runs in the
// benchmark process instead and a heap profile is written at each
// checkpoint (go tool pprof -base /tmp/dir/heap-20000.pb.gz
// /tmp/dir/heap-200000.pb.gz shows what grew).
//
// RADBRIDGE_BENCH_HL7MEM_FLAGS adds daemon flags, space-separated (e.g.
// "--duplicate-window 2m", to see what the ingest log's duplicate window
// holds).
func BenchmarkHL7Memory(b *testing.B) {
	checkpoints := []int{20000, 200000}
	if s := os.Getenv("RADBRIDGE_BENCH_HL7MEM"); s != "" {
		checkpoints = parseInts(b, s)
	}
	patients := 0 // hl7load's messages
	if s := os.Getenv("RADBRIDGE_BENCH_HL7MEM_PATIENTS"); s != "" {
		patients = parseInts(b, s)[0]
	}
	profDir := os.Getenv("RADBRIDGE_BENCH_HL7MEM_INPROCESS")
	flags := strings.Fields(os.Getenv("RADBRIDGE_BENCH_HL7MEM_FLAGS"))
	for b.Loop() {
		var mllpAddr, httpAddr string
		pid := 0
		if profDir != "" {
			d := startAppDaemon(b, flags...)
			mllpAddr, httpAddr = d.MLLPAddr(), d.HTTPAddr()
		} else {
			d := startProcess(b, append([]string{"--mllp-addr", "127.0.0.1:0", "--dicom-addr", ""}, flags...)...)
			mllpAddr, httpAddr, pid = d.mllpAddr, d.httpAddr, d.pid
		}
		sent := 0
		start := time.Now()
		var first int64
		for _, cp := range checkpoints {
			sendHL7Load(b, mllpAddr, 4, sent, cp, patients)
			sent = cp
			waitMapper(b, httpAddr, 20*time.Minute)
			var r int64
			if pid != 0 {
				for range 20 { // 2 s: the last sample, after the GC settled
					r = rss(b, pid)
					time.Sleep(100 * time.Millisecond) // sampling while the GC settles, not a wait
				}
			} else {
				runtime.GC()
				f, err := os.Create(fmt.Sprintf("%s/heap-%d.pb.gz", profDir, cp))
				if err != nil {
					b.Fatal(err)
				}
				if err := pprof.WriteHeapProfile(f); err != nil {
					b.Fatal(err)
				}
				f.Close()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				r = int64(ms.HeapInuse)
			}
			if first == 0 {
				first = r
			}
			b.Logf("after %d messages (%v): daemon %s %.1f MB (%.2f× the first checkpoint)", cp, time.Since(start).Round(time.Second),
				map[bool]string{true: "VmRSS", false: "heap in use"}[pid != 0], float64(r)/1e6, float64(r)/float64(first))
			b.ReportMetric(float64(r)/1e6, fmt.Sprintf("MB@%d", cp))
		}
	}
}

func parseInts(tb testing.TB, s string) []int {
	var out []int
	for _, f := range splitComma(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			tb.Fatalf("%q: want positive integers", s)
		}
		out = append(out, n)
	}
	return out
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

// sendHL7Load sends messages from..to-1 over conns connections, one in
// flight per connection, and fails on any answer but AA. Each is an
// ORU^R01 with an MSH-10 of its own; with patients > 0 of patient
// i%patients with an accession of its own, else hl7load's message.
func sendHL7Load(tb testing.TB, addr string, conns, from, to, patients int) {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			r := mllp.NewReader(c, 1<<20)
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				var msg string
				if patients == 0 {
					msg = hl7ORUHead + "M" + strconv.Itoa(i) + hl7ORUTail
				} else {
					p := i % patients
					msg = fmt.Sprintf("MSH|^~\\&|LOADGEN|TEST|RADBRIDGE|IMAGING|20261207120000||ORU^R01^ORU_R01|M%d|P|2.5.1\r"+
						"PID|1||MEM%05d^^^TEST^MR||LOAD^PATIENT%d^^^^^L||19700101|U\r"+
						"ORC|RE|PLC%d|FIL%d||CM\r"+
						"OBR|1|PLC%d|FIL%d|CTCHEST^CT CHEST^L|||20261207110000|||||||||||ACC%d||||||CT|F\r"+
						"OBX|1|TX|RPT^Report^L||Synthetic load-test report line one.||||||F\r"+
						"OBX|2|TX|RPT^Report^L||IMPRESSION: nothing, this is a load test.||||||F\r", i, p, p, i, i, i, i, i)
				}
				c.SetDeadline(time.Now().Add(60 * time.Second))
				if err := mllp.WriteMessage(c, []byte(msg)); err != nil {
					errs <- err
					return
				}
				ack, err := r.ReadMessage()
				if err != nil {
					errs <- err
					return
				}
				if !containsAA(ack) {
					errs <- fmt.Errorf("message %d: %q", i, ack)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func containsAA(ack []byte) bool {
	for i := 0; i+6 <= len(ack); i++ {
		if string(ack[i:i+6]) == "MSA|AA" {
			return true
		}
	}
	return false
}

// waitMapper waits until the mapper has applied every ingest record.
func waitMapper(tb testing.TB, httpAddr string, max time.Duration) {
	var err error
	if !testkit.Poll(max, func() bool {
		var resp *http.Response
		if resp, err = http.Get("http://" + httpAddr + "/v1/status"); err != nil {
			return false
		}
		var st struct {
			Mapper struct {
				AppliedSequence uint64 `json:"applied_sequence"`
				IngestHead      uint64 `json:"ingest_head"`
			} `json:"mapper"`
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		return err == nil && st.Mapper.IngestHead > 0 && st.Mapper.AppliedSequence >= st.Mapper.IngestHead
	}) {
		tb.Fatalf("the mapper did not catch up within %v (%v)", max, err)
	}
}
