package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/scu"
	"radbridge/hl7/mllp"
	"radbridge/internal/config"
	"radbridge/internal/tlsconf"
)

// Client commands: echo and store (DICOM SCU, package scu) and send-hl7
// (MLLP). They print results on stdout, progress and errors on stderr, and
// exit 1 when anything failed, 2 on bad usage.

// dicomFlags are the flags shared by echo and store.
type dicomFlags struct {
	addr, aet, aec *string
	timeout        *time.Duration
	tls            tlsClientFlags
}

func newDICOMFlags(fs *flag.FlagSet) dicomFlags {
	return dicomFlags{
		addr:    fs.String("addr", "localhost:11112", "DICOM address of the peer (host:port)"),
		aet:     fs.String("aet", scu.DefaultCallingAE, "our (calling) AE title"),
		aec:     fs.String("aec", scu.DefaultCalledAE, "the peer's (called) AE title"),
		timeout: fs.Duration("timeout", 30*time.Second, "bound on connecting and on every read and write"),
		tls:     newTLSClientFlags(fs),
	}
}

func (f dicomFlags) config(ctxs []scu.Context, tc *tls.Config) scu.Config {
	return scu.Config{CallingAE: *f.aet, CalledAE: *f.aec, Contexts: ctxs, Timeout: *f.timeout, TLS: tc}
}

// parseFlags parses a client command's flags; a mistake is said in one
// line on the flag set's output (config.ParseFlags).
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	w := fs.Output()
	if err := config.ParseFlags(fs, args, w); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		fmt.Fprintf(w, "%s: %v\n", fs.Name(), err)
		return 2, false
	}
	return 0, true
}

