// Package inproc starts the radbridge daemon in the test's own process (so
// a test reads its state and `go test -cpuprofile` sees its work) and waits
// until it is ready; it also runs radbridge's commands in-process and holds
// small clients of the daemon's APIs. It is apart from testkit because it
// imports internal/app and internal/cli, which the internal tests of the
// packages they import cannot.
package inproc

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"radbridge/internal/app"
	"radbridge/internal/config"
	"radbridge/internal/testkit"
)

// ReadyTimeout bounds the wait for a started daemon's readiness.
const ReadyTimeout = 30 * time.Second

// Daemon is a daemon started by Start.
type Daemon struct {
	*app.Daemon
	stop func() error
}

// Stop stops the daemon and returns what Wait returned; only the first call
// acts, the others return nil. It also runs when the test ends.
func (d *Daemon) Stop() error { return d.stop() }

// Start runs radbridge in this process on data directory dir (a temporary
// one when dir is ""), its gRPC, HTTP, MLLP and DICOM listeners on
// loopback ports 0, followed by the flags in extra (a later flag wins, so
// extra can turn a listener off with --mllp-addr ""). log is the daemon's
// logger (nil discards). It returns when the daemon is ready (and /readyz
// answers 200 when HTTP is on); an error from the daemon when it stops at
// the end of the test fails the test.
func Start(tb testing.TB, dir string, log *slog.Logger, extra ...string) *Daemon {
	tb.Helper()
	if dir == "" {
		dir = filepath.Join(tb.TempDir(), "data")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	args := append([]string{"--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0"}, extra...)
	cfg, err := config.Load("test", args, func(string) string { return "" }, io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	return StartConfig(tb, cfg, log)
}

// StartConfig is Start for a configuration the test built itself.
func StartConfig(tb testing.TB, cfg *config.Config, log *slog.Logger) *Daemon {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := app.Start(ctx, cfg, log)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	var once sync.Once
	stop := func() (err error) {
		once.Do(func() {
			cancel()
			err = d.Wait()
		})
		return err
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("daemon stopped with %v", err)
		}
	})
	testkit.Eventually(tb, ReadyTimeout, "daemon ready", d.Ready)
	if a := d.HTTPAddr(); a != "" {
		testkit.WaitReady(tb, "http://"+a, ReadyTimeout)
	}
	return &Daemon{Daemon: d, stop: stop}
}
