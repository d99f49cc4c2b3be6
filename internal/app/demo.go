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
	"strconv"
	"strings"
	"syscall"
	"time"

	"radbridge/demo"
	"radbridge/internal/config"
)

const demoUsage = `radbridge demo runs the daemon like serve and, once it is ready, a simulated
hospital (a RIS over MLLP, a PACS over DICOM) sending synthetic patients'
orders, images and reports to it.

Demo flags:
  --speed FACTOR   time scale: 2 runs the one-minute scenario in 30s (default 1)
  --patients N     synthetic patients (default 4)
  --loop           repeat the scenario with new accessions until stopped

Every serve flag works too; unless set, --hl7-patient-authority and
--dicom-patient-issuer are the simulation's authority (` + demo.DefaultAuthority + `)
and --study-quiet-period is 3s.

`

// demoOptions are the demo's own flags.
type demoOptions struct {
	speed    float64
	patients int
	loop     bool
}

// splitDemoFlags takes the demo's own flags out of args and leaves the
// serve flags.
func splitDemoFlags(args []string) (demoOptions, []string, error) {
	o := demoOptions{speed: 1, patients: 4}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		switch name {
		case "loop":
			o.loop = true
			if hasVal {
				b, err := strconv.ParseBool(val)
				if err != nil {
					return o, nil, fmt.Errorf("--loop %q: %w", val, err)
				}
				o.loop = b
			}
			continue
		case "speed", "patients":
			if !hasVal {
				if i+1 >= len(args) {
					return o, nil, fmt.Errorf("--%s needs a value", name)
				}
				i++
				val = args[i]
			}
			if name == "speed" {
				f, err := strconv.ParseFloat(val, 64)
				if err != nil || f <= 0 || f > 1000 {
					return o, nil, fmt.Errorf("--speed %q: want a number above 0, at most 1000", val)
				}
				o.speed = f
			} else {
				n, err := strconv.Atoi(val)
				if err != nil || n < 1 || n > 100 {
					return o, nil, fmt.Errorf("--patients %q: want 1 to 100", val)
				}
				o.patients = n
			}
			continue
		}
		rest = append(rest, a)
	}
	return o, rest, nil
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

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, serveArgs, err := splitDemoFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "radbridge demo: %v\n", err)
		return 2
	}
	cfg, err := config.Load("radbridge demo", serveArgs, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, demoUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "radbridge demo: invalid configuration:\n%v\n", err)
		return 2
	}
	if cfg.MLLPAddr == "" {
		fmt.Fprintln(stderr, "radbridge demo: the simulated RIS needs the MLLP listener (--mllp-addr)")
		return 2
	}
	authority := demo.DefaultAuthority
	if cfg.HL7PatientIssuer == "" {
		cfg.HL7PatientIssuer = authority
	} else {
		authority = cfg.HL7PatientIssuer
	}
	if cfg.PatientIssuer == "" {
		cfg.PatientIssuer = authority
	}
	if !flagSet(serveArgs, "study-quiet-period") && cfg.StudyQuietPeriod == 10*time.Second {
		cfg.StudyQuietPeriod = 3 * time.Second
	}
	log := NewLogger(cfg, stderr)
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
			Authority: authority, Log: log,
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
