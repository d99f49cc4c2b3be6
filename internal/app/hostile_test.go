package app_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"radbridge/dicom/ul"
	"radbridge/hl7"
	"radbridge/hl7/mllp"
	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
)

// hostileFlags start a daemon with short deadlines and small limits, so
// that every hostile peer is answered within seconds. Attackers connect
// from their own loopback addresses (127.0.0.x), well-behaved peers from
// 127.0.0.1: the per-host limits keep the attackers' slots apart.
var hostileFlags = []string{
	"--mllp-read-timeout", "1s", "--mllp-idle-timeout", "3s", "--mllp-max-message", "4096",
	"--mllp-max-connections", "24", "--mllp-max-connections-per-host", "4",
	"--dicom-idle-timeout", "3s", "--dicom-artim-timeout", "2s", "--dicom-max-pdu", "16384",
	"--dicom-max-associations", "24", "--dicom-max-associations-per-host", "4",
	"--http-read-header-timeout", "2s",
}

// hostileDeadline bounds every attacker's reads: a peer left hanging this
// long means the daemon gave no answer.
const hostileDeadline = 20 * time.Second

// dialFrom opens a TCP connection to addr from the loopback address ip.
func dialFrom(ip, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(hostileDeadline))
	return c, nil
}

// readToClose reads what the daemon sends until it closes the connection;
// an error if the connection is still open at the deadline.
func readToClose(c net.Conn) ([]byte, error) {
	b, err := io.ReadAll(c)
	if err != nil && !isConnReset(err) {
		return b, fmt.Errorf("connection not closed by the daemon: %w (read %q)", err, b)
	}
	return b, nil
}

func isConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// associateRQ is a Verification A-ASSOCIATE-RQ.
func associateRQ(called string) []byte {
	b, err := ul.AppendPDU(nil, &ul.AssociateRQ{ProtocolVersion: 1, CalledAE: called, CallingAE: "HOSTILE",
		ApplicationContext:   ul.ApplicationContextName,
		PresentationContexts: []ul.PresentationContextRQ{{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}}},
		UserInfo:             ul.UserInfo{MaxPDULength: 16384, ImplementationClassUID: "1.2.826.0.1.3680043.10.1447.99"}})
	if err != nil {
		panic(err)
	}
	return b
}

