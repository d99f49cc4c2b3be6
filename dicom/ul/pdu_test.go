package ul

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/internal/testkit"
)

func sampleRQ() *AssociateRQ {
	return &AssociateRQ{
		ProtocolVersion:    1,
		CalledAE:           "RADBRIDGE",
		CallingAE:          "MODALITY",
		ApplicationContext: ApplicationContextName,
		PresentationContexts: []PresentationContextRQ{
			{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
			{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}},
		},
		UserInfo: UserInfo{MaxPDULength: 16384, ImplementationClassUID: "1.2.3.4", ImplementationVersionName: "TEST",
			AsyncOps: &AsyncOps{Invoked: 2, Performed: 3}, RoleSelections: []RoleSelection{{SOPClassUID: "1.2.3", SCU: 1, SCP: 0}}},
	}
}

func TestPDURoundTrip(t *testing.T) {
	pdus := []PDU{
		sampleRQ(),
		&AssociateAC{ProtocolVersion: 1, CalledAE: "RADBRIDGE", CallingAE: "MODALITY", ApplicationContext: ApplicationContextName,
			PresentationContexts: []PresentationContextAC{{ID: 1, Result: 0, TransferSyntax: "1.2.840.10008.1.2"}, {ID: 3, Result: 3}},
			UserInfo:             UserInfo{MaxPDULength: 65536}},
		&AssociateRJ{Result: 1, Source: 1, Reason: 7},
		&PDataTF{PDVs: []PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{1, 2, 3}}, {ContextID: 3, Data: []byte{4}}}},
		&ReleaseRQ{},
		&ReleaseRP{},
		&Abort{Source: 2, Reason: 6},
	}
	for _, p := range pdus {
		t.Run(p.Type().String(), func(t *testing.T) {
			b, err := Encode(p)
			if err != nil {
				t.Fatal(err)
			}
			// Split reads must not matter.
			got, _, err := ReadPDU(iotest.OneByteReader(bytes.NewReader(b)), nil, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(got, p); d != "" {
				t.Errorf("round trip (-got +want):\n%s", d)
			}
		})
	}
}

func TestReadPDUBounds(t *testing.T) {
	tests := []struct {
		name   string
		in     []byte
		reason byte
		err    error
	}{
		{"too long", []byte{4, 0, 0, 0x10, 0, 1}, AbortInvalidParameterValue, ErrPDUTooLarge},
		{"unknown type", []byte{9, 0, 0, 0, 0, 0}, AbortUnrecognizedPDU, ErrUnrecognizedPDU},
		{"PDV longer than PDU", []byte{4, 0, 0, 0, 0, 6, 0, 0, 0, 9, 1, 3}, AbortInvalidParameterValue, ErrMalformedPDU},
		{"empty P-DATA-TF", []byte{4, 0, 0, 0, 0, 0}, AbortInvalidParameterValue, ErrMalformedPDU},
		{"abort wrong length", []byte{7, 0, 0, 0, 0, 2, 0, 0}, AbortInvalidParameterValue, ErrMalformedPDU},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ReadPDU(bytes.NewReader(tt.in), nil, 1<<16)
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reason != tt.reason || !errors.Is(err, tt.err) {
				t.Errorf("err = %v, want reason %d and %v", err, tt.reason, tt.err)
			}
		})
	}
}

