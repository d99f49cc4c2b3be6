package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"radbridge/internal/app"
	"radbridge/internal/config"
	"radbridge/internal/testkit"
)

func lifecycleConfig(t *testing.T, dir string, args ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load("test", append([]string{"--data-dir", dir, "--mllp-addr", "", "--dicom-addr", ""}, args...), func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestReadyNotifyAndStop: ReadyNotify closes once the daemon serves
// (/readyz answers 200 then), and after the context ends Wait returns and
// the store and the listeners are free again.
func TestReadyNotifyAndStop(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	grpcAddr, httpAddr := loopbackAddr(t), loopbackAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := app.Start(ctx, lifecycleConfig(t, dir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("not ready within 30 s")
	}
	if !d.Ready() {
		t.Error("Ready() false after ReadyNotify closed")
	}
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %s after ReadyNotify closed", resp.Status)
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if d.Ready() {
		t.Error("Ready() true after shutdown")
	}
	for _, a := range []string{grpcAddr, httpAddr} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("%s still bound after shutdown: %v", a, err)
			continue
		}
		ln.Close()
	}
	// The store is closed: a new daemon opens it.
	startAndStop(t, lifecycleConfig(t, dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"))
}

// TestFailedStartLeavesNothingOpen: when a listener cannot be bound,
// Start says which and undoes what it opened before: the store and the
// listeners already bound are free again.
func TestFailedStartLeavesNothingOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	grpcAddr := loopbackAddr(t)
	_, err = app.Start(context.Background(), lifecycleConfig(t, dir, "--grpc-addr", grpcAddr, "--http-addr", taken.Addr().String()), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "--http-addr "+taken.Addr().String()) {
		t.Fatalf("Start with --http-addr taken: %v, want an error naming --http-addr", err)
	}
	ln, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		t.Fatalf("--grpc-addr %s still bound after the failed start: %v", grpcAddr, err)
	}
	ln.Close()
	startAndStop(t, lifecycleConfig(t, dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"))
}

// startAndStop starts a daemon with cfg, waits until it is ready and
// stops it.
func startAndStop(t *testing.T, cfg *config.Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := app.Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	select {
	case <-d.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Error("not ready within 30 s")
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

// TestServeLeavesNoGoroutine: radbridge serve run in-process (as tests and
// embedders do) ends every goroutine it started once it returns, the one
// waiting for a second signal included.
func TestServeLeavesNoGoroutine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var logs testkit.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- app.Serve(ctx, []string{"--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--mllp-addr", "", "--dicom-addr", "", "--log-format", "json"}, &logs)
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), `"msg":"ready"`); {
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 30 s:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("serve exited %d:\n%s", c, logs.String())
	}
	var stacks string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "radbridge/internal/app.Serve") && !strings.Contains(stacks, "radbridge/internal/app.(*Daemon)") {
			return
		}
	}
	t.Errorf("goroutines of serve or the daemon still run after serve returned:\n%s", stacks)
}

// loopbackAddr is a loopback address nothing listens on now.
func loopbackAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
}
