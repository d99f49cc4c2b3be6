package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"radbridge/internal/config"
	"radbridge/internal/logging"
)

// printConfigError says what is wrong with a configuration: a command-line
// mistake in one line, else each problem on its own line.
func printConfigError(w io.Writer, cmd string, err error) {
	var fe *config.FlagError
	if errors.As(err, &fe) {
		fmt.Fprintf(w, "%s: %v\n", cmd, err)
		return
	}
	fmt.Fprintf(w, "%s: invalid configuration:\n%v\n", cmd, err)
}

// Serve is radbridge serve: it runs the daemon until ctx ends or a signal
// (SIGINT, SIGTERM) arrives, and returns the process exit code.
func Serve(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := config.Load("radbridge serve", args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		printConfigError(stderr, "radbridge serve", err)
		return 2
	}
	log := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := Start(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if cfg.TLSEnabled() {
		// SIGHUP re-reads the TLS files at once (they are also re-read on
		// their own within a second of changing).
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					log.Info("SIGHUP: re-reading the TLS certificate, key and client CAs", "component", "tls")
					_ = d.ReloadTLS() // a failure is logged, the previous certificate stays
				}
			}
		}()
	}
	// After the first signal, a second one exits at once; the goroutine
	// ends when serve returns.
	served := make(chan struct{})
	defer close(served)
	go func() {
		select {
		case <-ctx.Done():
		case <-served:
			return
		}
		stop() // restore default handling: a second signal exits at once
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sig)
		select {
		case <-sig:
			log.Error("second signal: exiting now")
			os.Exit(1)
		case <-served:
		}
	}()
	if err := d.Wait(); err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	return 0
}
