package main_test

// The crash proof: real peers (python-hl7's mllp_send, DCMTK's storescu)
// load the real binary while it is killed with SIGKILL at random points and
// restarted on the same ports and data directory. Afterwards every
// acknowledged message and instance is in the event log, a subscriber that
// resumed by sequence across every restart saw each event exactly once, and
// a clean replay of the ingest log derives exactly the events and read
// models the crashed daemons stored.
//
//	go test ./cmd/radbridge -run TestCrashUnderLoad -v                 # CI: 4 cycles
//	RADBRIDGE_CRASH_CYCLES=50 RADBRIDGE_CRASH_SEED=7 go test ...       # longer, reproducible kill points

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/internal/app"
	"radbridge/internal/config"
	"radbridge/internal/testkit"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
	"radbridge/readmodel/readmodeltest"
	"radbridge/store"
)

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, s)
	}
	return n
}

// freePorts returns n distinct loopback addresses free right now, so a
// restarted daemon listens where the peers and the subscriber reconnect.
// They lie below the kernel's ephemeral range: while the daemon is down, no
// outgoing connection (the peers reconnect all the time) can take one of
// them as its local port and make the restart fail.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 16000 {
				lo = v
			}
		}
	}
	var ls []net.Listener
	var out []string
	for try := 0; len(out) < n && try < 1000; try++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 15000+rand.IntN(lo-15000)))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	if len(out) < n {
		t.Fatalf("found %d free ports below %d, want %d", len(out), lo, n)
	}
	return out
}

// crashLoad is what the peers were told: the HL7 control ids that got AA
// and the DICOM instances that got status Success.
type crashLoad struct {
	mu sync.Mutex
	// want maps every control id sent to the event type its message makes.
	want     map[string]rbv1.EventType
	hl7Acked map[string]bool
	// dicomAcked maps study UID → SOP Instance UIDs stored with Success.
	dicomAcked map[string]map[string]bool
	// studyPatient maps study UID → its patient id.
	studyPatient map[string]string

	hl7Runs, hl7Failed, hl7Resends     int
	dicomRuns, dicomFailed, dicomRetry int
}

var msaRe = regexp.MustCompile(`MSA\|([A-Z]{2})\|([^|\r\n\x1c]*)`)

// hl7Batch writes batch i: a new order, its status change and its final
// report, for accession ACC-C<i> of patient MRN-C<i%5> (the DICOM study
// with the same index has the same accession and patient, so the mapper
// joins them).
func hl7Batch(dir string, i int) (string, map[string]rbv1.EventType, error) {
	pid := fmt.Sprintf("MRN-C%d", i%5)
	acc := fmt.Sprintf("ACC-C%d", i)
	obr := func(f map[int]string) string {
		fields := make([]string, 26)
		fields[0] = "OBR"
		fields[1] = "1"
		fields[2], fields[3] = fmt.Sprintf("PLC%d", i), fmt.Sprintf("FIL%d", i)
		fields[4] = "71250^CT CHEST W/O CONTRAST^C4"
		fields[18], fields[24] = acc, "CT"
		for k, v := range f {
			fields[k] = v
		}
		return strings.TrimRight(strings.Join(fields, "|"), "|")
	}
	msh := func(typ, ctl, ver string) string {
		return fmt.Sprintf(`MSH|^~\&|CRASHRIS|NORTHWING|RADBRIDGE|IMAGING|20260310083000||%s|%s|P|%s`, typ, ctl, ver)
	}
	pidSeg := fmt.Sprintf("PID|1||%s^^^NORTHWING^MR||CRASH^PATIENT%d||19700101|F", pid, i%5)
	ctl := func(n int) string { return fmt.Sprintf("CR%d-%d", i, n) }
	msgs := []string{
		strings.Join([]string{msh("ORM^O01", ctl(1), "2.3"), pidSeg, fmt.Sprintf("ORC|NW|PLC%d|FIL%d||SC", i, i), obr(nil)}, "\r"),
		strings.Join([]string{msh("ORM^O01", ctl(2), "2.3"), pidSeg, fmt.Sprintf("ORC|XO|PLC%d|FIL%d||IP", i, i), obr(nil)}, "\r"),
		strings.Join([]string{msh("ORU^R01^ORU_R01", ctl(3), "2.5.1"), pidSeg, fmt.Sprintf("ORC|RE|PLC%d|FIL%d||CM", i, i),
			obr(map[int]string{7: "20260310090500", 22: "20260310113000", 25: "F"}),
			"OBX|1|TX|RPT^Report^L|1|IMPRESSION: No acute abnormality.||||||F"}, "\r"),
	}
	want := map[string]rbv1.EventType{
		ctl(1): rbv1.EventType_ORDER_PLACED,
		ctl(2): rbv1.EventType_ORDER_UPDATED,
		ctl(3): rbv1.EventType_IMAGING_REPORT_READY,
	}
	p := filepath.Join(dir, fmt.Sprintf("batch%d.hl7", i))
	return p, want, os.WriteFile(p, []byte(strings.Join(msgs, "\r\n")+"\r\n"), 0o644)
}