// readPDU reads one raw PDU (header and body).
func readPDU(c net.Conn) ([]byte, error) {
	hdr := make([]byte, 6)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, fmt.Errorf("read PDU header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[2:])
	if n > 1<<20 {
		return hdr, fmt.Errorf("PDU length %d", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, fmt.Errorf("read PDU body: %w", err)
	}
	return append(hdr, body...), nil
}

// A-ABORT and A-ASSOCIATE-RJ as PS3.8 sections 9.3.4 and 9.3.8 lay them out.
func abortPDU(source, reason byte) []byte { return []byte{7, 0, 0, 0, 0, 4, 0, 0, source, reason} }
func rejectPDU(result, source, reason byte) []byte {
	return []byte{3, 0, 0, 0, 0, 4, 0, result, source, reason}
}

// expectPDU reads one PDU and wants it equal to want; the caller closes
// (after A-ASSOCIATE-RJ and A-RELEASE-RP the requestor closes the
// transport, PS3.8 Sta13).
func expectPDU(c net.Conn, want []byte) error {
	got, err := readPDU(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("got PDU % x, want % x", got, want)
	}
	return nil
}

// expectPDUThenClose reads one PDU, wants it equal to want, and wants the
// daemon to close the connection after it.
func expectPDUThenClose(c net.Conn, want []byte) error {
	got, err := readPDU(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("got PDU % x, want % x", got, want)
	}
	if rest, err := readToClose(c); err != nil || len(rest) > 0 {
		return fmt.Errorf("after the PDU: %q %v, want the connection closed", rest, err)
	}
	return nil
}

// associate sends an A-ASSOCIATE-RQ from ip and wants an A-ASSOCIATE-AC.
func associate(ip, addr string) (net.Conn, error) {
	c, err := dialFrom(ip, addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(associateRQ("RADBRIDGE")); err != nil {
		c.Close()
		return nil, err
	}
	p, err := readPDU(c)
	if err != nil || p[0] != byte(ul.TypeAssociateAC) {
		c.Close()
		return nil, fmt.Errorf("A-ASSOCIATE-RQ answered % x %v, want A-ASSOCIATE-AC", p, err)
	}
	return c, nil
}

const hostileORU = "MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310101500||ORU^R01|%s|P|2.5.1\rPID|1||HOSTILE-P||DOE^JANE\rOBR|1|PLC9|FIL9|71250^CT CHEST^C4|||20260310090500|||||||||1234^REF^SAM||ACC9|RP9|SPS9||20260310113000||CT|F\rOBX|1|TX|RPT^Report^L|1|No findings.||||||F\r"

// mllpExchange sends one message on c and returns the ACK's MSA-1, ERR-3.
func mllpExchange(c net.Conn, msg string) (string, *hl7.Message, error) {
	if err := mllp.WriteMessage(c, []byte(msg)); err != nil {
		return "", nil, err
	}
	b, err := mllp.NewReader(c, 1<<20).ReadMessage()
	if err != nil {
		return "", nil, err
	}
	m, err := hl7.Parse(b)
	if err != nil {
		return "", nil, fmt.Errorf("ACK %q: %w", b, err)
	}
	return m.Get("MSA-1"), m, nil
}

// hostileAttacks are the bad peers, each a function returning what it got
// wrong. addr holds the daemon's fronts.
type hostileAddrs struct{ mllp, dicom, http, grpc string }

func hostileAttacks(a hostileAddrs) map[string]func() error {
	return map[string]func() error{
		// MLLP: a started frame trickling one byte per 200 ms is closed
		// once --mllp-read-timeout has passed since its start block.
		"mllp/slow-loris": func() error {
			c, err := dialFrom("127.0.0.11", a.mllp)
			if err != nil {
				return err
			}
			defer c.Close()
			c.Write([]byte{mllp.StartBlock})
			for i := 0; i < 100; i++ { // 20 s at most
				time.Sleep(200 * time.Millisecond) // the attacker's pace, not a wait
				if _, err := c.Write([]byte("M")); err != nil {
					return nil // closed by the daemon
				}
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				var one [1]byte
				if _, err := c.Read(one[:]); err == io.EOF || isConnReset(err) {
					return nil
				}
			}
			return errors.New("slow-loris connection still open after 20 s")
		},
		// MLLP: a frame larger than --mllp-max-message gets AR with ERR-3
		// 207 addressed to its MSH-10, then the connection is closed.
		"mllp/oversized": func() error {
			c, err := dialFrom("127.0.0.12", a.mllp)
			if err != nil {
				return err
			}
			defer c.Close()
			big := fmt.Sprintf(hostileORU, "BIG-1") + "NTE|1||" + strings.Repeat("x", 8192) + "\r"
			code, ack, err := mllpExchange(c, big)
			if err != nil {
				return err
			}
			if code != "AR" || ack.Get("MSA-2") != "BIG-1" || ack.Get("ERR-3-1") != "207" || !strings.Contains(ack.Get("ERR-8"), "exceeds 4096 bytes") {
				return fmt.Errorf("oversized frame answered %q MSA-2 %q ERR-3 %q ERR-8 %q, want AR BIG-1 207 exceeds", code, ack.Get("MSA-2"), ack.Get("ERR-3-1"), ack.Get("ERR-8"))
			}
			if rest, err := readToClose(c); err != nil || len(rest) > 0 {
				return fmt.Errorf("after the AR: %q %v, want close", rest, err)
			}
			return nil
		},
		// MLLP: bytes outside any frame get no answer (there is no message
		// to acknowledge) and do not keep the connection open: it is
		// closed after --mllp-idle-timeout.
		"mllp/random-bytes-outside-frames": func() error {
			c, err := dialFrom("127.0.0.13", a.mllp)
			if err != nil {
				return err
			}
			defer c.Close()
			r := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 20; i++ {
				b := make([]byte, 512)
				for j := range b {
					b[j] = byte(r.IntN(256))
					if b[j] == mllp.StartBlock || b[j] == mllp.EndBlock {
						b[j] = 'x'
					}
				}
				if _, err := c.Write(b); err != nil {
					break
				}
			}
			if rest, err := readToClose(c); err != nil || len(rest) > 0 {
				return fmt.Errorf("got %q %v, want the connection closed with no answer", rest, err)
			}
			return nil
		},
		// MLLP: random bytes inside a frame are not a message: AR with an
		// ERR segment, and the connection stays usable.
		"mllp/random-bytes-in-frame": func() error {
			c, err := dialFrom("127.0.0.13", a.mllp)
			if err != nil {
				return err
			}
			defer c.Close()
			r := rand.New(rand.NewPCG(3, 4))
			b := make([]byte, 300)
			for j := range b {
				b[j] = byte(r.IntN(256))
				if b[j] == mllp.StartBlock || b[j] == mllp.EndBlock {
					b[j] = 'x'
				}
			}
			code, ack, err := mllpExchange(c, string(b))
			if err != nil {
				return err
			}
			if code != "AR" || ack.Get("ERR-3-1") == "" {
				return fmt.Errorf("random frame answered %q ERR-3 %q, want AR with an ERR code", code, ack.Get("ERR-3-1"))
			}
			if code, _, err := mllpExchange(c, fmt.Sprintf(hostileORU, "AFTER-RANDOM")); err != nil || code != "AA" {
				return fmt.Errorf("message after the random frame: %q %v, want AA", code, err)
			}
			return nil
		},
		// MLLP: a connection that sends nothing is closed after
		// --mllp-idle-timeout, with nothing sent.
		"mllp/half-open": func() error {
			c, err := dialFrom("127.0.0.14", a.mllp)
			if err != nil {
				return err
			}
			defer c.Close()
			if rest, err := readToClose(c); err != nil || len(rest) > 0 {
				return fmt.Errorf("got %q %v, want the connection closed with no answer", rest, err)
			}
			return nil
		},
		// MLLP: beyond --mllp-max-connections-per-host a host's new
		// connections are closed at once: a message sent on them gets no
		// ACK, while the connections within the limit are still served.
		"mllp/connection-flood": func() error {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for i := 0; i < 4; i++ {
				c, err := dialFrom("127.0.0.15", a.mllp)
				if err != nil {
					return err
				}
				held = append(held, c)
			}
			for i := 0; i < 12; i++ {
				c, err := dialFrom("127.0.0.15", a.mllp)
				if err != nil {
					return err
				}
				mllp.WriteMessage(c, []byte(fmt.Sprintf(hostileORU, fmt.Sprintf("FLOOD-%d", i))))
				rest, err := readToClose(c)
				c.Close()
				if err != nil || len(rest) > 0 {
					return fmt.Errorf("connection %d beyond the per-host limit: %q %v, want closed with no answer", 5+i, rest, err)
				}
				// The held connections are served during the flood. Every
				// few refused ones they send a message, which also keeps
				// them within --mllp-idle-timeout (3 s) on a loaded machine
				// (all 12 refusals once took longer, and the idle timeout
				// closed a held connection).
				if i%3 != 2 {
					continue
				}
				for j, c := range held {
					if code, _, err := mllpExchange(c, fmt.Sprintf(hostileORU, fmt.Sprintf("HELD-%d-%d", j, i))); err != nil || code != "AA" {
						return fmt.Errorf("connection %d within the limit, after %d refused: %q %v, want AA", j+1, i+1, code, err)
					}
				}
			}
			return nil
		},

		// DICOM: a TCP connection with no A-ASSOCIATE-RQ is closed when the
		// ARTIM timer expires (PS3.8 Sta2, AA-2): no PDU.
		"dicom/artim": func() error {
			c, err := dialFrom("127.0.0.21", a.dicom)
			if err != nil {
				return err
			}
			defer c.Close()
			if rest, err := readToClose(c); err != nil || len(rest) > 0 {
				return fmt.Errorf("got %q %v, want the connection closed with no PDU", rest, err)
			}
			return nil
		},
		// DICOM: an association that goes silent after the A-ASSOCIATE-AC
		// gets A-ABORT (source 2 service provider, reason 0) after
		// --dicom-idle-timeout, then the close.
		"dicom/silent-association": func() error {
			c, err := associate("127.0.0.22", a.dicom)
			if err != nil {
				return err
			}
			defer c.Close()
			return expectPDUThenClose(c, abortPDU(2, 0))
		},
		// DICOM: a PDU longer than we ever accept (max(1 MiB, max PDU))
		// gets A-ABORT source 2 reason 6 (invalid PDU parameter value) as
		// soon as its header is read; its body is never waited for.
		"dicom/oversized-pdu": func() error {
			c, err := associate("127.0.0.23", a.dicom)
			if err != nil {
				return err
			}
			defer c.Close()
			c.Write([]byte{4, 0, 0, 0x20, 0, 0, 0, 0x1f, 0xff, 0xfa, 1, 3})
			return expectPDUThenClose(c, abortPDU(2, 6))
		},
		// DICOM: an unknown PDU type instead of the A-ASSOCIATE-RQ gets
		// A-ABORT source 2 reason 1 (unrecognized PDU).
		"dicom/unknown-pdu": func() error {
			c, err := dialFrom("127.0.0.24", a.dicom)
			if err != nil {
				return err
			}
			defer c.Close()
			c.Write([]byte{0x5a, 0, 0, 0, 0, 4, 1, 2, 3, 4})
			return expectPDUThenClose(c, abortPDU(2, 1))
		},
		// DICOM: random bytes (seeded) that start with a known PDU type and
		// a plausible length but a garbage body: A-ABORT source 2 reason 6.
		"dicom/random-bytes": func() error {
			c, err := dialFrom("127.0.0.24", a.dicom)
			if err != nil {
				return err
			}
			defer c.Close()
			r := rand.New(rand.NewPCG(5, 6))
			body := make([]byte, 200)
			for i := range body {
				body[i] = byte(r.IntN(256))
			}
			c.Write(append([]byte{1, 0, 0, 0, 0, 200}, body...))
			return expectPDUThenClose(c, abortPDU(2, 6))
		},
		// DICOM: a P-DATA-TF before any association is an unexpected PDU
		// (PS3.8 Sta2, AA-1): A-ABORT source 2 reason 2.
		"dicom/pdata-before-association": func() error {
			c, err := dialFrom("127.0.0.24", a.dicom)
			if err != nil {
				return err
			}
			defer c.Close()
			c.Write([]byte{4, 0, 0, 0, 0, 6, 0, 0, 0, 2, 1, 3})
			return expectPDUThenClose(c, abortPDU(2, 2))
		},
		// DICOM: a called AE title that is not ours: A-ASSOCIATE-RJ
		// permanent (1), service user (1), called AE not recognized (7).
		"dicom/wrong-called-ae": func() error {
			c, err := dialFrom("127.0.0.26", a.dicom)
			if err != nil {
				return err
			}
			defer c.Close()
			c.Write(associateRQ("NOTUS"))
			return expectPDU(c, rejectPDU(1, 1, 7))
		},
		// DICOM: beyond --dicom-max-associations-per-host, A-ASSOCIATE-RJ
		// transient (2), service provider presentation (3), local limit
		// exceeded (2); the held associations are unaffected.
		"dicom/association-flood": func() error {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for i := 0; i < 4; i++ {
				c, err := associate("127.0.0.25", a.dicom)
				if err != nil {
					return fmt.Errorf("association %d within the limit: %w", i+1, err)
				}
				held = append(held, c)
			}
			for i := 0; i < 4; i++ {
				c, err := dialFrom("127.0.0.25", a.dicom)
				if err != nil {
					return err
				}
				c.Write(associateRQ("RADBRIDGE"))
				err = expectPDU(c, rejectPDU(2, 3, 2))
				c.Close()
				if err != nil {
					return fmt.Errorf("association %d beyond the limit: %w", 5+i, err)
				}
			}
			// A release of a held association still works: A-RELEASE-RP.
			held[0].Write([]byte{5, 0, 0, 0, 0, 4, 0, 0, 0, 0})
			return expectPDU(held[0], []byte{6, 0, 0, 0, 0, 4, 0, 0, 0, 0})
		},

		// HTTP: headers trickling slower than --http-read-header-timeout:
		// the connection is closed (Go's server sends nothing on a timeout).
		"http/slow-headers": func() error {
			c, err := dialFrom("127.0.0.31", a.http)
			if err != nil {
				return err
			}
			defer c.Close()
			c.Write([]byte("GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow: "))
			for i := 0; i < 100; i++ {
				time.Sleep(200 * time.Millisecond) // the attacker's pace, not a wait
				if _, err := c.Write([]byte("a")); err != nil {
					return nil
				}
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				var one [1]byte
				n, err := c.Read(one[:])
				if n > 0 {
					c.SetReadDeadline(time.Now().Add(hostileDeadline))
					rest, _ := io.ReadAll(c)
					return fmt.Errorf("slow headers answered %q, want a close", append(one[:n], rest...))
				}
				if err == io.EOF || isConnReset(err) {
					return nil
				}
			}
			return errors.New("slow-headers connection still open after 20 s")
		},
		// HTTP: a body over the REST limit on POST /v1/events: 413.
		"http/oversized-body": func() error {
			body := `{"type":"IMAGING_STUDY_VIEWED","patient_id":"` + strings.Repeat("x", 1<<20) + `"}`
			resp, err := http.Post("http://"+a.http+"/v1/events", "application/json", strings.NewReader(body))
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				return fmt.Errorf("oversized body: %d, want 413", resp.StatusCode)
			}
			return nil
		},
		// HTTP: random bytes instead of a request: 400 Bad Request, close.
		"http/random-bytes": func() error {
			c, err := dialFrom("127.0.0.31", a.http)
			if err != nil {
				return err
			}
			defer c.Close()
			r := rand.New(rand.NewPCG(7, 8))
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			c.Write(append(b, "\r\n\r\n"...))
			got, err := readToClose(c)
			if err != nil || !bytes.HasPrefix(got, []byte("HTTP/1.1 400 Bad Request")) {
				return fmt.Errorf("random bytes answered %q %v, want 400 and close", got, err)
			}
			return nil
		},
		// WebSocket: a room frame over the limit: close 1009 with a reason.
		"http/websocket-oversized-frame": func() error {
			ctx, cancel := context.WithTimeout(context.Background(), hostileDeadline)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws://"+a.http+"/ws", nil)
			if err != nil {
				return err
			}
			defer c.CloseNow()
			if _, _, err := c.Read(ctx); err != nil { // welcome
				return err
			}
			_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping","data":"`+strings.Repeat("x", 70<<10)+`"}`))
			for {
				_, _, err := c.Read(ctx)
				if err == nil {
					continue
				}
				var ce websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.StatusMessageTooBig || ce.Reason == "" {
					return fmt.Errorf("oversized frame: %v, want close 1009 with a reason", err)
				}
				return nil
			}
		},

		// gRPC: random bytes instead of the HTTP/2 client preface: the
		// server's SETTINGS frame at most, then the connection is closed.
		"grpc/random-bytes": func() error {
			c, err := dialFrom("127.0.0.41", a.grpc)
			if err != nil {
				return err
			}
			defer c.Close()
			r := rand.New(rand.NewPCG(9, 10))
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			c.Write(b)
			got, err := readToClose(c)
			if err != nil {
				return err
			}
			// Anything sent must be HTTP/2 frames: 9-byte headers, type
			// SETTINGS (4) first.
			if len(got) > 0 && (len(got) < 9 || got[3] != 4) {
				return fmt.Errorf("random bytes answered % x, want at most HTTP/2 frames starting with SETTINGS", got)
			}
			return nil
		},
		// gRPC: a connection that sends nothing is closed after
		// --http-read-header-timeout, after the server's SETTINGS frame.
		"grpc/silent": func() error {
			c, err := dialFrom("127.0.0.41", a.grpc)
			if err != nil {
				return err
			}
			defer c.Close()
			got, err := readToClose(c)
			if err != nil {
				return err
			}
			if len(got) > 0 && (len(got) < 9 || got[3] != 4) {
				return fmt.Errorf("silent connection got % x, want at most HTTP/2 frames starting with SETTINGS", got)
			}
			return nil
		},
		// gRPC: a message over the server's 64 KiB limit: RESOURCE_EXHAUSTED.
		"grpc/oversized-message": func() error {
			conn, err := grpcDial(a.grpc)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), hostileDeadline)
			defer cancel()
			_, err = rbv1.NewEventServiceClient(conn).PublishEvent(ctx, &rbv1.PublishEventRequest{
				Type: rbv1.EventType_IMAGING_STUDY_VIEWED, PatientId: "HOSTILE-P", ViewerName: strings.Repeat("x", 100<<10)})
			if code := statusCode(err); code != codes.ResourceExhausted {
				return fmt.Errorf("oversized message: %v, want RESOURCE_EXHAUSTED", err)
			}
			return nil
		},
	}
}

