package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"radbridge/internal/config"
)

const usage = `radbridge turns a hospital's imaging traffic (DICOM, HL7 v2) into live events.

Usage:
  radbridge serve [flags]   run the daemon (radbridge serve -h lists the flags)
  radbridge demo [flags]    run the daemon with a simulated RIS and PACS sending to it
  radbridge tail [--since 0] [flags]  follow events from a running daemon, live (--since 0: the whole history first)
  radbridge echo [--addr localhost:11112] [--aet A] [--aec B]  verify a DICOM peer (C-ECHO)
  radbridge store [--addr] [--aet] [--aec] FILE|DIR...  send DICOM files (C-STORE)
  radbridge send-hl7 [--addr localhost:2575] FILE...  send HL7 messages over MLLP
  radbridge version [--json]   print the version, Go version, VCS revision and platform
  radbridge completion bash|zsh  print a shell completion script
  radbridge replay [--from SEQ] [--check] [serve flags]  rebuild the mapper state from the ingest log (daemon stopped)
  radbridge healthcheck [--addr localhost:8080]  exit 0 when the daemon is ready
  radbridge status [--addr localhost:8080] [--json] [--token-file F]  print a running daemon's state
  radbridge explain [--addr localhost:8080] --study UID|--accession A|--order O|--patient P  why events have or have not fired
  radbridge check-config [--bind] [--config F] [serve flags]  validate a configuration without starting

The client commands (tail, echo, store, send-hl7, healthcheck, status, explain) speak TLS with
--tls [--tls-ca-file CA] [--tls-cert-file C --tls-key-file K] [--tls-server-name N].

Every serve flag can also be set as RADBRIDGE_<FLAG> (for example
RADBRIDGE_GRPC_ADDR) or in a YAML file given with --config; flags win over the
environment, which wins over the file.
`

// Run runs the command in args and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "tail":
		return tail(ctx, args[1:], stdout, stderr)
	case "echo":
		return echoCmd(ctx, args[1:], stdout, stderr)
	case "store":
		return storeCmd(ctx, args[1:], stdout, stderr)
	case "send-hl7":
		return sendHL7(ctx, args[1:], stdout, stderr)
	case "version":
		return version(args[1:], stdout, stderr)
	case "completion":
		return completion(args[1:], stdout, stderr)
	case "replay":
		return replayCmd(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return healthcheck(ctx, args[1:], stdout, stderr)
	case "status":
		return statusCmd(ctx, args[1:], stdout, stderr)
	case "explain":
		return explainCmd(ctx, args[1:], stdout, stderr)
	case "check-config":
		return checkConfig(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	if s := suggestCommand(args[0]); s != "" {
		fmt.Fprintf(stderr, "radbridge: unknown command %q: did you mean %s? (radbridge help lists the commands)\n", args[0], s)
	} else {
		fmt.Fprintf(stderr, "radbridge: unknown command %q (radbridge help lists the commands)\n", args[0])
	}
	return 2
}

// suggestCommand is the command nearest to name, or "".
func suggestCommand(name string) string {
	fs := flag.NewFlagSet("radbridge", flag.ContinueOnError)
	for _, c := range completionCommands() {
		fs.Bool(c.name, false, "")
	}
	return config.Suggest(fs, name)
}

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

// NewLogger builds the daemon's logger.
func NewLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := config.Load("radbridge serve", args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		printConfigError(stderr, "radbridge serve", err)
		return 2
	}
	log := NewLogger(cfg, stderr)
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
