package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Version is set at build time with
// -ldflags "-X radbridge/internal/app.Version=v1.2.3". When empty, the
// module version recorded by the Go toolchain is used, else "devel".
var Version string

// BuildInfo describes the running binary.
type BuildInfo struct {
	Version     string `json:"version"`
	GoVersion   string `json:"go_version"`
	VCSRevision string `json:"vcs_revision,omitempty"`
	VCSTime     string `json:"vcs_time,omitempty"`
	VCSModified bool   `json:"vcs_modified,omitempty"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
}

// ReadBuildInfo returns what is known of the running binary's build.
func ReadBuildInfo() BuildInfo {
	bi := BuildInfo{Version: Version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if ok {
		if bi.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			bi.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				bi.VCSRevision = s.Value
			case "vcs.time":
				bi.VCSTime = s.Value
			case "vcs.modified":
				bi.VCSModified = s.Value == "true"
			}
		}
	}
	if bi.Version == "" {
		bi.Version = "devel"
	}
	return bi
}

// String is the one-line form printed by radbridge version.
func (b BuildInfo) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "radbridge %s %s %s/%s", b.Version, b.GoVersion, b.OS, b.Arch)
	if b.VCSRevision != "" {
		fmt.Fprintf(&sb, " revision %s", b.VCSRevision)
		if b.VCSTime != "" {
			fmt.Fprintf(&sb, " (%s)", b.VCSTime)
		}
		if b.VCSModified {
			sb.WriteString(" modified")
		}
	}
	return sb.String()
}

func version(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the build information as JSON")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	bi := ReadBuildInfo()
	if *asJSON {
		b, _ := json.Marshal(bi)
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	fmt.Fprintln(stdout, bi)
	return 0
}

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