// wellBehaved is one round of the peers that must keep working: echoscu
// (C-ECHO success), mllp_send (AA), GET /v1/events (200), and an event
// published over REST reaching a gRPC subscriber.
type wellBehaved struct {
	echoscu, mllpSend string
	addrs             hostileAddrs
	dir               string
	sub               rbv1.EventService_SubscribeClient
	n                 int
}

func (w *wellBehaved) round() error {
	w.n++
	host, port := hostPort(w.addrs.dicom)
	ctx, cancel := context.WithTimeout(context.Background(), hostileDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.echoscu, "-aet", "PACS", "-aec", "RADBRIDGE", host, port)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("echoscu: %v\n%s", err, out)
	}
	ctl := fmt.Sprintf("WELL-%d", w.n)
	file := filepath.Join(w.dir, ctl+".hl7")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(hostileORU, ctl)), 0o644); err != nil {
		return err
	}
	host, port = hostPort(w.addrs.mllp)
	out, err := exec.CommandContext(ctx, w.mllpSend, "--loose", "-f", file, "-p", port, host).Output()
	if err != nil {
		return fmt.Errorf("mllp_send: %v\n%s", err, out)
	}
	ack, err := hl7.Parse([]byte(strings.Trim(string(out), "\x0b\x1c\r\n")))
	if err != nil || ack.Get("MSA-1") != "AA" || ack.Get("MSA-2") != ctl {
		return fmt.Errorf("mllp_send got %q (%v), want AA %s", out, err, ctl)
	}
	resp, err := http.Get("http://" + w.addrs.http + "/v1/events?patient_id=HOSTILE-P")
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET /v1/events: %d", resp.StatusCode)
	}
	study := fmt.Sprintf("1.2.826.0.1.3680043.10.1447.555.%d", w.n)
	body := fmt.Sprintf(`{"type":"IMAGING_STUDY_VIEWED","patient_id":"WELL-P","study_instance_uid":%q,"viewer_name":"Dr Well"}`, study)
	resp, err = http.Post("http://"+w.addrs.http+"/v1/events", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("POST /v1/events: %d", resp.StatusCode)
	}
	for {
		ev, err := w.sub.Recv()
		if err != nil {
			return fmt.Errorf("gRPC subscriber: %w", err)
		}
		if ev.StudyInstanceUid == study {
			return nil
		}
	}
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestHostilePeers attacks every front at once (slow-loris, half-open
// connections and associations, floods beyond the per-host limits,
// oversized frames, PDUs, bodies and messages, random bytes) and checks
// that each bad peer gets its precise protocol answer, that real
// well-behaved peers (echoscu, mllp_send, REST, a gRPC subscriber) keep
// working throughout, that the heap stays bounded, and that goroutines
// return to their baseline once the attackers are gone.
func TestHostilePeers(t *testing.T) {
	w := &wellBehaved{echoscu: testkit.Peer(t, "echoscu"), mllpSend: testkit.Peer(t, "mllp_send"), dir: t.TempDir()}
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), hostileFlags...)
	w.addrs = hostileAddrs{mllp: d.MLLPAddr(), dicom: d.DICOMAddr(), http: d.HTTPAddr(), grpc: d.GRPCAddr()}

	conn, err := grpcDial(w.addrs.grpc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	sub, err := rbv1.NewEventServiceClient(conn).Subscribe(ctx, &rbv1.SubscribeRequest{PatientId: []string{"WELL-P"}})
	if err != nil {
		t.Fatal(err)
	}
	w.sub = sub
	if err := w.round(); err != nil { // warm up before measuring
		t.Fatalf("well-behaved peers before the attacks: %v", err)
	}
	runtime.GC()
	heapBase := heapInUse()
	goroutinesBase := runtime.NumGoroutine()

	attacks := hostileAttacks(w.addrs)
	var wg sync.WaitGroup
	var done atomic.Bool
	var peak atomic.Uint64
	for name, attack := range attacks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := attack(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	attackersDone := make(chan struct{})
	go func() { wg.Wait(); done.Store(true); close(attackersDone) }()
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for !done.Load() {
			if h := heapInUse(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-attackersDone:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	rounds := 0
	for rounds < 3 || !done.Load() {
		if rounds >= 200 {
			t.Fatal("attacks still running after 200 well-behaved rounds")
		}
		if err := w.round(); err != nil {
			t.Errorf("well-behaved peers during the attacks, round %d: %v", rounds+1, err)
			break
		}
		rounds++
	}
	<-attackersDone
	<-sampled
	t.Logf("%d well-behaved rounds during %d attacks; heap in use %d MB before, peak %d MB during", rounds, len(attacks), heapBase>>20, peak.Load()>>20)
	if growth := int64(peak.Load()) - int64(heapBase); growth > 200<<20 {
		t.Errorf("heap grew by %d MB during the attacks, want under 200 MB", growth>>20)
	}

	cancel()
	conn.Close()
	http.DefaultClient.CloseIdleConnections()
	// Goroutines return to the baseline once the attackers are gone (the
	// subscriber's stream and client connection are gone too, so allow a
	// little slack either way). Polled, bounded: this is not a timing check.
	var now int
	if !testkit.Poll(20*time.Second, func() bool { now = runtime.NumGoroutine(); return now <= goroutinesBase+5 }) {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after the attacks, %d before\n%s", now, goroutinesBase, buf[:runtime.Stack(buf, true)])
	}
}

func grpcDial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func statusCode(err error) codes.Code { return status.Code(err) }