// runHL7 sends batch files from..to with mllp_send until stop, resending a
// batch (as a RIS does) until every message in it got AA, at most 5 times.
func (l *crashLoad) runHL7(stop <-chan struct{}, bin, addr, dir string, from, to int, logf func(string, ...any)) {
	host, port, _ := strings.Cut(addr, ":")
	for i := from; i <= to; i++ {
		file, want, err := hl7Batch(dir, i)
		if err != nil {
			logf("hl7 batch: %v", err)
			return
		}
		l.mu.Lock()
		for c, typ := range want {
			l.want[c] = typ
		}
		l.mu.Unlock()
		for attempt := 1; attempt <= 5; attempt++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			cmd := exec.CommandContext(ctx, bin, "--loose", "-f", file, "-p", port, host)
			cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
			out, err := cmd.Output() // the ACKs printed before a failure count too
			cancel()
			all := true
			l.mu.Lock()
			l.hl7Runs++
			if err != nil {
				l.hl7Failed++
			}
			if attempt > 1 {
				l.hl7Resends++
			}
			got := map[string]bool{}
			for _, m := range msaRe.FindAllStringSubmatch(string(out), -1) {
				if m[1] == "AA" {
					if _, ok := want[m[2]]; ok {
						l.hl7Acked[m[2]] = true
						got[m[2]] = true
					}
				}
			}
			for c := range want {
				all = all && got[c]
			}
			l.mu.Unlock()
			if all {
				break
			}
			time.Sleep(100 * time.Millisecond) // the RIS's pause before it resends (the daemon may be down), not a wait
		}
	}
}

var sendingRe = regexp.MustCompile(`Sending file: \S*s(\d+)i(\d+)\.dcm`)

// genStudies writes studies from..from+n-1 with scripts/dicom/study.py in
// one Python process: study k has 2 series of 2 instances, accession
// ACC-C<k> and patient MRN-C<k%5>.
func genStudies(dir string, from, n int) error {
	script := `import runpy, sys
script = sys.argv[1]
for spec in sys.argv[2:]:
    sys.argv = [script] + spec.split(",")
    runpy.run_path(script, run_name="__main__")
`
	args := []string{"-c", script, filepath.Join("..", "..", "scripts", "dicom", "study.py")}
	for k := from; k < from+n; k++ {
		args = append(args, strings.Join([]string{filepath.Join(dir, fmt.Sprint(k)), crashStudy(k), fmt.Sprintf("MRN-C%d", k%5), fmt.Sprintf("ACC-C%d", k), "2", "2"}, ","))
	}
	out, err := exec.Command("/usr/bin/python3", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("study.py: %v\n%s", err, out)
	}
	return nil
}

func crashStudy(k int) string { return fmt.Sprintf("1.2.826.0.1.3680043.10.1447.90.%d", k) }

