package api

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// preEncoded is a message already in protobuf wire format. Fan-out encodes
// each event once and sends the same bytes to every subscriber.
type preEncoded []byte

// rawCodec is the standard proto codec that passes preEncoded through.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

func init() {
	encoding.RegisterCodecV2(rawCodec{encoding.GetCodecV2(proto.Name)})
}
