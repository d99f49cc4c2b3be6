package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"radbridge/internal/testkit"
)

// browserWait bounds every wait for the page.
const browserWait = 60 * time.Second

// tab is one browser tab showing the live imaging page.
type tab struct {
	name string
	ctx  context.Context

	mu     sync.Mutex
	errors []string // uncaught exceptions and console errors
}

// openTab opens url in a new tab of browser and records the page's errors.
func openTab(t *testing.T, browser context.Context, name, url string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	tb := &tab{name: name, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: new tab: %v", name, err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg = fmt.Sprintf("exception %s at %s:%d", d.Text, d.URL, d.LineNumber+1)
			if d.Exception != nil && d.Exception.Description != "" {
				msg += ": " + d.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, a.Description+string(a.Value))
			}
			msg = "console.error " + strings.Join(parts, " ")
		default:
			return
		}
		tb.mu.Lock()
		tb.errors = append(tb.errors, msg)
		tb.mu.Unlock()
	}); err != nil {
		t.Fatalf("%s: listen: %v", name, err)
	}
	// Wrap WebSocket so the test can drop the page's connection and hold
	// off its reconnects (they go to a path that refuses the upgrade).
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `(() => {
		const Real = window.WebSocket;
		window.__sockets = [];
		window.__blockSockets = false;
		window.WebSocket = class extends Real {
			constructor(url, protocols) {
				super(window.__blockSockets ? String(url).replace(/\/ws$/, "/ws-blocked") : url, protocols);
				window.__sockets.push(this);
			}
		};
	})()`}); err != nil {
		t.Fatalf("%s: init script: %v", name, err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: open %s: %v", name, url, err)
	}
	return tb
}

// waitFor polls the JavaScript predicate in the tab until it is true.
func (tb *tab) waitFor(t *testing.T, what, predicate string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserWait)))
	if err != nil {
		t.Fatalf("%s: %s not within %v: %v\npage: %s", tb.name, what, browserWait, err, tb.text(t))
	}
}

// eval evaluates a JavaScript expression in the tab.
func evalIn[T any](t *testing.T, tb *tab, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: evaluate %s: %v", tb.name, expr, err)
	}
	return v
}

// text is what the tab shows: the connection state and the body's text.
func (tb *tab) text(t *testing.T) string {
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// screenshot saves a full-page PNG of the tab into dir.
func (tb *tab) screenshot(t *testing.T, dir, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Errorf("%s: screenshot: %v", tb.name, err)
		return
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("%s: %v", tb.name, err)
		return
	}
	t.Logf("%s: screenshot %s", tb.name, p)
}

