package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The browser room protocol (/ws, api/room.go) under load:
//
//   - BenchmarkRoomFanOutProcess/conns=N: the daemon runs as a child
//     process; N room connections subscribe to one patient. Setup measures
//     the daemon's VmRSS before and after the N connections (B/conn); each
//     iteration publishes one IMAGING_STUDY_VIEWED with REST POST
//     /v1/events and times until the last connection has the update.
//     conns=1 is the baseline.
//   - BenchmarkBrowserLatency (browser_test.go in this directory): HL7 ACK
//     to the update applied in the live page in headless Chromium, with a
//     Go room client on the same patient as the baseline.

// roomSizes are the connection counts of BenchmarkRoomFanOutProcess.
func roomSizes(tb testing.TB) []int {
	s := os.Getenv("RADBRIDGE_BENCH_ROOM")
	if s == "" {
		return []int{1, 10000}
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			tb.Fatalf("RADBRIDGE_BENCH_ROOM: bad count %q", f)
		}
		out = append(out, n)
	}
	return out
}

var (
	roomUpdate = []byte(`{"type":"update"`)
	roomSeqKey = []byte(`"sequence":`)
)

// roomSeq returns the sequence of a room update frame (0 for any other
// frame: heartbeat, pong, ...) without decoding the rest.
func roomSeq(b []byte) (uint64, error) {
	if !bytes.HasPrefix(b, roomUpdate) {
		return 0, nil
	}
	i := bytes.Index(b, roomSeqKey)
	if i < 0 {
		return 0, fmt.Errorf("update without sequence: %.200q", b)
	}
	rest := b[i+len(roomSeqKey):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	return strconv.ParseUint(string(rest[:j]), 10, 64)
}

// roomDial opens /ws, waits for welcome, subscribes to patient p after
// sequence since and waits for the subscription confirmation.
func roomDial(ctx context.Context, addr, p string, since uint64) (*websocket.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(dctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		return nil, err
	}
	_, b, err := c.Read(dctx)
	if err == nil && !bytes.HasPrefix(b, []byte(`{"type":"welcome"`)) {
		err = fmt.Errorf("first frame is not welcome: %.200q", b)
	}
	if err == nil {
		err = c.Write(dctx, websocket.MessageText, fmt.Appendf(nil,
			`{"type":"subscribe","data":{"subscription_id":"s1","patient_ids":[%q],"since":%d}}`, p, since))
	}
	if err == nil {
		_, b, err = c.Read(dctx)
		if err == nil && !bytes.HasPrefix(b, []byte(`{"type":"subscription"`)) {
			err = fmt.Errorf("subscribe answered %.200q", b)
		}
	}
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	return c, nil
}

// roomFleet opens n room connections following the bench patient after
// sequence since.
func roomFleet(tb testing.TB, addr string, n int, since uint64) *fleet {
	tb.Helper()
	dial := func(ctx context.Context, i int) (*websocket.Conn, error) {
		c, err := roomDial(ctx, addr, patient, since)
		if err != nil {
			return nil, fmt.Errorf("room connection %d: %w", i, err)
		}
		return c, nil
	}
	return websocketFleet(tb, n, dial, roomSeq)
}

// restPublish publishes one IMAGING_STUDY_VIEWED for patient p with REST
// POST /v1/events and returns its sequence.
func restPublish(ctx context.Context, httpAddr, p string, i int) (uint64, error) {
	body := fmt.Sprintf(`{"type":"IMAGING_STUDY_VIEWED","patient_id":%q,"study_instance_uid":"1.2.826.0.1.3680043.8.498.%d","viewer_id":"bench","viewer_name":"Bench Viewer"}`, p, i+1)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+httpAddr+"/v1/events", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("POST /v1/events: %s: %.300s", resp.Status, b)
	}
	m, err := parseFrame(b) // protojson: "sequence":"N"
	return m.Sequence, err
}

// BenchmarkRoomFanOutProcess: N browser-protocol connections on one
// patient, the daemon in a child process. Setup reports the daemon's RSS
// per connection; every iteration is one REST publish timed until the last
// connection has the update.
func BenchmarkRoomFanOutProcess(b *testing.B) {
	for _, n := range roomSizes(b) {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) { benchRoomFanOut(b, n) })
	}
}

func benchRoomFanOut(b *testing.B, n int) {
	needFDs(b, n+256)
	d := startProcess(b, "--mllp-addr", "", "--dicom-addr", "")
	ctx := context.Background()
	since, err := restPublish(ctx, d.httpAddr, patient, 0)
	if err != nil {
		b.Fatal(err)
	}
	// Warm the path with a few connections that get one event, then close.
	w := roomFleet(b, d.httpAddr, min(16, n), since)
	r := w.expect(since + 1)
	if seq, err := restPublish(ctx, d.httpAddr, patient, 1); err != nil || seq != since+1 {
		w.close()
		b.Fatalf("warm-up publish: sequence %d, %v; want %d", seq, err, since+1)
	}
	w.wait(b, r, time.Minute)
	w.close()
	next := since + 2
	time.Sleep(time.Second) // a measurement's settling time, not a wait
	before := rss(b, d.pid)

	t0 := time.Now()
	f := roomFleet(b, d.httpAddr, n, next-1)
	connectTime := time.Since(t0)
	defer f.close()
	r = f.expect(next)
	if seq, err := restPublish(ctx, d.httpAddr, patient, int(next)); err != nil || seq != next {
		b.Fatalf("first publish: sequence %d, %v; want %d", seq, err, next)
	}
	f.wait(b, r, 2*time.Minute)
	next++
	time.Sleep(2 * time.Second) // let the daemon settle: a measurement's settling time, not a wait
	after := rss(b, d.pid)
	b.Logf("conns=%d: connected in %v; daemon VmRSS %.1f MB -> %.1f MB", n, connectTime.Round(time.Millisecond),
		float64(before)/(1<<20), float64(after)/(1<<20))

	post := measureFanOut(b, f, next, d.pid, "room connections", func(seq uint64) (uint64, error) { return restPublish(ctx, d.httpAddr, patient, int(seq)) })
	b.ReportMetric(ms(percentile(post, 50)), "post-ms-p50")
	b.ReportMetric(float64(after-before)/float64(n), "B/conn")
	b.ReportMetric(float64(after)/(1<<20), "rss-after-MB")
	b.ReportMetric(connectTime.Seconds(), "connect-s")
}
