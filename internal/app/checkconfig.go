package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"radbridge/auth"
	"radbridge/internal/config"
	"radbridge/internal/tlsconf"
	"radbridge/store"
)

const checkConfigUsage = `usage: radbridge check-config [--bind] [--config FILE] [serve flags...]

Reads the configuration exactly as radbridge serve would (flags, RADBRIDGE_*
environment, --config YAML), validates it, checks that the files it names
exist and are readable and parse (tokens, JWT keys, TLS certificate, key and
CAs), that the data directory (or its parent) and --store-dir are writable,
and that the listen addresses parse; with --bind it also binds each address
for a moment. It prints the effective configuration (credentials redacted)
and "configuration OK" (exit 0), or each problem (exit 1).
`

// CheckConfig is radbridge check-config. It returns the process exit code.
func CheckConfig(args []string, stdout, stderr io.Writer) int {
	bind := false
	var rest []string
	for _, a := range args {
		switch a {
		case "--bind", "-bind", "--bind=true", "-bind=true":
			bind = true
		case "--bind=false", "-bind=false":
		case "-h", "--help", "-help":
			fmt.Fprint(stderr, checkConfigUsage)
			fs := (&config.Config{}).FlagSet("radbridge check-config")
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return 0
		default:
			rest = append(rest, a)
		}
	}
	// The problems are listed below; the flag package's usage text would bury them.
	cfg, err := config.Load("radbridge check-config", rest, os.Getenv, io.Discard)
	var problems []string
	if err != nil {
		problems = append(problems, splitErrors(err)...)
	}
	if cfg == nil {
		// Not even parsed (a bad flag, a bad value, an unknown key).
		printProblems(stderr, problems)
		return 1
	}
	problems = append(problems, deepCheck(cfg, bind)...)
	if len(problems) > 0 {
		printProblems(stderr, problems)
		return 1
	}
	printEffective(stdout, cfg)
	fmt.Fprintln(stdout, "configuration OK")
	return 0
}

