package app_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"radbridge/internal/testkit"
)

// seenRequest is what the browser says of one request to the daemon.
type seenRequest struct {
	method, url string
	cookie      bool // sent with the radbridge_token cookie
	status      int  // 0 until the response arrived
}

// TestCrossSitePageRecordsNothing: a user whose browser holds the
// radbridge_token cookie opens a page of another origin that posts a study
// notification (HTML forms, text/plain and form-encoded, and a no-cors
// fetch) and a viewed event to radbridge. Chromium sends the cookie with
// each (the page is same-site, another port, so no SameSite rule holds it
// back); radbridge answers 415 and records nothing.
func TestCrossSitePageRecordsNothing(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(fullToken+" reader\n"), 0o600)
	d := startDaemon(t, filepath.Join(dir, "data"), "--auth", "tokens", "--auth-tokens-file", tokens, "--study-quiet-period", "1s")
	target := "http://" + d.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	browser := testkit.Chromium(t, ctx)

	// The user's browser holds the cookie of radbridge's origin.
	own := openTab(t, browser, "radbridge page", target+"/")
	evalIn[string](t, own, `document.cookie = "radbridge_token=`+fullToken+`; path=/"`)

	// The other origin's page: the JSON split across a form field's name
	// and value, so that text/plain's name=value is the JSON again.
	forged := crossSiteNotification(t, "MRN-VICTIM", "1.2.826.0.1.3680043.10.1447.510")
	name, value := forged[:len(forged)-1]+`,"x":"`, `"}`
	viewed := `{"type":"IMAGING_STUDY_VIEWED","patient_id":"MRN-VICTIM","study_instance_uid":"1.2.3","x":"`
	attr := html.EscapeString
	page := `<!doctype html><title>another site</title>
<iframe name="f1"></iframe><iframe name="f2"></iframe><iframe name="f3"></iframe>
<form id="plain" method="POST" enctype="text/plain" target="f1" action="` + target + `/v1/dicom/notifications"><input name="` + attr(name) + `" value="` + attr(value) + `"></form>
<form id="urlenc" method="POST" target="f2" action="` + target + `/v1/dicom/notifications"><input name="` + attr(forged) + `" value=""></form>
<form id="publish" method="POST" enctype="text/plain" target="f3" action="` + target + `/v1/events"><input name="` + attr(viewed) + `" value="` + attr(value) + `"></form>
<script>
for (const id of ["plain", "urlenc", "publish"]) document.getElementById(id).submit();
fetch("` + target + `/v1/dicom/notifications", {method: "POST", mode: "no-cors", credentials: "include",
  headers: {"Content-Type": "text/plain"}, body: ` + "`" + forged + "`" + `});
</script>`
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	defer other.Close()

	tabCtx, cancelTab := chromedp.NewContext(browser)
	defer cancelTab()
	if err := chromedp.Do(tabCtx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[network.RequestID]*seenRequest{}
	get := func(id network.RequestID) *seenRequest {
		if seen[id] == nil {
			seen[id] = &seenRequest{}
		}
		return seen[id]
	}
	if err := chromedp.Listen(tabCtx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			if strings.HasPrefix(ev.Request.URL, target) {
				r := get(ev.RequestID)
				r.method, r.url = ev.Request.Method, ev.Request.URL
			}
		case *network.EventRequestWillBeSentExtraInfo:
			for k, v := range ev.Headers {
				if strings.EqualFold(k, "cookie") && strings.Contains(fmt.Sprint(v), "radbridge_token="+fullToken) {
					get(ev.RequestID).cookie = true
				}
			}
		case *network.EventResponseReceived:
			if strings.HasPrefix(ev.Response.URL, target) {
				get(ev.RequestID).status = int(ev.Response.Status)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tabCtx, chromedp.Navigate(other.URL+"/")); err != nil {
		t.Fatal(err)
	}

	// Wait (bounded) for the four answers and the headers they were sent
	// with: Chromium reports a request's cookie header in an extra-info
	// event that may come after its response.
	var posts []seenRequest
	answered := false
	testkit.Poll(browserWait, func() bool {
		mu.Lock()
		posts = posts[:0]
		done, cookies := 0, 0
		for _, r := range seen {
			if r.method == "POST" {
				posts = append(posts, *r)
				if r.status != 0 {
					done++
				}
				if r.cookie {
					cookies++
				}
			}
		}
		mu.Unlock()
		answered = done == 4 && len(posts) == 4
		return answered && cookies == 4
	})
	if !answered { // answered without every cookie: the checks below say which
		t.Fatalf("the other page's posts: %+v; want 4 answered", posts)
	}
	for _, r := range posts {
		if !r.cookie {
			t.Errorf("POST %s went without the cookie: the test shows nothing", r.url)
		}
		if r.status != http.StatusUnsupportedMediaType {
			t.Errorf("POST %s from another origin with the cookie: %d, want 415", r.url, r.status)
		}
	}

	// Nothing recorded: a study notified after the forged ones is mapped,
	// and the victim has no event.
	waitNotified(t, target, fullToken, "MRN-SENTINEL", "1.2.826.0.1.3680043.10.1447.511")
	if code, body := sendHTTP(t, "GET", target+"/v1/events?patient_id=MRN-VICTIM", "", http.Header{"Authorization": {"Bearer " + fullToken}}); code != 200 || !strings.Contains(body, `"events":[]`) {
		t.Errorf("events of the victim: %d %s; want none", code, body)
	}
}

// TestLivePageThumbnailsWithAuth: with --auth tokens the live page shows
// a study's preview: it fetches the thumbnail with the Authorization header
// (REST takes no cookie) and shows it from a blob: URL.
func TestLivePageThumbnailsWithAuth(t *testing.T) {
	testkit.Peer(t, "storescu")
	const (
		ward       = "5f0e3c2a9b8d7e6f1a2b3c4d5e6f7a8b"
		thumbStudy = "1.2.826.0.1.3680043.10.1447.512"
	)
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte(ward+" ward-tablet patient=MRN4711\n"), 0o600)
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--auth", "tokens", "--auth-tokens-file", tokens,
		"--study-quiet-period", "1s", "--store-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	browser := testkit.Chromium(t, ctx)
	tb := openTab(t, browser, "ward", "http://"+d.HTTPAddr()+"/?patient=MRN4711")
	t.Cleanup(func() { tb.screenshot(t, artifactsDir(t), "thumbnail-with-auth.png") })
	if err := chromedp.Do(tb.ctx,
		chromedp.Click(`.token-settings summary`),
		chromedp.SetValue(`#token-input`, ward),
		chromedp.Click(`#token-apply`),
	); err != nil {
		t.Fatalf("enter token: %v", err)
	}
	tb.waitFor(t, "live with the token", `document.querySelector('[data-testid="connection"]').textContent === "live"`)

	src := t.TempDir()
	makeStudy(t, src, thumbStudy, 1, 3, 1)
	host, port := hostPort(d.DICOMAddr())
	if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, src); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	img := `document.querySelector('[data-testid="study-card"][data-study-uid="` + thumbStudy + `"] img[data-testid="study-thumbnail"]')`
	tb.waitFor(t, "the preview shown", `(() => { const i = `+img+`; return !!i && !i.hidden && i.complete && i.naturalWidth > 0; })()`)
	if src := evalIn[string](t, tb, img+`.src`); !strings.HasPrefix(src, "blob:") {
		t.Errorf("preview src %q, want a blob: URL", src)
	}
	if w := evalIn[int](t, tb, img+`.naturalWidth`); w != 16 {
		t.Errorf("preview %d pixels wide, want 16 (the JPEG of the instances)", w)
	}
	// Without the header the thumbnail is refused: the page sent it.
	if code, _ := sendHTTP(t, "GET", "http://"+d.HTTPAddr()+"/v1/studies/"+thumbStudy+"/thumbnail", "", nil); code != 401 {
		t.Errorf("thumbnail without a token: %d, want 401", code)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.errors) > 0 {
		t.Errorf("page errors: %q", tb.errors)
	}
}
