package bench

import (
	"bytes"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The benchmark clients decode only what they need (an event's sequence and
// heartbeat flag), so that in-process runs charge as little client work as
// possible to the daemon's numbers. Real clients decode the whole event.

// seqOnly is an Event reduced to its sequence (field 1) and heartbeat
// (field 15).
type seqOnly struct {
	Sequence  uint64
	Heartbeat bool
}

// seqCodec marshals requests as protobuf and decodes responses into
// *seqOnly by scanning the wire format.
type seqCodec struct{}

func (seqCodec) Name() string { return "proto" }

func (seqCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("seqCodec: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (seqCodec) Unmarshal(b []byte, v any) error {
	s, ok := v.(*seqOnly)
	if !ok {
		return fmt.Errorf("seqCodec: cannot unmarshal into %T", v)
	}
	*s = seqOnly{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 15) {
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if num == 1 {
				s.Sequence = x
			} else {
				s.Heartbeat = x != 0
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

var (
	seqKey = []byte(`"sequence":"`)
	hbKey  = []byte(`"heartbeat":true`)
)

// parseFrame reads the sequence and heartbeat flag of one protojson event
// frame without decoding the rest.
func parseFrame(b []byte) (seqOnly, error) {
	if bytes.Contains(b, hbKey) {
		return seqOnly{Heartbeat: true}, nil
	}
	i := bytes.Index(b, seqKey)
	if i < 0 {
		return seqOnly{}, fmt.Errorf("frame without sequence: %.200q", b)
	}
	rest := b[i+len(seqKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return seqOnly{}, fmt.Errorf("frame with bad sequence: %.200q", b)
	}
	n, err := strconv.ParseUint(string(rest[:j]), 10, 64)
	return seqOnly{Sequence: n}, err
}
