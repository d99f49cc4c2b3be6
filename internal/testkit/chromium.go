package testkit

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"
)

// Chromium starts a headless Chromium (a peer, see Peer) with a profile of
// its own under ctx and returns the browser's context; each tab is a child
// of it (chromedp.NewContext). extra adds or overrides allocator options.
// The browser ends with the test.
func Chromium(tb testing.TB, ctx context.Context, extra ...chromedp.ExecAllocatorOption) context.Context {
	tb.Helper()
	bin := Peer(tb, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("mute-audio", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	opts = append(opts, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	tb.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(browser); err != nil { // starts the browser
		tb.Fatalf("start %s: %v", bin, err)
	}
	return browser
}