// splitErrors lists the lines of err (errors.Join joins with newlines).
func splitErrors(err error) []string {
	var out []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func printProblems(w io.Writer, problems []string) {
	fmt.Fprintf(w, "radbridge check-config: %d problem(s):\n", len(problems))
	for _, p := range problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

// deepCheck looks at what Validate does not: the files' contents and
// permissions, the data directory, and (with bind) the ports.
func deepCheck(c *config.Config, bind bool) []string {
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	readable := map[string]bool{}
	// Every file flag (auth, TLS, NATS TLS and credentials, and whatever
	// is added later named *-file).
	type fileFlag struct{ flag, path string }
	var files []fileFlag
	loadedFlags(c).VisitAll(func(f *flag.Flag) {
		if strings.HasSuffix(f.Name, "-file") && f.Value.String() != "" {
			files = append(files, fileFlag{f.Name, f.Value.String()})
		}
	})
	for _, f := range files {
		fh, err := os.Open(f.path)
		if err == nil {
			_, err = fh.Read(make([]byte, 1))
			fh.Close()
		}
		switch {
		case errors.Is(err, os.ErrNotExist):
			// Validate said so already.
		case err != nil && !errors.Is(err, io.EOF):
			bad("--%s %s: not readable: %v", f.flag, f.path, unwrapPath(err))
		default:
			readable[f.flag] = true
		}
	}
	// The files parse as serve would parse them.
	authOK := map[string]bool{"tokens": readable["auth-tokens-file"], "jwt": readable["auth-jwt-key-file"] || readable["auth-jwks-file"] || (c.AuthJWKSURL != "" && (c.AuthJWKSCAFile == "" || readable["auth-jwks-ca-file"]))}[c.Auth]
	if authOK {
		if _, err := auth.New(auth.Config{Mode: c.Auth, TokensFile: c.AuthTokensFile, JWTKeyFile: c.AuthJWTKeyFile, JWKSFile: c.AuthJWKSFile,
			JWTIssuer: c.AuthJWTIssuer, JWTAudience: c.AuthJWTAudience,
			JWKSURL: c.AuthJWKSURL, JWKSCAFile: c.AuthJWKSCAFile, JWKSRefresh: c.AuthJWKSRefresh, JWKSMinRefetch: c.AuthJWKSMinRefetch}); err != nil {
			bad("--auth %s: %v", c.Auth, err)
		}
	}
	if c.TLSEnabled() && readable["tls-cert-file"] && readable["tls-key-file"] && (c.TLSClientCAFile == "" || readable["tls-client-ca-file"]) {
		if _, err := tlsconf.Load(tlsconf.Files{CertFile: c.TLSCertFile, KeyFile: c.TLSKeyFile, ClientCAFile: c.TLSClientCAFile}, nil); err != nil {
			bad("TLS (--tls-cert-file, --tls-key-file, --tls-client-ca-file): %v", err)
		}
	}
	if c.NATSURL == "" && c.DataDir != "" {
		st, err := os.Stat(c.DataDir)
		switch {
		case err == nil && !st.IsDir():
			bad("--data-dir %s: not a directory", c.DataDir)
		case err == nil:
			if err := tryWrite(c.DataDir); err != nil {
				bad("--data-dir %s: not writable: %v", c.DataDir, err)
			}
		case errors.Is(err, os.ErrNotExist):
			parent := filepath.Dir(filepath.Clean(c.DataDir))
			if pst, err := os.Stat(parent); err != nil || !pst.IsDir() {
				bad("--data-dir %s: neither it nor its parent %s exists (radbridge creates the directory, never its parents)", c.DataDir, parent)
			} else if err := tryWrite(parent); err != nil {
				bad("--data-dir %s: does not exist and its parent %s is not writable: %v", c.DataDir, parent, err)
			}
		default:
			bad("--data-dir %s: %v", c.DataDir, unwrapPath(err))
		}
	}
	if c.StoreDir != "" {
		if st, err := os.Stat(c.StoreDir); err == nil && st.IsDir() {
			if err := tryWrite(c.StoreDir); err != nil {
				bad("--store-dir %s: not writable: %v", c.StoreDir, err)
			}
		}
	}
	if bind {
		seen := map[string]string{}
		loadedFlags(c).VisitAll(func(f *flag.Flag) {
			a := f.Value.String()
			if !strings.HasSuffix(f.Name, "-addr") || a == "" || f.Name == "nats-url" {
				return
			}
			_, port, err := net.SplitHostPort(a)
			if err != nil {
				return // Validate said so
			}
			if other, dup := seen[a]; dup && port != "0" {
				bad("--%s %s: the same address as --%s", f.Name, a, other)
				return
			}
			seen[a] = f.Name
			ln, err := net.Listen("tcp", a)
			if err != nil {
				bad("--%s %s: cannot listen: %v", f.Name, a, err)
				return
			}
			ln.Close()
		})
	}
	return problems
}

// unwrapPath drops the *PathError's repetition of the path.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// tryWrite creates and removes a file in dir.
func tryWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".radbridge-check-*")
	if err != nil {
		return unwrapPath(err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// loadedFlags is the serve flag set reading c's values (FlagSet itself
// would reset c to the defaults).
func loadedFlags(c *config.Config) *flag.FlagSet {
	tmp := &config.Config{}
	fs := tmp.FlagSet("effective")
	*tmp = *c
	return fs
}

// printEffective writes the configuration as a YAML file that --config
// would accept, credentials in URLs redacted.
func printEffective(w io.Writer, c *config.Config) {
	fmt.Fprintln(w, "# effective configuration (defaults, --config file, RADBRIDGE_* environment, flags)")
	if c.ConfigFile != "" {
		fmt.Fprintf(w, "# from --config %s\n", c.ConfigFile)
	}
	loadedFlags(c).VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		v := f.Value.String()
		if f.Name == "nats-url" {
			v = store.RedactURLs(v)
		}
		switch f.Value.(flag.Getter).Get().(type) {
		case string:
			fmt.Fprintf(w, "%s: %q\n", f.Name, v)
		default:
			fmt.Fprintf(w, "%s: %s\n", f.Name, v)
		}
	})
}