// artifactsDir is $RADBRIDGE_ARTIFACTS, else test-artifacts/ at the repo root.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RADBRIDGE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "test-artifacts")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLiveImagingPageInTwoTabs: two clinicians have the same patient's
// imaging tab open in headless Chromium. The RIS places a STAT order
// (mllp_send), the PACS sends the study (storescu), a clinician opens it,
// the RIS sends the final report: both tabs show every change in place
// (order card with STAT, notifications, the study card with its instance
// count, the CHEST region count, who else is viewing, the report), with
// no script error and no event text interpreted as HTML.
func TestLiveImagingPageInTwoTabs(t *testing.T) {
	mllp := testkit.Peer(t, "mllp_send")
	testkit.Peer(t, "storescu")
	studyDir := t.TempDir()
	makeStudy(t, studyDir, studyUID, 2, 5, 1) // series 1 CHEST, series 2 ABDOMEN: 10 instances

	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "2s", "--hl7-patient-authority", "NORTHWING")
	base := "http://" + d.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel) // after the screenshots
	start := time.Now()

	browser := testkit.Chromium(t, ctx)
	url := base + "/?patient=MRN4711"
	tabs := []*tab{openTab(t, browser, "tab 1", url), openTab(t, browser, "tab 2", url)}
	artifacts := artifactsDir(t)
	t.Cleanup(func() {
		// Screenshots also when the test failed: they show how far it got.
		for i, tb := range tabs {
			tb.screenshot(t, artifacts, fmt.Sprintf("live-imaging-tab%d.png", i+1))
		}
	})
	both := func(what, predicate string) {
		t.Helper()
		for _, tb := range tabs {
			tb.waitFor(t, what, predicate)
		}
	}
	both("connection live", `document.querySelector('[data-testid="connection"]').textContent === "live"`)
	t.Logf("both tabs live after %v", time.Since(start).Round(time.Millisecond))
	// Record whether a progress bar ever shows while the study arrives.
	for _, tb := range tabs {
		evalIn[bool](t, tb, `(() => {
			window.__sawProgress = "";
			new MutationObserver(() => {
				const p = document.querySelector('[data-testid="study-progress"]');
				if (p && !window.__sawProgress) window.__sawProgress = p.textContent;
			}).observe(document.body, {subtree: true, childList: true, characterData: true});
			return true;
		})()`)
	}

	// The RIS places the STAT order.
	send := func(i int) {
		t.Helper()
		m := risMessages[i]
		f := testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl))
		if ack := testkit.MLLPSend(t, mllp, d.MLLPAddr(), f); ack.Segment("MSA") == nil || ack.Segment("MSA").Field(1) != "AA" {
			t.Fatalf("%s: ACK %q", m.name, ack.Bytes())
		}
	}
	send(0)
	both("STAT order ACC1001 with a notification", `(() => {
		const o = document.querySelector('[data-testid="order"][data-accession="ACC1001"]');
		if (!o || !o.classList.contains("stat") || !o.querySelector('[data-testid="stat-badge"]')) return false;
		if (o.querySelector('[data-testid="order-status"]').textContent !== "Ordered") return false;
		return [...document.querySelectorAll('[data-testid="notification"]')].some(n =>
			n.dataset.eventType === "order.placed" && n.textContent.includes("STAT New imaging order: CT CHEST W/O CONTRAST"));
	})()`)

	// The PACS sends the study; it becomes available after the quiet period.
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, studyDir); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	card := fmt.Sprintf(`document.querySelector('[data-testid="study-card"][data-study-uid="%s"]')`, studyUID)
	both("study card available with 10 images and CHEST counted", `(() => {
		const c = `+card+`;
		if (!c || c.dataset.status !== "available") return false;
		if (c.querySelector('[data-testid="instance-count"]').textContent !== "10") return false;
		if (c.querySelector('[data-testid="series-count"]').textContent !== "2") return false;
		if (!c.classList.contains("stat")) return false; // linked to the STAT order by accession
		const r = document.querySelector('[data-testid="region-count"][data-region="CHEST"]');
		if (!r || r.querySelector('[data-testid="region-value"]').textContent !== "1") return false;
		return [...document.querySelectorAll('[data-testid="notification"]')].some(n =>
			n.dataset.eventType === "imaging.study.available" && n.dataset.severity === "success");
	})()`)
	for _, tb := range tabs {
		if p := evalIn[string](t, tb, `window.__sawProgress`); !strings.HasPrefix(p, "Images received: ") {
			t.Errorf("%s: no progress bar while the study arrived (saw %q)", tb.name, p)
		}
		if desc := evalIn[string](t, tb, card+`.querySelector('[data-testid="study-description"]').textContent`); desc != "CT CHEST W/O CONTRAST" {
			t.Errorf("%s: study description %q", tb.name, desc)
		}
	}

	// Tab 1 opens the study: tab 2 sees who is viewing it.
	evalIn[bool](t, tabs[0], `(() => { document.querySelector("#viewer-name").value = "Dr Tab One"; return true; })()`)
	if err := chromedp.Do(tabs[0].ctx, chromedp.Click(`[data-testid="study-card"][data-study-uid="`+studyUID+`"]`)); err != nil {
		t.Fatalf("tab 1: click study card: %v", err)
	}
	tabs[0].waitFor(t, "series list of the opened card", card+`.querySelector('[data-testid="series-list"]') !== null`)
	tabs[1].waitFor(t, "Dr Tab One shown as viewing", `(() => {
		const v = `+card+`.querySelector('[data-testid="viewers"]');
		return !!v && v.textContent.includes("Dr Tab One");
	})()`)
	if own := evalIn[string](t, tabs[0], `(() => { const v = `+card+`.querySelector('[data-testid="viewers"]'); return v ? v.textContent : ""; })()`); own != "" {
		t.Errorf("tab 1 lists its own view as someone else's: %q", own)
	}

	// Tab 2 loses its connection; a preliminary result arrives meanwhile.
	// Tab 2 reconnects and resumes from the last sequence it saw: it shows
	// the result, and has applied exactly the updates tab 1 did.
	evalIn[bool](t, tabs[1], `(() => { window.__blockSockets = true; window.__sockets.at(-1).close(); return true; })()`)
	tabs[1].waitFor(t, "connection lost", `document.querySelector('[data-testid="connection"]').dataset.state === "reconnecting"`)
	send(2)
	tabs[0].waitFor(t, "preliminary report", `!!document.querySelector('[data-testid="report"][data-accession="ACC1001"][data-status="preliminary"]')`)
	if n := evalIn[int](t, tabs[1], `document.querySelectorAll('[data-testid="report"]').length`); n != 0 {
		t.Fatalf("tab 2 shows %d reports while disconnected", n)
	}
	evalIn[bool](t, tabs[1], `(() => { window.__blockSockets = false; return true; })()`)
	tabs[1].waitFor(t, "live again with the preliminary report", `document.querySelector('[data-testid="connection"]').textContent === "live" &&
		!!document.querySelector('[data-testid="report"][data-accession="ACC1001"][data-status="preliminary"]')`)
	applied := `(() => { const c = document.querySelector('[data-testid="connection"]'); return c.dataset.events + " up to " + c.dataset.lastSequence; })()`
	if a, b := evalIn[string](t, tabs[0], applied), evalIn[string](t, tabs[1], applied); a != b {
		t.Errorf("tab 1 applied %s updates, tab 2 (reconnected) %s", a, b)
	}
	if n := evalIn[int](t, tabs[1], `window.__sockets.length`); n < 2 {
		t.Errorf("tab 2 opened %d sockets; want the first and at least the resumed one", n)
	}

	// The RIS sends the final report.
	send(3)
	both("final report ACC1001 linked to the study", `(() => {
		const r = document.querySelector('[data-testid="report"][data-accession="ACC1001"]');
		if (!r || r.dataset.status !== "final") return false;
		if (r.querySelector('[data-testid="report-status"]').textContent !== "Final") return false;
		if (!r.querySelector('[data-testid="report-conclusion"]').textContent.includes("IMPRESSION: No acute abnormality.")) return false;
		const s = `+card+`.querySelector('[data-testid="study-report-status"]');
		return s.dataset.status === "final" && [...document.querySelectorAll('[data-testid="notification"]')].some(n =>
			n.dataset.eventType === "imaging.report.ready");
	})()`)

	// Event text is shown as text: an order whose procedure name is markup.
	xss := strings.NewReplacer("ACC1001", "ACC6666", "PLC1001", "PLC6666", "FIL1001", "FIL6666",
		"CT CHEST W/O CONTRAST", `<img src=x onerror="window.__pwned=1">`).Replace(risMessages[0].msg)
	f := testkit.WriteHL7(t, "ORM-6666", strings.ReplaceAll(xss, "{{ctl}}", "ORM-6666"))
	if ack := testkit.MLLPSend(t, mllp, d.MLLPAddr(), f); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("markup order: ACK %q", ack.Bytes())
	}
	both("markup order shown as text", `(() => {
		const o = document.querySelector('[data-testid="order"][data-accession="ACC6666"]');
		return !!o && o.querySelector(".title").textContent === '<img src=x onerror="window.__pwned=1">';
	})()`)
	for _, tb := range tabs {
		if n := evalIn[int](t, tb, `document.querySelectorAll('img:not([data-testid="study-thumbnail"])').length + (window.__pwned ? 1000 : 0)`); n != 0 {
			t.Errorf("%s: event text became HTML (%d)", tb.name, n)
		}
		if n := evalIn[int](t, tb, `document.querySelectorAll('[data-testid="order"]').length`); n != 2 {
			t.Errorf("%s: %d order cards, want 2", tb.name, n)
		}
		if n := evalIn[int](t, tb, `document.querySelectorAll('[data-testid="study-card"]').length`); n != 1 {
			t.Errorf("%s: %d study cards, want 1", tb.name, n)
		}
		tb.mu.Lock()
		if len(tb.errors) > 0 {
			t.Errorf("%s: script errors:\n%s", tb.name, strings.Join(tb.errors, "\n"))
		}
		tb.mu.Unlock()
	}
	t.Logf("workflow shown in both tabs after %v", time.Since(start).Round(time.Millisecond))
}

