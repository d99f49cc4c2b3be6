package app_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"radbridge/demo"
	"radbridge/internal/testkit"
)

// axeVersion is the accessibility checker the page test runs (npm
// axe-core, pinned; installed by the test into the user cache directory,
// never committed).
const axeVersion = "4.14.1"

// installAxe returns axe-core's browser script, installing the pinned
// version with npm into the cache on first use.
func installAxe(t *testing.T) string {
	t.Helper()
	npm := testkit.Peer(t, "npm")
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "radbridge-test", "npm", "axe-core@"+axeVersion)
	script := filepath.Join(dir, "node_modules", "axe-core", "axe.min.js")
	if _, err := os.Stat(script); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "install", "--prefix", dir, "--no-save", "--no-audit", "--no-fund", "--ignore-scripts", "axe-core@"+axeVersion)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm install axe-core@%s: %v\n%s", axeVersion, err, out)
		}
	}
	var pkg struct{ Version string }
	if b, err := os.ReadFile(filepath.Join(dir, "node_modules", "axe-core", "package.json")); err != nil || json.Unmarshal(b, &pkg) != nil || pkg.Version != axeVersion {
		t.Fatalf("axe-core in %s is %q, want %s (%v)", dir, pkg.Version, axeVersion, err)
	}
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDemoPageInChromium opens the page of `radbridge demo` in headless
// Chromium and watches a simulated MR study arrive: its images counted
// against the MPPS total ("Images received: k/11"), a real thumbnail once
// it is available, the body map's head zone counting it (and reachable and
// operable by keyboard), every status in words, and axe-core finding no
// accessibility violation of serious or critical impact.
func TestDemoPageInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo at its real speed")
	}
	axe := installAxe(t)
	browser := testkit.Chromium(t, context.Background())
	dm := startDemo(t, "--data-dir", filepath.Join(t.TempDir(), "data"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0", "--patients", "2")
	mr := demo.PlanRun(dm.run, 2, 0)[1] // MR brain: MPPS, critical final report; its patient also has the cancelled order
	if mr.Modality != "MR" {
		t.Fatalf("the plan changed: exam 2 is %s", mr.Modality)
	}
	tb := openTab(t, browser, "demo page", dm.base+"/?patient="+mr.Patient.ID)
	tb.waitFor(t, "connection live", `document.querySelector('[data-testid="connection"]').textContent === "live"`)
	// Record every progress line the page shows while the images arrive.
	evalIn[bool](t, tb, `(() => {
		window.__progress = [];
		const rec = () => { for (const p of document.querySelectorAll('[data-testid="study-progress"]')) {
			const s = p.querySelector('.progress-label').textContent + (p.querySelector('[role="progressbar"]') ? " bar" : "");
			if (!window.__progress.includes(s)) window.__progress.push(s); } };
		new MutationObserver(rec).observe(document.body, { subtree: true, childList: true, characterData: true });
		rec();
		return true;
	})()`)
	card := `document.querySelector('[data-testid="study-card"][data-accession="` + mr.Accession + `"]')`
	tb.waitFor(t, "the MR study available with a real thumbnail", `(() => {
		const c = `+card+`;
		if (!c || c.dataset.status !== "available") return false;
		const img = c.querySelector('[data-testid="study-thumbnail"]');
		return !!img && img.complete && img.naturalWidth > 0 && img.src.startsWith("blob:");
	})()`)
	progress := evalIn[[]string](t, tb, `window.__progress`)
	sawNM := false
	for _, p := range progress {
		if strings.HasSuffix(p, "/11 bar") && strings.HasPrefix(p, "Images received: ") {
			sawNM = true
		}
	}
	if !sawNM {
		t.Errorf("no N/M progress with a bar while the MR study arrived; saw %q", progress)
	}
	tb.waitFor(t, "the cancelled order and the final report, in words", `(() => {
		const final = [...document.querySelectorAll('[data-testid="report"][data-accession="`+mr.Accession+`"]')].find(r => r.dataset.status === "final");
		const cancelled = [...document.querySelectorAll('[data-testid="order-status"]')].find(o => o.dataset.status === "revoked");
		return !!final && final.querySelector('[data-testid="report-status"]').textContent === "Final" &&
			!!cancelled && cancelled.textContent === "Cancelled";
	})()`)

	// The body map: the head zone counts the MR brain study, is a button
	// reached by keyboard, and Enter limits the gallery to it.
	head := `document.querySelector('[data-testid="body-map"] [data-region="HEAD"]')`
	if got := evalIn[string](t, tb, `(() => { const z = `+head+`; return [z.dataset.count, z.querySelector('[data-testid="region-value"]').textContent, z.getAttribute("role"), z.getAttribute("tabindex"), z.getAttribute("aria-label")].join("|"); })()`); got != "1|1|button|0|Head: 1 study; press to show only these" {
		t.Errorf("head zone: %q", got)
	}
	if got := evalIn[string](t, tb, `document.querySelector('[data-testid="body-map"] [data-region="LEG"]').getAttribute("aria-hidden")`); got != "true" {
		t.Errorf("an empty zone is not hidden from assistive technology: aria-hidden %q", got)
	}
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	evalIn[bool](t, tb, head+`.focus(), document.activeElement === `+head)
	if _, err := chromedp.Run(ctx, chromedp.KeyEvent(kb.Enter)); err != nil {
		t.Fatal(err)
	}
	tb.waitFor(t, "Enter on the head zone filters the gallery", head+`.getAttribute("aria-pressed") === "true" &&
		[...document.querySelectorAll('[data-testid="study-card"]')].every(c => c.hidden === (c.dataset.accession !== "`+mr.Accession+`"))`)
	if _, err := chromedp.Run(ctx, chromedp.KeyEvent(" ")); err != nil {
		t.Fatal(err)
	}
	tb.waitFor(t, "Space shows every study again", head+`.getAttribute("aria-pressed") === "false"`)

	// Every status is a word, never a FHIR code.
	raw := evalIn[[]string](t, tb, `[...document.querySelectorAll('[data-testid$="-status"]')].map(e => e.textContent)
		.filter(s => /^(registered|available|cancelled|revoked|active|completed|preliminary|final|amended|corrected|unknown|entered-in-error|on-hold)$/i.test(s) && s !== s.charAt(0).toUpperCase() + s.slice(1).toLowerCase() || /[A-Z]{4,}|-in-|on-hold|revoked|registered/.test(s))`)
	if len(raw) > 0 {
		t.Errorf("raw status codes on the page: %q", raw)
	}
	if txt := tb.text(t); strings.Contains(txt, "REGISTERED") || strings.Contains(txt, "REVOKED") || strings.Contains(strings.ToLower(txt), "revoked") {
		t.Errorf("the page shows a raw status code:\n%s", txt)
	}

	// axe-core: no violation of serious or critical impact.
	evalIn[bool](t, tb, axe+"\n;true")
	res, err := chromedp.Run(ctx, chromedp.Evaluate[string](`axe.run(document, { resultTypes: ["violations"] }).then(r => JSON.stringify(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ")) }))))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("axe.run: %v", err)
	}
	var violations []struct {
		ID, Impact, Help string
		Nodes            []string
	}
	if err := json.Unmarshal([]byte(res), &violations); err != nil {
		t.Fatalf("axe results %q: %v", res, err)
	}
	for _, v := range violations {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("axe %s (%s): %s at %v", v.ID, v.Impact, v.Help, v.Nodes)
		} else {
			t.Logf("axe %s (%s): %s at %v", v.ID, v.Impact, v.Help, v.Nodes)
		}
	}
	tb.screenshot(t, artifactsDir(t), "demo-page.png")
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.errors) > 0 {
		t.Errorf("page errors: %q", tb.errors)
	}
}
