package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"radbridge/demo"
	"radbridge/internal/config"
	"radbridge/internal/logging"
)

const demoUsage = `radbridge demo runs the daemon like serve and, once it is ready, a simulated
hospital (a RIS over MLLP, a PACS over DICOM) sending synthetic patients'
orders, images and reports to it.

Demo flags:
  --speed FACTOR   time scale: 2 runs the one-minute scenario in 30s (default 1)
  --patients N     synthetic patients (default 4)
  --loop           repeat the scenario with new accessions until stopped

Every serve flag works too, before or after these; unless set,
--hl7-patient-authority and --dicom-patient-issuer are the simulation's
authority (` + demo.DefaultAuthority + `), --study-quiet-period is 3s, every
listener is on loopback (127.0.0.1), the data directory is a new temporary
one removed at exit (--data-dir keeps one) and --store-dir a temporary one
(for thumbnails). Each run sends new control ids and accession numbers.

`

// demoOptions are the demo's own flags.
type demoOptions struct {
	speed    float64
	patients int
	loop     bool
}

// demoFlags adds the demo's own flags to the serve flags, so that both
// kinds parse together, in any order.
func (o *demoOptions) demoFlags(fs *flag.FlagSet) {
	fs.Float64Var(&o.speed, "speed", 1, "demo: time scale (2 runs the one-minute scenario in 30s)")
	fs.IntVar(&o.patients, "patients", 4, "demo: synthetic patients (1 to 100)")
	fs.BoolVar(&o.loop, "loop", false, "demo: repeat the scenario with new accessions until stopped")
}

func (o *demoOptions) validate() error {
	if o.speed <= 0 || o.speed > 1000 {
		return fmt.Errorf("--speed %v: want a number above 0, at most 1000", o.speed)
	}
	if o.patients < 1 || o.patients > 100 {
		return fmt.Errorf("--patients %d: want 1 to 100", o.patients)
	}
	return nil
}

// flagSet reports whether the serve flag name was given on the command line
// or in the environment.
func flagSet(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && n == name {
			return true
		}
	}
	return os.Getenv(config.EnvName(name)) != ""
}

// Demo is radbridge demo: the daemon with a simulated RIS and PACS sending to
// it. It returns the process exit code.
func Demo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var opts demoOptions
	cfg, err := config.LoadWith("radbridge demo", args, os.Getenv, stderr, opts.demoFlags)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, demoUsage)
		return 0
	}
	if err == nil {
		err = opts.validate()
	}
	if err != nil {
		printConfigError(stderr, "radbridge demo", err)
		return 2
	}
	if cfg.MLLPAddr == "" {
		fmt.Fprintln(stderr, "radbridge demo: the simulated RIS needs the MLLP listener (--mllp-addr)")
		return 2
	}
	// Loopback only unless told: the demo's receivers take anything.
	for _, l := range []struct {
		name string
		addr *string
	}{{"mllp-addr", &cfg.MLLPAddr}, {"dicom-addr", &cfg.DICOMAddr}} {
		if !flagSet(args, l.name) && *l.addr != "" {
			if _, port, err := net.SplitHostPort(*l.addr); err == nil {
				*l.addr = net.JoinHostPort("127.0.0.1", port)
			}
		}
	}
	// A throwaway data directory unless --data-dir names one to keep, and
	// a throwaway --store-dir so that the page shows real thumbnails.
	var tmp []string
	defer func() {
		for _, d := range tmp {
			os.RemoveAll(d)
		}
	}()
	keep := "removed at exit; --data-dir keeps it"
	if !flagSet(args, "data-dir") && cfg.DataDir == "./radbridge-data" && cfg.NATSURL == "" {
		d, err := os.MkdirTemp("", "radbridge-demo-")
		if err != nil {
			fmt.Fprintf(stderr, "radbridge demo: %v\n", err)
			return 1
		}
		tmp = append(tmp, d)
		cfg.DataDir = filepath.Join(d, "data")
	} else {
		keep = "kept"
	}
	if cfg.StoreDir == "" {
		d, err := os.MkdirTemp("", "radbridge-demo-store-")
		if err != nil {
			fmt.Fprintf(stderr, "radbridge demo: %v\n", err)
			return 1
		}
		tmp = append(tmp, d)
		cfg.StoreDir = d
	}
	run := demo.NewRunID()
	authority := demo.DefaultAuthority
	if cfg.HL7PatientIssuer == "" {
		cfg.HL7PatientIssuer = authority
	} else {
		authority = cfg.HL7PatientIssuer
	}
	if cfg.PatientIssuer == "" {
		cfg.PatientIssuer = authority
	}
	if !flagSet(args, "study-quiet-period") && cfg.StudyQuietPeriod == 10*time.Second {
		cfg.StudyQuietPeriod = 3 * time.Second
	}
	log := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := Start(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	go func() {
		for !d.Ready() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		scheme, addr := "http", d.HTTPAddr()
		if addr == "" {
			scheme, addr = "https", d.HTTPSAddr()
		}
		_, port, _ := net.SplitHostPort(addr)
		first := demo.Patients(opts.patients)[0].ID
		fmt.Fprintf(stdout, "radbridge demo: open %s://localhost:%s/?patient=%s — simulated RIS and PACS are sending to this daemon\n", scheme, port, first)
		fmt.Fprintf(stdout, "radbridge demo: run %s (control ids DEMO%s…, accessions DA%s…); data in %s (%s)\n", run, run, run, cfg.DataDir, keep)
		ris := &demo.RIS{Addr: loopback(d.MLLPAddr())}
		defer ris.Close()
		var pacs demo.PACS
		if d.DICOMAddr() != "" {
			p := &demo.DICOMPACS{Addr: loopback(d.DICOMAddr()), CalledAE: cfg.AETitle}
			defer p.Close()
			pacs = p
		}
		err := demo.Run(ctx, demo.Config{
			RIS: ris, PACS: pacs, Speed: opts.speed, Patients: opts.patients, Loop: opts.loop,
			Authority: authority, Log: log, Run: run,
		})
		if err == nil {
			log.Info("simulation finished; the daemon keeps running (Ctrl-C stops it)", "component", "demo")
		}
	}()
	if err := d.Wait(); err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	return 0
}

// loopback turns a bound address like [::]:2575 into one to dial.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
