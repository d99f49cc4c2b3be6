package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"radbridge/hl7/mllp"
	"radbridge/internal/app"
	"radbridge/internal/testkit"
	"radbridge/internal/testkit/inproc"
)

// browserPatient is the patient of BenchmarkBrowserLatency: PID-3 with
// the assigning authority the daemon is told to use.
const browserPatient = "BRP1"

// benchORM is an ORM^O01 new order for browserPatient; %[1]s is MSH-10,
// %[2]d the placer/filler number, %[3]s the accession (OBR-18).
const benchORM = "MSH|^~\\&|BENCHRIS|BENCH|RADBRIDGE|IMAGING|20260310121000||ORM^O01|%[1]s|P|2.3\r" +
	"PID|1||" + browserPatient + "^^^BENCH^MR||BENCH^PATIENT||19700101|F\r" +
	"ORC|NW|PLC%[2]d|FIL%[2]d||SC||^^^20260311090000^^R\r" +
	"OBR|1|PLC%[2]d|FIL%[2]d|71250^CT CHEST W/O CONTRAST^C4||||||||||||||%[3]s||||||CT\r"

// startAppDaemon starts the daemon in this process with MLLP on a
// loopback port and DICOM off.
func startAppDaemon(tb testing.TB, extra ...string) *app.Daemon {
	tb.Helper()
	return inproc.Start(tb, "", nil, append([]string{"--dicom-addr", ""}, extra...)...).Daemon
}

// benchChromium starts headless Chromium and returns a tab's context. A
// benchmark without chromium is skipped with a note on stderr.
func benchChromium(tb testing.TB) context.Context {
	tb.Helper()
	if _, err := exec.LookPath("chromium"); err != nil {
		fmt.Fprintf(os.Stderr, "%s: skipped: chromium not installed\n", tb.Name())
		tb.Skip("chromium not installed")
	}
	tab, cancelTab := chromedp.NewContext(testkit.Chromium(tb, context.Background()))
	tb.Cleanup(cancelTab)
	if err := chromedp.Do(tab); err != nil {
		tb.Fatalf("new tab: %v", err)
	}
	return tab
}

func evalTab[T any](tb testing.TB, tab context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		tb.Fatalf("evaluate %.80s: %v", expr, err)
	}
	return v
}

// pageObserver records, for every order element that appears in the page,
// the wall time (ms since the epoch, page clock) when a MutationObserver
// first saw it, and wakes waiters.
const pageObserver = `(() => {
	window.__seen = {}; window.__waiters = [];
	const scan = () => {
		const t = performance.timeOrigin + performance.now();
		for (const o of document.querySelectorAll('[data-testid="order"][data-accession]')) {
			const a = o.dataset.accession;
			if (!(a in window.__seen)) window.__seen[a] = t;
		}
		const w = window.__waiters; window.__waiters = [];
		for (const f of w) f();
	};
	new MutationObserver(scan).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-accession"]});
	scan();
	return true;
})()`

// pageWait resolves with the page time at which the order acc appeared.
func pageWait(acc string) string {
	return fmt.Sprintf(`new Promise(res => { const chk = () => { const t = window.__seen[%q]; if (t !== undefined) res(t); else window.__waiters.push(chk); }; chk(); })`, acc)
}

// wsSeen follows the browser patient over the raw room protocol (the
// baseline) and records when each accession's first update arrived.
type wsSeen struct {
	mu   sync.Mutex
	seen map[string]time.Time
	wake chan struct{}
	err  error
}

var accKey = []byte(`"accession_number":"`)