func TestNegotiation(t *testing.T) {
	rq := sampleRQ()
	rq.PresentationContexts = append(rq.PresentationContexts,
		PresentationContextRQ{ID: 5, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{"9.9"}},
		PresentationContextRQ{ID: 7, AbstractSyntax: "1.9.9", TransferSyntaxes: []string{"1.2.840.10008.1.2"}})
	cfg := AcceptConfig{AETitle: "RADBRIDGE", MaxPDULength: 32768, Negotiate: func(as string, ts []string) (string, byte) {
		if as == "1.9.9" {
			return "", ResultAbstractSyntaxNotSupported
		}
		for _, x := range ts {
			if x != "9.9" {
				return x, ResultAcceptance
			}
		}
		return "", ResultTransferSyntaxesNotSupported
	}}
	ac := exchange(t, cfg, rq)
	want := []PresentationContextAC{
		{ID: 1, Result: 0, TransferSyntax: "1.2.840.10008.1.2"},
		{ID: 3, Result: 0, TransferSyntax: "1.2.840.10008.1.2.1"},
		{ID: 5, Result: ResultTransferSyntaxesNotSupported},
		{ID: 7, Result: ResultAbstractSyntaxNotSupported},
	}
	acc, ok := ac.(*AssociateAC)
	if !ok {
		t.Fatalf("got %v", ac.Type())
	}
	if d := cmp.Diff(acc.PresentationContexts, want); d != "" {
		t.Errorf("contexts (-got +want):\n%s", d)
	}
	if acc.UserInfo.MaxPDULength != 32768 || acc.UserInfo.AsyncOps == nil || *acc.UserInfo.AsyncOps != (AsyncOps{1, 1}) {
		t.Errorf("user info %+v", acc.UserInfo)
	}

	for _, tc := range []struct {
		name string
		mod  func(*AssociateRQ)
		want AssociateRJ
	}{
		{"called AE", func(r *AssociateRQ) { r.CalledAE = "OTHER" }, AssociateRJ{1, 1, 7}},
		{"application context", func(r *AssociateRQ) { r.ApplicationContext = "1.2.3" }, AssociateRJ{1, 1, 2}},
		{"protocol version", func(r *AssociateRQ) { r.ProtocolVersion = 2 }, AssociateRJ{1, 2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rq := sampleRQ()
			tc.mod(rq)
			got := exchange(t, cfg, rq)
			if rj, ok := got.(*AssociateRJ); !ok || *rj != tc.want {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

// exchange sends rq to an acceptor over a pipe and returns its answer.
func exchange(t *testing.T, cfg AcceptConfig, rq *AssociateRQ) PDU {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	cfg.ARTIMTimeout = time.Second
	go func() {
		a, err := Accept(context.Background(), server, cfg)
		if err == nil {
			a.Close()
		}
	}()
	b, _ := Encode(rq)
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Write(b); err != nil {
		t.Fatal(err)
	}
	p, _, err := ReadPDU(client, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWriterFragments(t *testing.T) {
	client, server := net.Pipe()
	a := &Association{conn: client, PeerMaxPDULength: 16, writeTimeout: time.Second, contexts: map[byte]PresentationContext{1: {ID: 1}}}
	data := bytes.Repeat([]byte{7}, 45)
	go func() {
		_ = a.WriteMessage(1, []byte{1, 2}, data)
		client.Close()
	}()
	var got []byte
	for {
		p, _, err := ReadPDU(server, nil, 1<<20)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
			break
		}
		if err != nil {
			break
		}
		pd := p.(*PDataTF)
		for _, v := range pd.PDVs {
			if 6+len(v.Data) > 16 {
				t.Errorf("P-DATA-TF of %d bytes exceeds the peer's 16", 6+len(v.Data))
			}
			if !v.Command {
				got = append(got, v.Data...)
			}
		}
	}
	if !bytes.Equal(got, data) {
		t.Errorf("reassembled %d bytes, want %d", len(got), len(data))
	}
}

func FuzzPDU(f *testing.F) {
	for _, p := range []PDU{sampleRQ(), &AssociateRJ{1, 1, 7}, &PDataTF{PDVs: []PDV{{ContextID: 1, Last: true, Data: []byte{1}}}}, &Abort{}, &ReleaseRQ{}} {
		b, _ := Encode(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, _, err := ReadPDU(bytes.NewReader(b), nil, 1<<16)
		if err != nil {
			return
		}
		// What we decode, we can encode and decode to the same value.
		enc, err := Encode(p)
		if err != nil {
			return
		}
		q, _, err := ReadPDU(bytes.NewReader(enc), nil, 1<<20)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if _, ok := p.(*AssociateRQ); !ok {
			if d := cmp.Diff(q, p); d != "" {
				t.Errorf("re-decode differs:\n%s", d)
			}
		}
	})
}

// FuzzAssociation plays random bytes as a peer against the acceptor state
// machine: no panic, no hang (everything ends within the timeouts).
func FuzzAssociation(f *testing.F) {
	rq, _ := Encode(sampleRQ())
	pd, _ := Encode(&PDataTF{PDVs: []PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{0, 0}}}})
	rel, _ := Encode(&ReleaseRQ{})
	f.Add(rq)
	f.Add(append(append(append([]byte{}, rq...), pd...), rel...))
	f.Add(append(append([]byte{}, rq...), 0x04, 0, 0, 0, 0, 6, 0, 0, 0, 2, 5, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		testkit.PlayPeer(t, b, "acceptor", func(server net.Conn) {
			a, err := Accept(context.Background(), server, AcceptConfig{
				AETitle:      "RADBRIDGE",
				Negotiate:    func(string, []string) (string, byte) { return "1.2.840.10008.1.2", 0 },
				ARTIMTimeout: 20 * time.Millisecond, IdleTimeout: 20 * time.Millisecond, WriteTimeout: 20 * time.Millisecond,
			})
			if err != nil {
				return
			}
			for i := 0; i < 1000; i++ {
				if _, err := a.ReadPDV(); err != nil {
					return
				}
			}
			a.Abort(AbortNotSpecified)
		})
	})
}