// runDICOM sends one study per storescu association until stop, resending
// a study (as a PACS does) until every instance got Success, at most 5
// times. storescu -v names each file before its store response.
func (l *crashLoad) runDICOM(stop <-chan struct{}, addr, dir string, logf func(string, ...any)) {
	host, port, _ := strings.Cut(addr, ":")
	const batch = 10
	for k := 1; k <= 100000; k++ {
		if (k-1)%batch == 0 {
			if err := genStudies(dir, k, batch); err != nil {
				logf("%v", err)
				return
			}
		}
		study := crashStudy(k)
		l.mu.Lock()
		l.studyPatient[study] = fmt.Sprintf("MRN-C%d", k%5)
		l.mu.Unlock()
		for attempt := 1; attempt <= 5; attempt++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			cmd := exec.CommandContext(ctx, "storescu", "-v", "-ta", "10", "-td", "10", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, filepath.Join(dir, fmt.Sprint(k)))
			cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
			out, err := cmd.CombinedOutput()
			cancel()
			l.mu.Lock()
			l.dicomRuns++
			if err != nil {
				l.dicomFailed++
			}
			if attempt > 1 {
				l.dicomRetry++
			}
			if l.dicomAcked[study] == nil {
				l.dicomAcked[study] = map[string]bool{}
			}
			cur := ""
			for _, line := range strings.Split(string(out), "\n") {
				if m := sendingRe.FindStringSubmatch(line); m != nil {
					s, _ := strconv.Atoi(m[1])
					i, _ := strconv.Atoi(m[2])
					cur = fmt.Sprintf("%s.%d.%d", study, s, i)
				} else if strings.Contains(line, "Received Store Response (Success)") && cur != "" {
					l.dicomAcked[study][cur] = true
					cur = ""
				}
			}
			all := len(l.dicomAcked[study]) == 4
			l.mu.Unlock()
			if all {
				break
			}
			time.Sleep(100 * time.Millisecond) // the PACS's pause before it resends (the daemon may be down), not a wait
		}
	}
}

// tailEvents parses the JSON lines radbridge tail printed.
func tailEvents(t *testing.T, out string) []*rbv1.Event {
	t.Helper()
	var evs []*rbv1.Event
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		ev := new(rbv1.Event)
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(line), ev); err != nil {
			// A line still being written; the caller reads again.
			break
		}
		evs = append(evs, ev)
	}
	return evs
}

// instanceUIDs returns the SOP Instance UIDs an ImagingStudy resource lists.
func instanceUIDs(res map[string]any) map[string]bool {
	out := map[string]bool{}
	series, _ := res["series"].([]any)
	for _, s := range series {
		sm, _ := s.(map[string]any)
		insts, _ := sm["instance"].([]any)
		for _, in := range insts {
			im, _ := in.(map[string]any)
			if uid, _ := im["uid"].(string); uid != "" {
				out[uid] = true
			}
		}
	}
	return out
}

// acknowledgedMissing lists what the peers were acknowledged but evs lacks.
func (l *crashLoad) acknowledgedMissing(evs []*rbv1.Event) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	byCtl := map[string]map[rbv1.EventType]int{}
	lastStudy := map[string]*rbv1.Event{}
	for _, ev := range evs {
		if c := ev.GetSource().GetMessageControlId(); c != "" {
			if byCtl[c] == nil {
				byCtl[c] = map[rbv1.EventType]int{}
			}
			byCtl[c][ev.Type]++
		}
		if ev.Type == rbv1.EventType_IMAGING_STUDY_AVAILABLE || ev.Type == rbv1.EventType_IMAGING_STUDY_UPDATED {
			lastStudy[ev.StudyInstanceUid] = ev
		}
	}
	var missing []string
	for c := range l.hl7Acked {
		if byCtl[c][l.want[c]] == 0 {
			missing = append(missing, fmt.Sprintf("HL7 %s (AA) has no %v event", c, l.want[c]))
		}
	}
	for study, sops := range l.dicomAcked {
		if len(sops) == 0 {
			continue
		}
		last := lastStudy[study]
		if last == nil {
			missing = append(missing, fmt.Sprintf("study %s: %d instances acknowledged, no IMAGING_STUDY_AVAILABLE/UPDATED", study, len(sops)))
			continue
		}
		have := instanceUIDs(last.GetResource().AsMap())
		for sop := range sops {
			if !have[sop] {
				missing = append(missing, fmt.Sprintf("study %s: acknowledged instance %s not in its last %v (sequence %d)", study, sop, last.Type, last.Sequence))
			}
		}
	}
	sort.Strings(missing)
	return missing
}

