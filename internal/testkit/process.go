package testkit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build runs go build -o out pkg in the module directory dir ("" for the
// current one) with the extra build flags, for a binary the tests run.
func Build(dir, out, pkg string, flags ...string) error {
	cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", out, pkg)...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Buffer is a strings.Builder safe for concurrent use: a child process's
// output while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Process is a radbridge binary running as a child process (see Serve).
type Process struct {
	Cmd *exec.Cmd
	// The plain-text listeners' addresses, from the "listening" log lines;
	// "" for a listener that is off.
	GRPC, HTTP, MLLP, DICOM string
	Logs                    *Buffer       // everything the process logged
	Done                    chan struct{} // closed when it has exited

	stopOnce sync.Once
}

// ServeOptions says how Serve waits for and reports the child.
type ServeOptions struct {
	// ReadyTimeout bounds the wait for readiness (default 60 s).
	ReadyTimeout time.Duration
	// Echo, when set, receives every WARN and ERROR log line as it comes.
	Echo io.Writer
	// KillWithParent has the kernel kill the child when the test process
	// dies (Linux), for a benchmark interrupted before its cleanup runs.
	KillWithParent bool
}

// Serve starts bin with args (a serve command that logs JSON: the caller
// passes serve, --log-format json and the listener flags) and waits until
// it logged "ready" and, with an HTTP listener, /readyz answers 200. At the
// end of the test the process is killed (SIGKILL) and, if the test failed,
// its log is logged.
func Serve(tb testing.TB, bin string, opts ServeOptions, args ...string) *Process {
	tb.Helper()
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	cmd := exec.Command(bin, args...)
	if opts.KillWithParent {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	pr, pw := io.Pipe()
	p := &Process{Cmd: cmd, Logs: &Buffer{}, Done: make(chan struct{})}
	cmd.Stderr = pw
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { cmd.Wait(); pw.Close(); close(p.Done) }()
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("daemon log:\n%s", p.Logs.String())
		}
	})
	var mu sync.Mutex
	addrs := map[string]string{}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			var l struct {
				Msg, Component, Addr, Level string
				TLS                         any
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				switch {
				// The plain-text listeners; TLS ones say tls="tls" or "mtls …".
				case l.Msg == "listening" && (l.TLS == nil || l.TLS == false):
					mu.Lock()
					addrs[l.Component] = l.Addr
					mu.Unlock()
				case l.Msg == "ready" && !sent:
					sent = true
					close(ready)
				case opts.Echo != nil && (l.Level == "ERROR" || l.Level == "WARN"):
					fmt.Fprintf(opts.Echo, "radbridge child: %s\n", sc.Text())
				}
			}
			p.Logs.Write(append(sc.Bytes(), '\n'))
		}
		io.Copy(io.Discard, pr) // a line too long for the scanner: keep the child writing
	}()
	deadline := time.Now().Add(opts.ReadyTimeout)
	// Every listener is logged before "ready" (whatever their order).
	select {
	case <-ready:
	case <-p.Done:
		tb.Fatalf("daemon exited:\n%s", p.Logs.String())
	case <-time.After(opts.ReadyTimeout):
		tb.Fatalf("daemon not ready within %v:\n%s", opts.ReadyTimeout, p.Logs.String())
	}
	mu.Lock()
	p.GRPC, p.HTTP, p.MLLP, p.DICOM = addrs["grpc"], addrs["http"], addrs["hl7"], addrs["dicom"]
	mu.Unlock()
	if p.HTTP != "" && !Poll(time.Until(deadline), func() bool { return Ready("http://" + p.HTTP) }) {
		tb.Fatalf("not ready:\n%s", p.Logs.String())
	}
	return p
}

// Kill kills the process with SIGKILL and waits until it has exited.
func (p *Process) Kill() {
	p.Cmd.Process.Kill()
	<-p.Done
}

// Stop sends SIGTERM and waits for the exit, at most 15 s, then kills the
// process. Only the first call acts.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.Done:
		case <-time.After(15 * time.Second):
			p.Kill()
		}
	})
}
