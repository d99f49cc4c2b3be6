// Package config loads radbridge's configuration from, in rising order of
// precedence, built-in defaults, an optional YAML file (--config), RADBRIDGE_*
// environment variables and command-line flags, and validates it.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the daemon's configuration.
type Config struct {
	ConfigFile string

	DataDir         string
	NATSURL         string
	NATSReplicas    int
	Fsync           bool
	DuplicateWindow time.Duration

	GRPCAddr string
	HTTPAddr string

	Heartbeat     time.Duration
	WindowEvents  int
	WindowBytes   int
	WSWriteTimout time.Duration

	ShutdownTimeout time.Duration

	LogFormat      string
	LogLevel       string
	LogPatientData bool
}

// EnvPrefix prefixes every environment variable.
const EnvPrefix = "RADBRIDGE_"

// EnvName is the environment variable of flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// FlagSet returns the serve flags bound to c, with defaults set.
func (c *Config) FlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.ConfigFile, "config", "", "YAML configuration file (keys are flag names)")
	fs.StringVar(&c.DataDir, "data-dir", "./radbridge-data", "directory of the embedded store (created if missing; its parent must exist)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "external NATS JetStream URL(s), comma-separated; empty runs JetStream embedded")
	fs.IntVar(&c.NATSReplicas, "nats-replicas", 1, "stream replicas on an external JetStream cluster (1-5)")
	fs.BoolVar(&c.Fsync, "fsync", true, "fsync every write before acknowledging it (embedded store); false trades durability on power loss for throughput")
	fs.DurationVar(&c.DuplicateWindow, "duplicate-window", 10*time.Minute, "how long the ingest log deduplicates resent observations by key (the mapper ignores older repeats too)")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", ":9090", "gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8080", "HTTP listen address (REST, WebSocket, health)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 30*time.Second, "default idle time between heartbeats on event streams")
	fs.IntVar(&c.WindowEvents, "subscriber-window", 8192, "events kept in memory for live subscribers; one that falls further behind is disconnected and resumes from its cursor")
	fs.IntVar(&c.WindowBytes, "subscriber-window-bytes", 64<<20, "bytes kept in memory for live subscribers")
	fs.DurationVar(&c.WSWriteTimout, "ws-write-timeout", 10*time.Second, "time a WebSocket client has to take one message")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "time to drain connections on shutdown")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&c.LogPatientData, "log-patient-data", false, "log patient data (names, ids, message bodies); off by default")
	return fs
}

// Load parses args, the environment and the config file into a validated
// configuration.
func Load(name string, args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := &Config{}
	fs := c.FlagSet(name)
	fs.SetOutput(usage)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["config"] {
		if v := getenv(EnvName("config")); v != "" {
			c.ConfigFile = v
		}
	}
	file := map[string]any{}
	if c.ConfigFile != "" {
		b, err := os.ReadFile(c.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return nil, fmt.Errorf("config file %s: %w", c.ConfigFile, err)
		}
		var unknown []string
		for k := range file {
			if fs.Lookup(k) == nil || k == "config" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return nil, fmt.Errorf("config file %s: unknown keys %s", c.ConfigFile, strings.Join(unknown, ", "))
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(f.Name), err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := fs.Set(f.Name, fmt.Sprint(v)); err != nil {
				errs = append(errs, fmt.Errorf("config file %s: %s: %w", c.ConfigFile, f.Name, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// Validate checks the configuration and says what is wrong with it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for name, a := range map[string]string{"grpc-addr": c.GRPCAddr, "http-addr": c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("--%s %q: want host:port (for example :9090): %v", name, a, err)
		}
	}
	if c.NATSURL == "" && c.DataDir == "" {
		bad("--data-dir is required unless --nats-url is set")
	}
	if c.NATSReplicas < 1 || c.NATSReplicas > 5 {
		bad("--nats-replicas %d: want 1 to 5", c.NATSReplicas)
	}
	for name, d := range map[string]time.Duration{"duplicate-window": c.DuplicateWindow, "heartbeat": c.Heartbeat, "ws-write-timeout": c.WSWriteTimout, "shutdown-timeout": c.ShutdownTimeout} {
		if d <= 0 {
			bad("--%s %v: must be positive", name, d)
		}
	}
	if c.WindowEvents < 16 {
		bad("--subscriber-window %d: want at least 16", c.WindowEvents)
	}
	if c.WindowBytes < 1<<20 {
		bad("--subscriber-window-bytes %d: want at least 1 MiB", c.WindowBytes)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("--log-format %q: want text or json", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	return errors.Join(errs...)
}