// TestCrashUnderLoad: mllp_send and storescu load the daemon while it is
// killed with SIGKILL at random points (some during startup and replay) and
// restarted. Every message that got AA and every instance that got Success
// is in the event log afterwards, exactly once; radbridge tail, resuming by
// sequence across every restart, printed every event once and in order; and
// a clean replay of the ingest log derives the same events and read models.
//
// RADBRIDGE_CRASH_CYCLES (default 4) sets the number of kills,
// RADBRIDGE_CRASH_SEED the seed of the kill points (logged; set it to
// reproduce a failure's schedule), RADBRIDGE_CRASH_MAX_UP_MS the longest
// run between kills (default 4000).
func TestCrashUnderLoad(t *testing.T) {
	mllp := testkit.Peer(t, "mllp_send")
	testkit.Peer(t, "storescu")
	testkit.Python(t, "pydicom")
	cycles := envInt(t, "RADBRIDGE_CRASH_CYCLES", 4)
	maxUp := time.Duration(envInt(t, "RADBRIDGE_CRASH_MAX_UP_MS", 4000)) * time.Millisecond
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RADBRIDGE_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RADBRIDGE_CRASH_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("crash proof: seed %d (RADBRIDGE_CRASH_SEED=%d reproduces the kill schedule), %d cycles", seed, seed, cycles)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	start := time.Now()

	// A long run's log takes a while to replay on a loaded machine with the
	// race detector; the test is about what survives, not how fast.
	readyTimeout = 5 * time.Minute
	defer func() { readyTimeout = 60 * time.Second }()
	addrs := freePorts(t, 4)
	dir := filepath.Join(t.TempDir(), "data")
	storeDir := t.TempDir()
	flags := []string{"--data-dir", dir, "--grpc-addr", addrs[0], "--http-addr", addrs[1], "--mllp-addr", addrs[2], "--dicom-addr", addrs[3],
		"--study-quiet-period", "1s", "--store-dir", storeDir,
		// Snapshots and evictions happen between the kills, so restarts
		// load snapshots, dedup keys come from the RADBRIDGE_SEEN bucket
		// and patients are reloaded from the archive: the clean replay
		// (no snapshots, every patient in memory or evicted into memory)
		// must still agree.
		"--snapshot-every", "60", "--snapshot-interval", "1s", "--state-idle", "2s"}

	d := serve(t, flags...)
	tail := exec.Command(binary, "tail", "--addr", addrs[0], "--json", "--since", "0")
	tailOut, tailErr := &testkit.Buffer{}, &testkit.Buffer{}
	tail.Stdout, tail.Stderr = tailOut, tailErr
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tail.Process.Kill(); tail.Wait() }()

	load := &crashLoad{want: map[string]rbv1.EventType{}, hl7Acked: map[string]bool{}, dicomAcked: map[string]map[string]bool{}, studyPatient: map[string]string{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var peerErrs testkit.Buffer
	logf := func(f string, a ...any) { fmt.Fprintf(&peerErrs, f+"\n", a...) }
	hl7Dir, dicomDir := t.TempDir(), t.TempDir()
	wg.Go(func() { load.runHL7(stop, mllp, addrs[2], hl7Dir, 1, 100000, logf) })
	wg.Go(func() { load.runDICOM(stop, addrs[3], dicomDir, logf) })
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	var early []*testkit.Buffer
	kills := 0
	for c := 1; c <= cycles; c++ {
		up := time.Duration(300+rng.Int64N(int64(maxUp/time.Millisecond))) * time.Millisecond
		time.Sleep(up) // the kill schedule, not a wait
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
		kills++
		if rng.IntN(4) == 0 {
			// Kill once more while it opens the store and replays.
			after := time.Duration(100+rng.Int64N(1500)) * time.Millisecond
			cmd := exec.Command(binary, append([]string{"serve", "--log-format", "json"}, flags...)...)
			logs := &testkit.Buffer{}
			cmd.Stderr = logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(after) // the kill schedule, not a wait
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			early = append(early, logs)
			kills++
			t.Logf("cycle %d: killed after %v of load, then again %v into a restart", c, up, after)
		} else {
			t.Logf("cycle %d: killed after %v of load", c, up)
		}
		d = serve(t, flags...)
	}
	// Load for a last while on the surviving daemon (the scenario, not a
	// wait), then stop the peers.
	time.Sleep(time.Second)
	stopLoad()
	defer func() {
		if t.Failed() {
			for i, l := range early {
				t.Logf("log of early-killed daemon %d:\n%s", i+1, l.String())
			}
			t.Logf("tail stderr:\n%s", tailErr.String())
			t.Logf("peer errors:\n%s", peerErrs.String())
		}
	}()
	if s := peerErrs.String(); s != "" {
		t.Fatalf("the load could not run:\n%s", s)
	}

	// Wait (bounded) until the subscriber shows everything acknowledged:
	// the last quiet periods end, the tail catches up.
	// Then wait for 3 s without a new event (3 quiet periods: no timer
	// is left to fire), so the barrier below is the ingest log's last record.
	var missing []string
	settle := func() {
		deadline := time.Now().Add(90*time.Second + time.Duration(cycles)*5*time.Second)
		lastCount, lastChange := -1, time.Now()
		testkit.Poll(time.Until(deadline), func() bool {
			evs := tailEvents(t, tailOut.String())
			if len(evs) != lastCount {
				lastCount, lastChange = len(evs), time.Now()
			}
			missing = load.acknowledgedMissing(evs)
			return len(missing) == 0 && time.Since(lastChange) > 3*time.Second
		})
	}
	settle()
	// Every patient has now been idle for longer than --state-idle (2 s),
	// so the next observation's log time evicts them all to the archive:
	// one more order and report for each of the five patients reloads
	// them (the clean replay below must agree with what that produced).
	load.runHL7(make(chan struct{}), mllp, addrs[2], hl7Dir, 1000001, 1000005, logf)
	settle()

	// A barrier: an event published through the API is acknowledged once
	// the mapper has applied it, so everything recorded before it is
	// mapped. Stop in order right after; if a timer observation slipped in
	// after the barrier, run once more (without load) and retry (5 times), so the
	// comparison below sees a daemon that applied its whole ingest log.
	var st *store.Store
	ctx := context.Background()
	for try := 1; ; try++ {
		barrier := publish(t, d, "CRASH-BARRIER", try)
		seq, _ := strconv.Atoi(strings.Fields(barrier)[0])
		if !testkit.Poll(30*time.Second, func() bool {
			evs := tailEvents(t, tailOut.String())
			return len(evs) > 0 && evs[len(evs)-1].Sequence >= uint64(seq)
		}) {
			t.Fatalf("radbridge tail did not print the barrier event %d; it printed %d events", seq, len(tailEvents(t, tailOut.String())))
		}
		d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.done
		var err error
		st, err = store.Open(ctx, store.Config{DataDir: dir, SyncAlways: true})
		if err != nil {
			t.Fatal(err)
		}
		head, err := st.Ingest().Last(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if readmodel.EventID(eventlog.Key{IngestSeq: head}) == strings.Fields(barrier)[1] {
			break
		}
		// Name what followed the barrier.
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		st.Ingest().Watch(wctx, max(1, head-10), func(r ingest.Record) error {
			t.Logf("ingest %d (head %d): %s %s at %v %s", r.Seq, head, r.Kind, r.Key, r.Time, map[bool]string{true: string(r.Body)}[r.Kind == ingest.KindTimer])
			if r.Seq >= head {
				wcancel()
			}
			return nil
		})
		wcancel()
		st.Close()
		if try == 5 {
			t.Fatalf("the ingest log kept growing after the barrier (head %d)", head)
		}
		d = serve(t, flags...)
	}
	defer st.Close()

	// The stored log: contiguous sequences.
	_, last, err := st.Events().Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.Events().Read(ctx, 1, eventlog.Filter{}, int(last)+1)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range stored {
		if ev.Sequence != uint64(i+1) {
			t.Fatalf("stored event %d has sequence %d: the log has a gap", i+1, ev.Sequence)
		}
	}
	if uint64(len(stored)) != last {
		t.Fatalf("read %d stored events, the log's last sequence is %d", len(stored), last)
	}

	// Lost: nothing acknowledged is missing.
	for _, m := range missing {
		t.Errorf("tail: %s", m)
	}
	lost := load.acknowledgedMissing(stored)
	for _, m := range lost {
		t.Errorf("event log: %s", m)
	}

	// Duplicated: one event per message and type, one AVAILABLE per study.
	dups := 0
	perMsg := map[string]int{}
	available := map[string]int{}
	for _, ev := range stored {
		if c := ev.GetSource().GetMessageControlId(); c != "" && ev.Type == load.want[c] {
			perMsg[c]++
		}
		if ev.Type == rbv1.EventType_IMAGING_STUDY_AVAILABLE {
			available[ev.StudyInstanceUid]++
		}
	}
	for c, n := range perMsg {
		if n > 1 {
			dups++
			t.Errorf("HL7 %s made %d %v events, want 1", c, n, load.want[c])
		}
	}
	for s, n := range available {
		if n > 1 {
			dups++
			t.Errorf("study %s became available %d times, want once", s, n)
		}
	}

	// The subscriber: every stored event once, in sequence order, no gap.
	seen := tailEvents(t, tailOut.String())
	ids := map[string]uint64{}
	for i, ev := range seen {
		if prev, ok := ids[ev.Id]; ok {
			dups++
			t.Errorf("tail printed event %s twice (sequences %d and %d)", ev.Id, prev, ev.Sequence)
		}
		ids[ev.Id] = ev.Sequence
		if ev.Sequence != uint64(i+1) {
			t.Fatalf("tail's event %d has sequence %d: resuming skipped or repeated events", i+1, ev.Sequence)
		}
		if i < len(stored) && (stored[i].Id != ev.Id || stored[i].Type != ev.Type) {
			t.Errorf("tail's event %d is %s %v, the log's is %s %v", i+1, ev.Id, ev.Type, stored[i].Id, stored[i].Type)
		}
	}
	if len(seen) != len(stored) {
		t.Errorf("tail printed %d events, the log holds %d", len(seen), len(stored))
	}

	// Read models and --store-dir hold every acknowledged instance.
	patients := st.Patients()
	load.mu.Lock()
	for study, sops := range load.dicomAcked {
		if len(sops) == 0 {
			continue
		}
		for sop := range sops {
			series := sop[:strings.LastIndex(sop, ".")]
			if _, err := os.Stat(filepath.Join(storeDir, study, series, sop+".dcm")); err != nil {
				t.Errorf("--store-dir lacks acknowledged instance %s: %v", sop, err)
			}
		}
		p, err := patients.Patient(ctx, load.studyPatient[study])
		if err != nil || p == nil {
			t.Errorf("read model of %s: %v %v", load.studyPatient[study], p, err)
			continue
		}
		var res map[string]any
		json.Unmarshal(p.Studies[rules.StudyResourceID(study)], &res)
		have := instanceUIDs(res)
		for sop := range sops {
			if !have[sop] {
				t.Errorf("read model of %s: study %s lacks acknowledged instance %s", load.studyPatient[study], study, sop)
			}
		}
	}
	load.mu.Unlock()

	leftovers, _ := filepath.Glob(filepath.Join(storeDir, ".incoming-*"))
	t.Logf("--store-dir: %d temporary files of interrupted C-STOREs", len(leftovers))

	// The clean replay.
	diverged := cleanReplay(t, st, flags)
	st.Close()
	// And radbridge replay --check, the operator's tool for the same
	// question (it starts from the newest snapshot the daemons wrote).
	out, err := exec.Command(binary, append([]string{"replay", "--check"}, flags...)...).CombinedOutput()
	if err != nil {
		diverged++
		t.Errorf("radbridge replay --check: %v\n%s", err, out)
	} else {
		t.Logf("radbridge replay --check:\n%s", out)
	}

	load.mu.Lock()
	instances := 0
	for _, s := range load.dicomAcked {
		instances += len(s)
	}
	divergence := "none"
	if diverged > 0 {
		divergence = fmt.Sprintf("%d differences", diverged)
	}
	t.Logf("crash proof: %v, seed=%d cycles=%d kills=%d | HL7: %d mllp_send runs (%d failed, %d resends), %d messages acknowledged | DICOM: %d storescu associations (%d failed, %d resends), %d studies, %d instances acknowledged | %d events | lost=%d duplicates=%d divergence=%s",
		time.Since(start).Round(time.Second), seed, cycles, kills, load.hl7Runs, load.hl7Failed, load.hl7Resends, len(load.hl7Acked),
		load.dicomRuns, load.dicomFailed, load.dicomRetry, len(load.dicomAcked), instances, len(stored),
		len(lost), dups, divergence)
	load.mu.Unlock()
	if len(load.hl7Acked) == 0 || instances == 0 {
		t.Errorf("the load acknowledged %d messages and %d instances: the test proved nothing", len(load.hl7Acked), instances)
	}
}

// readOnlyIngest is the ingest log for a replay: it never writes (the
// mapper's timer goroutine would record due timers), so the replay only
// reads what the daemons recorded.
type readOnlyIngest struct{ ingest.Log }

func (readOnlyIngest) Append(context.Context, ingest.Observation) (uint64, bool, error) {
	return 0, false, errors.New("clean replay: the ingest log is read-only")
}

// cleanReplay runs a fresh mapper with the daemon's rules over the stored
// ingest log into an in-memory event log and compares, event by event and
// read model by read model, with what the crashed daemons stored. It
// returns the number of differences (each reported).
func cleanReplay(t *testing.T, st *store.Store, flags []string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := config.Load("radbridge serve", flags, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	head, err := st.Ingest().Last(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mem := eventlog.NewMemory()
	rm := &readmodeltest.Memory{}
	// The daemon's rules, options and dedup horizon, without snapshots:
	// from the first ingest record, into memory, writing nothing.
	mc := app.CleanReplayConfig(cfg, st)
	mc.Ingest, mc.Events, mc.ReadModel = readOnlyIngest{st.Ingest()}, mem, rm
	m := mapper.New(mc)
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- m.Run(ctx) }()
	if !testkit.Poll(5*time.Minute, func() bool {
		select {
		case err := <-done:
			t.Fatalf("clean replay stopped at ingest %d of %d: %v", m.Applied(), head, err)
		default:
		}
		return m.Applied() >= head && m.Ready()
	}) {
		t.Fatalf("clean replay applied %d of %d ingest records in 5 minutes", m.Applied(), head)
	}
	took := time.Since(began)
	// The daemons ran with a short --state-idle: the same log makes the
	// clean replay evict (into memory) and reload where they did.
	if st := m.Stats(); st.Evicted == 0 || st.Reloaded == 0 {
		t.Errorf("clean replay evicted %d and reloaded %d patients; the run was meant to exercise the archive", st.Evicted, st.Reloaded)
	} else {
		t.Logf("clean replay: %d patients evicted, %d reloaded (as the daemons did, by log time)", st.Evicted, st.Reloaded)
	}
	cancel()
	<-done
	ctx = context.Background()

	diffs := 0
	report := func(f string, a ...any) {
		diffs++
		if diffs <= 20 {
			t.Errorf("clean replay differs: "+f, a...)
		}
	}
	_, last, _ := st.Events().Bounds(ctx)
	stored, err := st.Events().Read(ctx, 1, eventlog.Filter{}, int(last)+1)
	if err != nil {
		t.Fatal(err)
	}
	replayed, _ := mem.Read(ctx, 1, eventlog.Filter{}, len(stored)+1000)
	if len(replayed) != len(stored) {
		report("%d events replayed, %d stored", len(replayed), len(stored))
	}
	for i := range min(len(stored), len(replayed)) {
		s, r := stored[i], replayed[i]
		if !proto.Equal(s, r) {
			sj, _ := protojson.Marshal(s)
			rj, _ := protojson.Marshal(r)
			report("event %d:\nstored   %s\nreplayed %s", i+1, sj, rj)
		}
	}

	kvPatients := map[string][]byte{}
	// patient.<token> is a patient's manifest (its resources are keys
	// below it): read each through the store, and compare the patient
	// re-encoded as the replay encodes it.
	keys, err := st.State().ListKeysFiltered(ctx, "patient.*")
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		id, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(k, "patient."))
		if k == "patient._" {
			id, err = nil, nil // eventlog.PatientToken("")
		}
		if err != nil {
			t.Fatalf("read model key %s: %v", k, err)
		}
		pt, err := st.Patients().Patient(ctx, string(id))
		if err != nil || pt == nil {
			t.Fatalf("read model %s: %v %v", k, pt, err)
		}
		kvPatients[k], _ = json.Marshal(pt)
	}
	models := rm.JSON()
	for id, b := range models {
		k := "patient." + eventlog.PatientToken(id)
		if s, ok := kvPatients[k]; !ok {
			report("read model of %s: replayed, not stored", id)
		} else if !bytes.Equal(s, b) {
			report("read model of %s:\nstored   %s\nreplayed %s", id, s, b)
		}
		delete(kvPatients, k)
	}
	for k := range kvPatients {
		report("read model %s: stored, not replayed", k)
	}
	t.Logf("clean replay: %d ingest records in %v (in the test process), %d events, %d read models compared; %d differences", head, took.Round(time.Millisecond), len(stored), len(models), diffs)
	return diffs
}

// TestKillDashNineDuringFirstStart: the first start on a new data directory
// is killed with SIGKILL as soon as JetStream has created its directory,
// before the store is complete. The next start must finish creating the
// store and serve (it used to refuse the directory for good: "not empty and
// has no radbridge.json").
func TestKillDashNineDuringFirstStart(t *testing.T) {
	inWindow := 0
	for try := 1; try <= 5; try++ {
		dir := filepath.Join(t.TempDir(), "data")
		cmd := exec.Command(binary, "serve", "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "", "--dicom-addr", "")
		logs := &testkit.Buffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		js := filepath.Join(dir, "jetstream")
		for deadline := time.Now().Add(60 * time.Second); ; {
			if _, err := os.Stat(js); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no %s after a minute:\n%s", js, logs.String())
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if b, err := os.ReadFile(filepath.Join(dir, "radbridge.json")); err != nil || bytes.Contains(b, []byte(`"creating":true`)) {
			inWindow++ // killed before the store was complete
		}
		d := serve(t, "--data-dir", dir)
		publish(t, d, "P-FIRST", try)
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
	}
	if inWindow == 0 {
		t.Fatal("no kill landed before the store was complete: the test proved nothing")
	}
	t.Logf("%d of 5 kills landed before the store was complete; every restart served", inWindow)
}