func followRoom(tb testing.TB, addr string) *wsSeen {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := roomDial(ctx, addr, browserPatient, 0)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	w := &wsSeen{seen: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	done := make(chan struct{})
	tb.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		defer c.CloseNow()
		for {
			_, b, err := c.Read(ctx)
			now := time.Now()
			if err != nil {
				if ctx.Err() == nil {
					w.mu.Lock()
					w.err = err
					w.mu.Unlock()
				}
				return
			}
			if !bytes.HasPrefix(b, roomUpdate) {
				continue
			}
			i := bytes.Index(b, accKey)
			if i < 0 {
				continue
			}
			rest := b[i+len(accKey):]
			j := bytes.IndexByte(rest, '"')
			if j < 0 {
				continue
			}
			acc := string(rest[:j])
			w.mu.Lock()
			if _, ok := w.seen[acc]; !ok {
				w.seen[acc] = now
			}
			w.mu.Unlock()
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

func (w *wsSeen) wait(tb testing.TB, acc string) time.Time {
	tb.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		t, ok := w.seen[acc]
		err := w.err
		w.mu.Unlock()
		if ok {
			return t
		}
		if err != nil {
			tb.Fatalf("room client: %v", err)
		}
		select {
		case <-w.wake:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			tb.Fatalf("room client: no update for %s within 30s", acc)
		}
	}
}

// BenchmarkBrowserLatency sends b.N ORM^O01 new orders over MLLP to an
// in-process daemon, one at a time, and measures from the ACK's arrival
// until (a) the live page in headless Chromium shows the order and (b) a
// Go client on the raw room WebSocket (/ws) has the update: the baseline,
// same patient, same messages, same run.
//
// The page side is measured twice: with the page's clock (a
// MutationObserver stamps performance.timeOrigin+now() when the order
// element appears; the page-to-Go clock offset is measured at setup and
// subtracted) and from Go (an awaited Evaluate started after the ACK,
// minus the median round trip of an awaited Evaluate of a resolved
// promise on the idle page). The page clock is the primary number; the Go-side one is a
// cross-check and is noisier (the round trip varies by milliseconds on a
// loaded machine).
func BenchmarkBrowserLatency(b *testing.B) {
	d := startAppDaemon(b, "--hl7-patient-authority", "BENCH")
	tab := benchChromium(b)
	room := followRoom(b, d.HTTPAddr())

	ctx, cancel := context.WithTimeout(tab, time.Minute)
	if _, err := chromedp.Run(ctx, chromedp.Navigate("http://"+d.HTTPAddr()+"/?patient="+browserPatient)); err != nil {
		cancel()
		b.Fatalf("open page: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector('[data-testid="connection"]').textContent === "live"`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(time.Minute))); err != nil {
		cancel()
		b.Fatalf("page not live: %v", err)
	}
	cancel()
	evalTab[bool](b, tab, pageObserver)

	// Page clock minus Go clock: the middle of the shortest of 20
	// bracketed reads.
	var offset float64
	best := time.Hour
	for range 20 {
		t0 := time.Now()
		p := evalTab[float64](b, tab, `performance.timeOrigin + performance.now()`)
		t1 := time.Now()
		if rtt := t1.Sub(t0); rtt < best {
			best = rtt
			mid := t0.Add(rtt / 2)
			offset = p - float64(mid.UnixNano())/1e6
		}
	}
	b.Logf("page clock - Go clock: %.3f ms (bracket %v)", offset, best)

	conn, err := net.DialTimeout("tcp", d.MLLPAddr(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rd := mllp.NewReader(conn, 1<<20)

	type sample struct{ ack, ws, page, pageGo, rtt time.Duration }
	var samples []sample
	send := func(i int) sample {
		acc := fmt.Sprintf("ACCB%05d", i)
		msg := fmt.Appendf(nil, benchORM, fmt.Sprintf("BENCH-ORM-%d", i), 10000+i, acc)
		// The round trip of an awaited Evaluate whose promise is already
		// resolved, taken while the page is idle (right after the update
		// the page is still laying out, which slows a second Evaluate).
		tr := time.Now()
		evalTab[float64](b, tab, `Promise.resolve(performance.now())`, chromedp.EvalAwaitPromise)
		rtt := time.Since(tr)
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		t0 := time.Now()
		if err := mllp.WriteMessage(conn, msg); err != nil {
			b.Fatal(err)
		}
		ack, err := rd.ReadMessage()
		if err != nil {
			b.Fatal(err)
		}
		tAck := time.Now()
		if !bytes.Contains(ack, []byte("MSA|AA|")) {
			b.Fatalf("order %d: ACK %q", i, ack)
		}
		pageT := evalTab[float64](b, tab, pageWait(acc), chromedp.EvalAwaitPromise)
		tEval := time.Now()
		tWS := room.wait(b, acc)
		ackNs := float64(tAck.UnixNano()) / 1e6
		return sample{
			ack:    tAck.Sub(t0),
			ws:     tWS.Sub(tAck),
			page:   time.Duration((pageT - offset - ackNs) * 1e6),
			pageGo: tEval.Sub(tAck), // minus the median round trip, below
			rtt:    rtt,
		}
	}
	for i := range 5 { // warm-up
		send(-1 - i)
		time.Sleep(20 * time.Millisecond) // one order at a time, as a RIS sends them: the pace, not a wait
	}
	i := 0
	for b.Loop() {
		samples = append(samples, send(i))
		i++
		time.Sleep(20 * time.Millisecond) // one order at a time, as a RIS sends them: the pace, not a wait
	}
	b.StopTimer()
	pick := func(f func(sample) time.Duration) []time.Duration {
		out := make([]time.Duration, len(samples))
		for i, s := range samples {
			out[i] = f(s)
		}
		return out
	}
	ws, ack, rtt := pick(func(s sample) time.Duration { return s.ws }), pick(func(s sample) time.Duration { return s.ack }), pick(func(s sample) time.Duration { return s.rtt })
	medRTT := percentile(rtt, 50)
	page, pageGo := pick(func(s sample) time.Duration { return s.page }), pick(func(s sample) time.Duration { return s.pageGo - medRTT })
	b.ReportMetric(ms(percentile(page, 50)), "page-ms-p50")
	b.ReportMetric(ms(percentile(page, 99)), "page-ms-p99")
	b.ReportMetric(ms(percentile(pageGo, 50)), "page-go-ms-p50")
	b.ReportMetric(ms(percentile(pageGo, 99)), "page-go-ms-p99")
	b.ReportMetric(ms(percentile(ws, 50)), "ws-ms-p50")
	b.ReportMetric(ms(percentile(ws, 99)), "ws-ms-p99")
	b.ReportMetric(ms(percentile(ack, 50)), "ack-ms-p50")
	b.ReportMetric(ms(percentile(ack, 99)), "ack-ms-p99")
	b.ReportMetric(ms(percentile(rtt, 50)), "eval-rtt-ms-p50")
	b.ReportMetric(offset, "clock-offset-ms")
	if n := evalTab[int](b, tab, `document.querySelectorAll('[data-testid="order"]').length`); n != len(samples)+5 {
		b.Logf("page shows %d orders, sent %d", n, len(samples)+5)
	}
}