// echoCmd verifies a DICOM peer with C-ECHO.
func echoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	df := newDICOMFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	tc, err := df.tls.config()
	if err != nil {
		fmt.Fprintf(stderr, "radbridge echo: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	c, err := scu.Dial(ctx, *df.addr, df.config(nil, tc))
	if err == nil {
		if err = c.Echo(ctx); err != nil {
			c.Abort()
		}
	}
	if err != nil {
		if msg := wrongPort(ctx, "radbridge echo", *df.addr, protoDICOM, tc != nil); msg != "" {
			fmt.Fprintln(stderr, msg)
			return 1
		}
		fmt.Fprintf(stderr, "radbridge echo: %v\n", err)
		return 1
	}
	elapsed := time.Since(start)
	if err := c.Close(); err != nil {
		fmt.Fprintf(stderr, "radbridge echo: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "C-ECHO to %s at %s succeeded in %dms\n", *df.aec, *df.addr, elapsed.Milliseconds())
	return 0
}

// storeItem is one file to send.
type storeItem struct {
	path string
	meta scu.FileMeta
	size int64
}

// collectFiles walks the arguments (files or directories, recursively) and
// reads each file's meta; files that are not DICOM are counted as skipped.
func collectFiles(args []string, stderr io.Writer) (items []storeItem, skipped, failed int) {
	var paths []string
	for _, a := range args {
		err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				paths = append(paths, p)
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(stderr, "radbridge store: %v\n", err)
			failed++
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		m, err := scu.ReadFileMeta(p)
		switch {
		case errors.Is(err, scu.ErrNotDICOM):
			skipped++
			continue
		case err != nil:
			fmt.Fprintf(stderr, "radbridge store: %v\n", err)
			failed++
			continue
		}
		var size int64
		if fi, err := os.Stat(p); err == nil {
			size = fi.Size() - m.Offset
		}
		items = append(items, storeItem{path: p, meta: m, size: size})
	}
	return items, skipped, failed
}

// storeContexts proposes each SOP class with the transfer syntaxes of its
// files plus explicit and implicit VR little endian.
func storeContexts(items []storeItem) []scu.Context {
	var out []scu.Context
	index := map[string]int{}
	for _, it := range items {
		i, ok := index[it.meta.SOPClassUID]
		if !ok {
			i = len(out)
			index[it.meta.SOPClassUID] = i
			out = append(out, scu.Context{AbstractSyntax: it.meta.SOPClassUID})
		}
		out[i].TransferSyntaxes = append(out[i].TransferSyntaxes, it.meta.TransferSyntaxUID)
	}
	for i := range out {
		out[i].TransferSyntaxes = append(out[i].TransferSyntaxes, dataset.ExplicitVRLittleEndian, dataset.ImplicitVRLittleEndian)
	}
	return out
}

// progress draws a one-line bar on a terminal, or nothing.
type progress struct {
	w     io.Writer
	tty   bool
	total int
	drawn bool
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (p *progress) draw(done int) {
	if !p.tty || p.total == 0 {
		return
	}
	const width = 30
	n := done * width / p.total
	bar := strings.Repeat("=", n)
	if n < width {
		bar += ">" + strings.Repeat(" ", width-n-1)
	}
	fmt.Fprintf(p.w, "\r[%s] %d/%d", bar, done, p.total)
	p.drawn = true
}

// line prints a message on its own line, above the bar.
func (p *progress) line(format string, args ...any) {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

// storeCmd sends DICOM files with C-STORE over one association.
func storeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge store", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: radbridge store [flags] FILE|DIR...")
		fs.PrintDefaults()
	}
	df := newDICOMFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	tc, err := df.tls.config()
	if err != nil {
		fmt.Fprintf(stderr, "radbridge store: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	items, skipped, failed := collectFiles(fs.Args(), stderr)
	stored := 0
	var bytesSent int64
	p := &progress{w: stderr, tty: isTerminal(stderr), total: len(items)}
	var c *scu.Client
	defer func() {
		if c != nil {
			c.Abort()
		}
	}()
	for i, it := range items {
		if ctx.Err() != nil {
			failed += len(items) - i
			break
		}
		if c == nil {
			var err error
			c, err = scu.Dial(ctx, *df.addr, df.config(storeContexts(items[i:]), tc))
			if err != nil {
				if msg := wrongPort(ctx, "radbridge store", *df.addr, protoDICOM, tc != nil); msg != "" {
					err = errors.New(strings.TrimPrefix(msg, "radbridge store: "))
				}
				p.line("radbridge store: %v", err)
				failed += len(items) - i
				break
			}
		}
		if !c.Accepted(it.meta.SOPClassUID, it.meta.TransferSyntaxUID) {
			failed++
			p.line("failed %s: %s in %s not accepted by %s", it.path, it.meta.SOPClassUID, it.meta.TransferSyntaxUID, *df.aec)
			p.draw(i + 1)
			continue
		}
		_, st, err := c.StoreFile(ctx, it.path)
		var se *scu.StatusError
		switch {
		case err == nil:
			stored++
			bytesSent += it.size
			if !p.tty {
				p.line("stored %s (status %v)", it.path, st)
			}
		case errors.As(err, &se):
			failed++
			p.line("failed %v", err)
		default:
			// The association is gone; the next file opens a new one.
			failed++
			p.line("failed %v", err)
			c.Abort()
			c = nil
		}
		p.draw(i + 1)
	}
	if c != nil {
		if err := c.Close(); err != nil {
			p.line("radbridge store: %v", err)
		}
		c = nil
	}
	p.finish()
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "stored %d, failed %d, skipped %d not DICOM, %.1f MB in %.1fs\n", stored, failed, skipped, float64(bytesSent)/1e6, elapsed.Seconds())
	if failed > 0 {
		return 1
	}
	return 0
}

// hl7Message reads one HL7 message from a file: segments separated by
// \r, \n or \r\n, sent with \r (HL7 v2.5.1 section 2.5).
func hl7Message(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\r"))
	b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r"))
	b = bytes.Trim(b, "\r \t\ufeff")
	if !bytes.HasPrefix(b, []byte("MSH")) {
		return nil, fmt.Errorf("%s: no MSH segment at the start", path)
	}
	return append(b, '\r'), nil
}

// ackSegments returns the MSA and ERR segments of an ACK and MSA-1.
func ackSegments(ack []byte) (code string, lines []string) {
	for _, seg := range strings.FieldsFunc(string(ack), func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.HasPrefix(seg, "MSA") || strings.HasPrefix(seg, "ERR") {
			lines = append(lines, seg)
		}
		if strings.HasPrefix(seg, "MSA") && len(seg) > 4 {
			code, _, _ = strings.Cut(seg[4:], seg[3:4])
		}
	}
	return code, lines
}

// sendHL7 sends HL7 files over MLLP, one message per file, and prints each
// ACK's MSA (and ERR) segments.
func sendHL7(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge send-hl7", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: radbridge send-hl7 [flags] FILE...")
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "localhost:2575", "MLLP address of the receiver (host:port)")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on connecting and on waiting for each ACK")
	tf := newTLSClientFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	tc, err := tf.config()
	if err != nil {
		fmt.Fprintf(stderr, "radbridge send-hl7: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var conn net.Conn
	var r *mllp.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	code := 0
	for _, path := range fs.Args() {
		msg, err := hl7Message(path)
		if err != nil {
			fmt.Fprintf(stderr, "radbridge send-hl7: %v\n", err)
			code = 1
			continue
		}
		if conn == nil {
			d := net.Dialer{Timeout: *timeout}
			conn, err = d.DialContext(ctx, "tcp", *addr)
			if err == nil && tc != nil {
				conn, err = tlsconf.ClientHandshake(ctx, conn, tc, *addr, *timeout)
			}
			if err != nil {
				if msg := wrongPort(ctx, "radbridge send-hl7", *addr, protoMLLP, tc != nil); msg != "" {
					fmt.Fprintln(stderr, msg)
					return 1
				}
				fmt.Fprintf(stderr, "radbridge send-hl7: %v\n", err)
				return 1
			}
			c := conn
			context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
			r = mllp.NewReader(conn, 1<<20)
		}
		_ = conn.SetDeadline(time.Now().Add(*timeout))
		var ack []byte
		if err = mllp.WriteMessage(conn, msg); err == nil {
			ack, err = r.ReadMessage()
		}
		if err != nil {
			if msg := wrongPort(ctx, "radbridge send-hl7", *addr, protoMLLP, tc != nil); msg != "" {
				fmt.Fprintln(stderr, msg)
				return 1
			}
			fmt.Fprintf(stderr, "radbridge send-hl7: %s: no ACK from %s: %v\n", path, *addr, err)
			code = 1
			conn.Close()
			conn = nil
			continue
		}
		ackCode, lines := ackSegments(ack)
		for _, l := range lines {
			fmt.Fprintf(stdout, "%s: %s\n", path, l)
		}
		if ackCode != "AA" && ackCode != "CA" {
			if len(lines) == 0 {
				fmt.Fprintf(stderr, "radbridge send-hl7: %s: answer without MSA segment\n", path)
			}
			code = 1
		}
	}
	return code
}
