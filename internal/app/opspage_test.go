package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"radbridge/internal/testkit"
)

// TestOpsPageResolvesAnException: an order (mllp_send) and its study sent
// by storescu under a wrong MRN make an "accession under two patients"
// exception; in headless Chromium the /ops page, given an operator token,
// lists it with its evidence and the proposed move, and an operator
// resolves it with the keyboard (a reason, then Enter): the item leaves the
// worklist and the study is the order's patient's.
func TestOpsPageResolvesAnException(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(opToken+" alice role=operator\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := runDaemon(t, filepath.Join(dir, "data"), slog.New(slog.DiscardHandler), "--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0",
		"--auth", "tokens", "--auth-tokens-file", tokens, "--study-quiet-period", "2s", "--hl7-patient-authority", "NORTHWING")
	base := "http://" + d.HTTPAddr()
	f := testkit.WriteHL7(t, "order", strings.ReplaceAll(risMessages[0].msg, "{{ctl}}", "OPS-1"))
	if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), f); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("order ACK %q", ack.Bytes())
	}
	studyDir := t.TempDir()
	makeStudyOf(t, studyDir, studyUID, "WRONG1", "ACC1001", 1, 2)
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, studyDir); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	testkit.EventuallyState(t, 30*time.Second, "the exception", func() (bool, string) {
		_, ex := apiJSON(t, "GET", base+"/v1/exceptions", opToken, nil)
		return len(exceptionItems(ex, "accession-two-patients")) == 1, fmt.Sprint(ex)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	browser := testkit.Chromium(t, ctx)
	tb := openTab(t, browser, "ops", base+"/ops")
	tb.waitFor(t, "asks for a token", `document.querySelector('[data-testid="ops-status"]').textContent.includes("401")`)
	if err := chromedp.Do(tb.ctx,
		chromedp.SendKeys(`#token-input`, opToken+"\r"), // Enter submits the token form
	); err != nil {
		t.Fatalf("enter token: %v", err)
	}
	item := `[data-testid="item"][data-kind="accession-two-patients"]`
	tb.waitFor(t, "the exception listed", `!!document.querySelector('`+item+` [data-testid="resolve-button"]')`)
	if txt := evalIn[string](t, tb, `document.querySelector('`+item+`').innerText`); !strings.Contains(txt, "ACC1001") || !strings.Contains(txt, "Move study to MRN4711") {
		t.Errorf("item shows %q", txt)
	}
	// Keyboard only: focus the reason, type it, Enter.
	if err := chromedp.Do(tb.ctx,
		chromedp.Focus(item+` [data-testid="resolve-reason"]`),
		chromedp.SendKeys(item+` [data-testid="resolve-reason"]`, "wrong MRN from the PACS\r"),
	); err != nil {
		t.Fatalf("resolve: %v", err)
	}
	tb.waitFor(t, "the exception resolved", `document.querySelector('[data-testid="ops-status"]').textContent.startsWith("Recorded") && !document.querySelector('`+item+`')`)
	code, img := apiJSON(t, "GET", base+"/v1/patients/MRN4711/imaging", opToken, nil)
	if code != 200 || !strings.Contains(fmt.Sprint(img["studies"]), studyUID) {
		t.Errorf("MRN4711's snapshot after the page's move: %d %v", code, img)
	}
	_, e := apiJSON(t, "GET", base+"/v1/explain?study="+studyUID, opToken, nil)
	if st := explainStudy(e); st == nil || !strings.Contains(fmt.Sprint(st["actions"]), "wrong MRN from the PACS") {
		t.Errorf("explained after the page's move: %v", st)
	}
	tb.mu.Lock()
	if len(tb.errors) > 0 {
		t.Errorf("script errors:\n%s", strings.Join(tb.errors, "\n"))
	}
	tb.mu.Unlock()
}
