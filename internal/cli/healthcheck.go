package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthcheck asks a running daemon's /readyz and exits 0 when it answers
// 200, else 1. Container images without curl use it as their HEALTHCHECK.
func healthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "localhost:8080", "the daemon's HTTP address (--http-addr)")
	timeout := fs.Duration("timeout", 3*time.Second, "time to wait for the answer")
	tf := newTLSClientFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	tc, err := tf.config()
	if err != nil {
		fmt.Fprintf(stderr, "radbridge healthcheck: %v\n", err)
		return 2
	}
	client, scheme := http.DefaultClient, "http"
	if tc != nil {
		// --addr is then the daemon's --https-addr.
		client, scheme = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, "https"
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := scheme + "://" + *addr + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "radbridge healthcheck: %v\n", err)
		return 2
	}
	resp, err := client.Do(req)
	if err != nil {
		if msg := wrongPort(parent, "radbridge healthcheck", *addr, protoHTTP, tc != nil); msg != "" {
			fmt.Fprintln(stderr, msg)
			return 1
		}
		fmt.Fprintf(stderr, "radbridge healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "radbridge healthcheck: %s: %s\n", url, resp.Status)
		return 1
	}
	fmt.Fprintln(stdout, "ready")
	return 0
}
