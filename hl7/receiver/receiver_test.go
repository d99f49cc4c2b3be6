package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/hl7"
	"radbridge/hl7/mllp"
	"radbridge/internal/testkit"
)

// fakeHandler records committed control IDs and can fail or block.
type fakeHandler struct {
	mu      sync.Mutex
	got     []string
	fail    func(m *hl7.Message) error
	release chan struct{} // if non-nil, HandleHL7 waits for it
	entered chan struct{}
}

func (h *fakeHandler) HandleHL7(ctx context.Context, m *hl7.Message, raw []byte) error {
	if h.entered != nil {
		h.entered <- struct{}{}
	}
	if h.release != nil {
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if h.fail != nil {
		if err := h.fail(m); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, m.ControlID())
	return nil
}

func (h *fakeHandler) committed() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

type testServer struct {
	srv  *Server
	addr string
	done chan error
	stop context.CancelFunc
}

func start(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.Handler == nil {
		cfg.Handler = &fakeHandler{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: srv, addr: ln.Addr().String(), done: make(chan error, 1), stop: cancel}
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return ts
}

type client struct {
	t *testing.T
	c net.Conn
	r *mllp.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: c, r: mllp.NewReader(c, 1<<20)}
}

func (c *client) send(msg []byte) {
	c.t.Helper()
	if err := mllp.WriteMessage(c.c, msg); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) ack() *hl7.Message {
	c.t.Helper()
	b, err := c.r.ReadMessage()
	if err != nil {
		c.t.Fatalf("read ACK: %v", err)
	}
	m, err := hl7.Parse(b)
	if err != nil {
		c.t.Fatalf("parse ACK %q: %v", b, err)
	}
	return m
}

// ackSummary is what a sender checks in an ACK.
type ackSummary struct {
	Code, MSA2, ErrCode, ErrLoc string
}

func summarize(m *hl7.Message) ackSummary {
	return ackSummary{Code: m.Get("MSA-1"), MSA2: m.Get("MSA-2"), ErrCode: m.Get("ERR-3-1"), ErrLoc: m.Get("ERR-2")}
}

func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAcceptsTestdata(t *testing.T) {
	h := &fakeHandler{}
	ts := start(t, Config{Handler: h})
	c := dial(t, ts.addr)
	tests := []struct {
		file string
		want ackSummary
	}{
		{"orm_o01.hl7", ackSummary{Code: "AA", MSA2: "ORM000123"}},
		{"omi_o23.hl7", ackSummary{Code: "CA", MSA2: "OMI000042"}}, // MSH-15 AL: enhanced mode
		{"oru_r01.hl7", ackSummary{Code: "AA", MSA2: "ORU000901"}},
		{"oru_r01_latin1.hl7", ackSummary{Code: "AA", MSA2: "ORU000777"}},
		{"orm_o01_plain.hl7", ackSummary{Code: "AA", MSA2: "ORM000555"}},
	}
	for _, tt := range tests {
		c.send(testdata(t, tt.file))
		ack := c.ack()
		if diff := cmp.Diff(summarize(ack), tt.want); diff != "" {
			t.Errorf("%s: ACK (-got +want):\n%s", tt.file, diff)
		}
		if code, trig, _ := ack.MessageType(); code != "ACK" || trig == "" {
			t.Errorf("%s: ACK MSH-9 %s^%s", tt.file, code, trig)
		}
		if ack.SendingApplication() != "RADBRIDGE" || ack.ReceivingApplication() != "RADRIS" {
			t.Errorf("%s: ACK applications not swapped: %q -> %q", tt.file, ack.SendingApplication(), ack.ReceivingApplication())
		}
	}
	if diff := cmp.Diff(h.committed(), []string{"ORM000123", "OMI000042", "ORU000901", "ORU000777", "ORM000555"}); diff != "" {
		t.Errorf("committed (-got +want):\n%s", diff)
	}
	st := ts.srv.Stats()
	if st.Messages != 5 || st.Acks["AA"] != 4 || st.Acks["CA"] != 1 {
		t.Errorf("stats: %+v", st)
	}
}

const oruHeader = "MSH|^~\\&|RIS|FAC|RB|IMG|20250101||ORU^R01|%s|P|2.5.1%s\r"

func oru(ctl, mshTail, body string) []byte {
	return []byte(fmt.Sprintf(oruHeader, ctl, mshTail) + body)
}

const goodORUBody = "PID|1||P1^^^F^MR\rOBR|1|PL|FL|CT1^CT^L|||||||||||||||||||||F\r"

func TestAnswers(t *testing.T) {
	storeDown := errors.New("store unavailable")
	h := &fakeHandler{fail: func(m *hl7.Message) error {
		switch m.ControlID() {
		case "FAIL":
			return fmt.Errorf("append: %w", storeDown)
		case "DUPKEY":
			return &hl7.Error{Code: hl7.CodeDuplicateKey, Severity: hl7.SeverityError, Location: hl7.Location{Segment: "OBR", Sequence: 1, Field: 3}, Text: "conflict"}
		}
		return nil
	}}
	ts := start(t, Config{Handler: h})
	c := dial(t, ts.addr)
	tests := []struct {
		name string
		in   []byte
		want ackSummary
	}{
		{"ok", oru("C1", "", goodORUBody), ackSummary{"AA", "C1", "", ""}},
		{"missing PID-3", oru("C2", "", "PID|1||\rOBR|1|PL|FL|CT1|||||||||||||||||||||F\r"), ackSummary{"AE", "C2", "101", "PID^1^3"}},
		{"missing PID", oru("C3", "", "OBR|1|PL|FL|CT1|||||||||||||||||||||F\r"), ackSummary{"AE", "C3", "100", "PID^1"}},
		{"missing OBR-25 in 2nd OBR", oru("C4", "", goodORUBody+"OBR|2|PL|FL|CT1\r"), ackSummary{"AE", "C4", "101", "OBR^2^25"}},
		{"missing OBR-4", oru("C5", "", "PID|1||P1\rOBR|1|PL|FL||||||||||||||||||||||F\r"), ackSummary{"AE", "C5", "101", "OBR^1^4"}},
		{"missing ORC-1", []byte("MSH|^~\\&|R|F|B|I|2025||ORM^O01|C6|P|2.3\rPID|1||P1\rORC||PL\rOBR|1|PL||X^Y\r"), ackSummary{"AE", "C6", "101", "ORC^1^1"}},
		{"unsupported type", []byte("MSH|^~\\&|R|F|B|I|2025||ADT^A01|C7|P|2.5\rPID|1||P1\r"), ackSummary{"AR", "C7", "200", "MSH^1^9^1^1"}},
		{"unsupported trigger", []byte("MSH|^~\\&|R|F|B|I|2025||ORU^R03|C8|P|2.5\rPID|1||P1\r"), ackSummary{"AR", "C8", "201", "MSH^1^9^1^2"}},
		{"unsupported version", []byte("MSH|^~\\&|R|F|B|I|2025||ORU^R01|C9|P|3.0\r"), ackSummary{"AR", "C9", "203", "MSH^1^12"}},
		{"missing MSH-10", oru("", "", goodORUBody), ackSummary{"AE", "", "101", "MSH^1^10"}},
		{"missing MSH-9", []byte("MSH|^~\\&|R|F|B|I|2025|||C10|P|2.5\r"), ackSummary{"AE", "C10", "101", "MSH^1^9"}},
		{"no MSH", []byte("PID|1||P1\r"), ackSummary{"AR", "", "100", "MSH^1"}},
		{"garbage", []byte("\x00\x01hello"), ackSummary{"AR", "", "100", "MSH^1"}},
		{"bad encoding chars", []byte("MSH|^^\\&|R\r"), ackSummary{"AR", "", "102", "MSH^1^2"}},
		{"bad segment id", oru("C11", "", "PID|1||P1\rob|x\r"), ackSummary{"AR", "C11", "100", "^3"}},
		{"unknown charset", oru("C12", "||||||ZZ-NOPE", goodORUBody), ackSummary{"AE", "C12", "102", "MSH^1^18"}},
		{"handler fails", oru("FAIL", "", goodORUBody), ackSummary{"AE", "FAIL", "207", ""}},
		{"handler fails, enhanced", oru("FAIL", "|||AL|NE", goodORUBody), ackSummary{"CE", "FAIL", "207", ""}},
		{"handler hl7 error", oru("DUPKEY", "", goodORUBody), ackSummary{"AE", "DUPKEY", "205", "OBR^1^3"}},
		{"enhanced ok", oru("C13", "|||AL|NE", goodORUBody), ackSummary{"CA", "C13", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.send(tt.in)
			if diff := cmp.Diff(summarize(c.ack()), tt.want); diff != "" {
				t.Errorf("ACK (-got +want):\n%s", diff)
			}
		})
	}
	if diff := cmp.Diff(h.committed(), []string{"C1", "C13"}); diff != "" {
		t.Errorf("committed (-got +want):\n%s", diff)
	}
	// Counted by a bounded type (supported, other, unparsed) and the code.
	want := map[TypeAck]int64{
		{"ORU^R01", "AA"}: 1, {"ORU^R01", "AE"}: 8, {"ORU^R01", "AR"}: 2, {"ORU^R01", "CE"}: 1, {"ORU^R01", "CA"}: 1,
		{"ORM^O01", "AE"}: 1, {"other", "AR"}: 2, {"other", "AE"}: 1, {"unparsed", "AR"}: 3,
	}
	if diff := cmp.Diff(ts.srv.Stats().ByType, want); diff != "" {
		t.Errorf("ByType (-got +want):\n%s", diff)
	}
}

func TestEnhancedModeNoAck(t *testing.T) {
	ts := start(t, Config{})
	c := dial(t, ts.addr)
	// MSH-15 ER: no commit ACK on success; the next message is still answered.
	c.send(oru("Q1", "|||ER|NE", goodORUBody))
	c.send(oru("Q2", "", goodORUBody))
	if got := summarize(c.ack()); got.MSA2 != "Q2" {
		t.Errorf("got ACK for %q, want Q2 (Q1 asked for none)", got.MSA2)
	}
	if st := ts.srv.Stats(); st.NoAck != 1 {
		t.Errorf("NoAck: got %d, want 1", st.NoAck)
	}
}

func TestPipelinedInOrder(t *testing.T) {
	h := &fakeHandler{}
	ts := start(t, Config{Handler: h})
	c := dial(t, ts.addr)
	var batch bytes.Buffer
	var want []string
	for i := range 50 {
		id := fmt.Sprintf("P%03d", i)
		want = append(want, id)
		if i%7 == 3 {
			batch.WriteString("noise\r\n") // garbage between frames
		}
		mllp.WriteMessage(&batch, oru(id, "", goodORUBody))
	}
	if _, err := c.c.Write(batch.Bytes()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 50 {
		a := c.ack()
		if a.Get("MSA-1") != "AA" {
			t.Fatalf("ACK %q", a.Get("MSA-1"))
		}
		got = append(got, a.Get("MSA-2"))
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("ACK order (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(h.committed(), want); diff != "" {
		t.Errorf("commit order (-got +want):\n%s", diff)
	}
	if st := ts.srv.Stats(); st.DiscardedBytes != 7*7 {
		t.Errorf("discarded: got %d, want %d", st.DiscardedBytes, 7*7)
	}
}

func TestOversizedFrame(t *testing.T) {
	ts := start(t, Config{MaxMessageSize: 512})
	c := dial(t, ts.addr)
	big := oru("BIG1", "", goodORUBody+strings.Repeat("NTE|1||"+strings.Repeat("x", 100)+"\r", 10))
	c.send(big)
	got := summarize(c.ack())
	if diff := cmp.Diff(got, ackSummary{"AR", "BIG1", "207", ""}); diff != "" {
		t.Errorf("ACK (-got +want):\n%s", diff)
	}
	if _, err := c.r.ReadMessage(); !errors.Is(err, io.EOF) {
		t.Errorf("after oversized frame: got %v, want the connection closed (EOF)", err)
	}
	if st := ts.srv.Stats(); st.OversizedFrames != 1 {
		t.Errorf("OversizedFrames: %d", st.OversizedFrames)
	}
}

func TestOversizedFrameStillStreaming(t *testing.T) {
	ts := start(t, Config{MaxMessageSize: 1024})
	c := dial(t, ts.addr)
	// The sender is still writing an 8 MiB frame when the receiver gives
	// up; it must still get the AR rather than a reset.
	go func() {
		frame := append([]byte("\x0b"), oru("BIG2", "", goodORUBody)...)
		frame = append(frame, bytes.Repeat([]byte("NTE|1||xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r"), 200000)...)
		frame = append(frame, 0x1c, 0x0d)
		c.c.Write(frame)
	}()
	if got := summarize(c.ack()); got.Code != "AR" || got.MSA2 != "BIG2" {
		t.Errorf("got %+v, want AR for BIG2", got)
	}
}

func TestInvalidFrame(t *testing.T) {
	ts := start(t, Config{})
	c := dial(t, ts.addr)
	c.c.Write([]byte("\x0bMSH|^~\\&|x\x1cX"))
	if got := summarize(c.ack()); got.Code != "AR" || got.ErrCode != "100" {
		t.Errorf("invalid frame: got %+v", got)
	}
	c.send(oru("AFTER", "", goodORUBody))
	if got := summarize(c.ack()); got.Code != "AA" || got.MSA2 != "AFTER" {
		t.Errorf("after invalid frame: got %+v", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := start(t, Config{IdleTimeout: 100 * time.Millisecond})
	c := dial(t, ts.addr)
	c.send(oru("I1", "", goodORUBody))
	c.ack()
	begin := time.Now()
	if _, err := c.r.ReadMessage(); !errors.Is(err, io.EOF) {
		t.Errorf("got %v, want EOF after idle timeout", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("closed after %v", d)
	}
}

func TestReadTimeoutMidFrame(t *testing.T) {
	ts := start(t, Config{ReadTimeout: 100 * time.Millisecond, IdleTimeout: time.Minute})
	c := dial(t, ts.addr)
	c.c.Write([]byte("\x0bMSH|^~\\&|half"))
	if _, err := c.r.ReadMessage(); !errors.Is(err, io.EOF) {
		t.Errorf("got %v, want EOF after read timeout", err)
	}
}

func TestConnectionLimit(t *testing.T) {
	ts := start(t, Config{MaxConnections: 1})
	c1 := dial(t, ts.addr)
	c1.send(oru("L1", "", goodORUBody)) // c1 is registered once answered
	c1.ack()
	c2 := dial(t, ts.addr)
	if _, err := c2.r.ReadMessage(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("second connection: got %v, want it closed", err)
	}
	c1.send(oru("L2", "", goodORUBody))
	if got := summarize(c1.ack()); got.MSA2 != "L2" {
		t.Errorf("first connection after limit: %+v", got)
	}
	if st := ts.srv.Stats(); st.RejectedConnections != 1 || st.ActiveConnections != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// TestRestartingFrameTimesOut: a slow-loris peer that restarts its frame
// (a new start block) before each read timeout is still closed once the
// read timeout of its first start block has passed.
func TestRestartingFrameTimesOut(t *testing.T) {
	ts := start(t, Config{ReadTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute})
	c := dial(t, ts.addr)
	closed := make(chan error, 1)
	go func() {
		_, err := c.r.ReadMessage()
		closed <- err
	}()
	// Restart the frame every 100 ms for up to 10 s: without the bound the
	// connection would stay open all that time.
	for i := 0; i < 100; i++ {
		select {
		case err := <-closed:
			if !errors.Is(err, io.EOF) && !isReset(err) {
				t.Errorf("got %v, want the connection closed", err)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		c.c.Write([]byte("\x0bMSH|"))
	}
	t.Fatal("connection restarting its frame was not closed")
}

// TestConnectionLimitPerHost: beyond MaxConnectionsPerHost from one IP
// address a new connection is closed at once, while another host still
// gets served.
func TestConnectionLimitPerHost(t *testing.T) {
	ts := start(t, Config{MaxConnections: 4, MaxConnectionsPerHost: 1})
	_, port, _ := net.SplitHostPort(ts.addr)
	from := func(ip string) *client {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		nc, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		return &client{t: t, c: nc, r: mllp.NewReader(nc, 1<<20)}
	}
	a1 := from("127.0.0.2")
	a1.send(oru("H1", "", goodORUBody))
	a1.ack()
	a2 := from("127.0.0.2")
	if _, err := a2.r.ReadMessage(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("second connection from the same host: got %v, want it closed", err)
	}
	b := from("127.0.0.1")
	b.send(oru("H2", "", goodORUBody))
	if got := summarize(b.ack()); got.Code != "AA" || got.MSA2 != "H2" {
		t.Errorf("other host: %+v, want AA H2", got)
	}
	if st := ts.srv.Stats(); st.RejectedConnections != 1 || st.ActiveConnections != 2 {
		t.Errorf("stats: %+v", st)
	}
}

// TestConnectionFloodLogsBounded: a flood of connections beyond the limit
// writes at most 10 lines a second about it, and the next line says how
// many were left out.
func TestConnectionFloodLogsBounded(t *testing.T) {
	var buf testkit.Buffer
	ts := start(t, Config{MaxConnections: 1, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	held := dial(t, ts.addr)
	held.send(oru("F1", "", goodORUBody))
	held.ack()
	begin := time.Now()
	const flood = 200
	for i := 0; i < flood; i++ {
		c := dial(t, ts.addr)
		if _, err := c.r.ReadMessage(); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("connection %d over the limit: %v, want closed", i, err)
		}
		c.c.Close()
	}
	seconds := int(time.Since(begin)/time.Second) + 1
	lines := strings.Count(buf.String(), "connection limit reached")
	if st := ts.srv.Stats(); st.RejectedConnections != flood {
		t.Errorf("rejected %d, want %d", st.RejectedConnections, flood)
	}
	if max := 10 * (seconds + 1); lines > max || lines == 0 {
		t.Errorf("%d log lines for %d rejected connections in %d s, want 1 to %d", lines, flood, seconds, max)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestShutdownDrainsInFlight(t *testing.T) {
	h := &fakeHandler{release: make(chan struct{}), entered: make(chan struct{}, 1)}
	ts := start(t, Config{Handler: h, DrainTimeout: 5 * time.Second})
	busy := dial(t, ts.addr)
	idle := dial(t, ts.addr)
	busy.send(oru("D1", "", goodORUBody))
	<-h.entered
	ts.stop()
	// The idle connection is closed promptly.
	if _, err := idle.r.ReadMessage(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("idle connection: got %v, want closed", err)
	}
	// New connections are refused once the listener is closed.
	select {
	case err := <-ts.done:
		t.Fatalf("Serve returned %v before the in-flight message finished", err)
	default:
	}
	close(h.release)
	if got := summarize(busy.ack()); got.Code != "AA" || got.MSA2 != "D1" {
		t.Errorf("in-flight message: got %+v, want AA for D1", got)
	}
	if _, err := busy.r.ReadMessage(); !errors.Is(err, io.EOF) {
		t.Errorf("busy connection after drain: got %v, want EOF", err)
	}
	select {
	case err := <-ts.done:
		ts.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after drain")
	}
}

func TestShutdownDrainDeadline(t *testing.T) {
	h := &fakeHandler{release: make(chan struct{}), entered: make(chan struct{}, 1)}
	ts := start(t, Config{Handler: h, DrainTimeout: 100 * time.Millisecond})
	c := dial(t, ts.addr)
	c.send(oru("D2", "", goodORUBody))
	<-h.entered
	ts.stop()
	select {
	case err := <-ts.done:
		ts.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the drain deadline")
	}
	if len(h.committed()) != 0 {
		t.Error("handler committed after its context was cancelled")
	}
}

func TestLogsNoPatientData(t *testing.T) {
	var buf testkit.Buffer
	h := &fakeHandler{fail: func(*hl7.Message) error { return errors.New("boom") }}
	ts := start(t, Config{Handler: h, Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	c := dial(t, ts.addr)
	c.send(testdata(t, "orm_o01.hl7"))
	c.ack()
	c.send(oru("X2", "", "PID|1||\rOBR|1|PL|FL|CT1\r"))
	c.ack()
	c.c.Close()
	ts.stop()
	<-ts.done
	ts.done <- nil
	out := buf.String()
	for _, secret := range []string{"TESTPATIENT", "PAT4711", "19700101"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"component=hl7", "control_id=ORM000123", "remote=", "hl7_code=207", "location=PID[1]-3"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestPythonMLLPSend sends the test messages with python-hl7's mllp_send,
// a real peer, and checks its ACKs.
func TestPythonMLLPSend(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	h := &fakeHandler{}
	ts := start(t, Config{Handler: h})
	_, port, _ := net.SplitHostPort(ts.addr)
	files := []struct{ file, ctl, code string }{
		{"orm_o01.hl7", "ORM000123", "AA"},
		{"omi_o23.hl7", "OMI000042", "CA"},
		{"oru_r01.hl7", "ORU000901", "AA"},
		{"oru_r01_latin1.hl7", "ORU000777", "AA"},
	}
	for _, f := range files {
		t.Run(f.file, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "--loose", "-f", filepath.Join("..", "testdata", f.file), "-p", port, "127.0.0.1").CombinedOutput()
			if err != nil {
				t.Fatalf("mllp_send: %v\n%s", err, out)
			}
			raw := bytes.Trim(out, "\x0b\x1c\r\n")
			ack, err := hl7.Parse(raw)
			if err != nil {
				t.Fatalf("parse ACK %q: %v", out, err)
			}
			if got, want := []string{ack.Get("MSA-1"), ack.Get("MSA-2")}, []string{f.code, f.ctl}; !cmp.Equal(got, want) {
				t.Errorf("ACK MSA-1, MSA-2: got %v, want %v\n%q", got, want, out)
			}
		})
	}
	if got := len(h.committed()); got != len(files) {
		t.Errorf("committed %d messages, want %d", got, len(files))
	}
}

// TestOrderGroupLimit: an order with MaxOrderGroups ORC/OBR groups is
// committed; one more is answered AR 207 at the first group beyond the
// limit, naming it, and not handed over.
func TestOrderGroupLimit(t *testing.T) {
	h := &fakeHandler{}
	ts := start(t, Config{Handler: h, MaxOrderGroups: 3})
	order := func(ctl string, groups int) []byte {
		b := "MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310083000||ORM^O01|" + ctl + "|P|2.3\rPID|1||P1\r"
		for i := 1; i <= groups; i++ {
			b += fmt.Sprintf("ORC|NW|P%d\rOBR|%d|P%d||71250^CT\r", i, i, i)
		}
		return []byte(b)
	}
	c := dial(t, ts.addr)
	c.send(order("AT-LIMIT", 3))
	if got := summarize(c.ack()); got.Code != "AA" {
		t.Errorf("3 groups with a limit of 3: %+v, want AA", got)
	}
	c.send(order("OVER", 4))
	ack := c.ack()
	got := summarize(ack)
	if want := (ackSummary{Code: "AR", MSA2: "OVER", ErrCode: "207", ErrLoc: "ORC^4"}); got != want {
		t.Errorf("4 groups with a limit of 3: %+v, want %+v", got, want)
	}
	if text := ack.Get("ERR-8"); text != "message has 4 order groups, more than the limit of 3" {
		t.Errorf("ERR-8 %q", text)
	}
	if got := h.committed(); len(got) != 1 || got[0] != "AT-LIMIT" {
		t.Errorf("committed %v, want only AT-LIMIT", got)
	}
}