// TestLiveImagingPageWithToken: with --auth tokens the page follows a
// patient only with a token entered on the page (kept in the tab's
// sessionStorage, sent as a header and in the room's auth message, never in
// a URL); without one, or with a token scoped to another patient, it says
// it is not authorized.
func TestLiveImagingPageWithToken(t *testing.T) {
	mllp := testkit.Peer(t, "mllp_send")
	const (
		ward  = "5f0e3c2a9b8d7e6f1a2b3c4d5e6f7a8b"
		other = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
	)
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(ward+" ward-tablet patient=MRN4711\n"+other+" other-ward patient=MRN-OTHER\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--hl7-patient-authority", "NORTHWING", "--auth", "tokens", "--auth-tokens-file", tokens)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	browser := testkit.Chromium(t, ctx)
	url := "http://" + d.HTTPAddr() + "/?patient=MRN4711"
	tabs := []*tab{openTab(t, browser, "no token", url), openTab(t, browser, "other patient's token", url), openTab(t, browser, "ward token", url)}
	artifacts := artifactsDir(t)
	t.Cleanup(func() {
		for i, tb := range tabs {
			tb.screenshot(t, artifacts, fmt.Sprintf("token-tab%d.png", i+1))
		}
	})
	state := `document.querySelector('[data-testid="connection"]').dataset.state`
	tabs[0].waitFor(t, "not authorized without a token", state+` === "unauthorized"`)

	useToken := func(tb *tab, token string) {
		t.Helper()
		if err := chromedp.Do(tb.ctx,
			chromedp.Click(`.token-settings summary`),
			chromedp.SetValue(`#token-input`, token),
			chromedp.Click(`#token-apply`),
		); err != nil {
			t.Fatalf("%s: enter token: %v", tb.name, err)
		}
	}
	useToken(tabs[1], other)
	tabs[1].waitFor(t, "not authorized with another patient's token", state+` === "unauthorized"`)
	useToken(tabs[2], ward)
	tabs[2].waitFor(t, "live with the ward token", `document.querySelector('[data-testid="connection"]').textContent === "live"`)

	m := risMessages[0]
	f := testkit.WriteHL7(t, m.ctl, strings.ReplaceAll(m.msg, "{{ctl}}", m.ctl))
	if ack := testkit.MLLPSend(t, mllp, d.MLLPAddr(), f); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("order: ACK %q", ack.Bytes())
	}
	tabs[2].waitFor(t, "the order", `!!document.querySelector('[data-testid="order"][data-accession="ACC1001"]')`)
	for _, tb := range tabs[:2] {
		if n := evalIn[int](t, tb, `document.querySelectorAll('[data-testid="order"]').length`); n != 0 {
			t.Errorf("%s: shows %d orders", tb.name, n)
		}
	}
	for _, tb := range tabs {
		urls := evalIn[string](t, tb, `[location.href, ...performance.getEntriesByType("resource").map(e => e.name), ...window.__sockets.map(s => s.url)].join("\n")`)
		if strings.Contains(urls, ward) || strings.Contains(urls, other) {
			t.Errorf("%s: a token in a URL:\n%s", tb.name, urls)
		}
	}
}
