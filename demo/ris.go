package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"radbridge/hl7"
	"radbridge/hl7/mllp"
)

// ErrNotAccepted is returned when the receiver's ACK is not AA.
var ErrNotAccepted = errors.New("message not accepted")

// RIS is an HL7 v2 sender over MLLP: it sends one message at a time and
// waits for its ACK.
type RIS struct {
	Addr    string
	Timeout time.Duration // per message; 10s when zero

	conn net.Conn
	r    *mllp.Reader
}

// Send frames msg (segments separated by CR), sends it and checks that the
// ACK says AA for its control id. A broken connection is redialled once.
func (s *RIS) Send(ctx context.Context, msg []byte, controlID string) error {
	err := s.send(ctx, msg, controlID)
	if err != nil && !errors.Is(err, ErrNotAccepted) && ctx.Err() == nil {
		s.Close()
		err = s.send(ctx, msg, controlID)
	}
	return err
}

func (s *RIS) send(ctx context.Context, msg []byte, controlID string) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if s.conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", s.Addr)
		if err != nil {
			return fmt.Errorf("dial MLLP %s: %w", s.Addr, err)
		}
		s.conn, s.r = c, mllp.NewReader(c, 1<<20)
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.conn.SetDeadline(deadline)
	if err := mllp.WriteMessage(s.conn, msg); err != nil {
		return err
	}
	b, err := s.r.ReadMessage()
	if err != nil {
		return fmt.Errorf("read ACK: %w", err)
	}
	ack, err := hl7.Parse(b)
	if err != nil {
		return fmt.Errorf("parse ACK: %w", err)
	}
	msa := ack.Segment("MSA")
	if msa == nil {
		return fmt.Errorf("ACK without MSA: %w", ErrNotAccepted)
	}
	if code := msa.Field(1); code != "AA" || msa.Field(2) != controlID {
		return fmt.Errorf("ACK %s for %s (%s): %w", code, msa.Field(2), msa.Field(3), ErrNotAccepted)
	}
	return nil
}

// Close closes the connection, if any.
func (s *RIS) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn, s.r = nil, nil
	return err
}
