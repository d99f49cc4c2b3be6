package scu_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/dicom/dataset"
	"radbridge/dicom/scp"
	"radbridge/dicom/scu"
	"radbridge/dicom/ul"
	"radbridge/ingest/ingesttest"
	"radbridge/internal/testkit"
)

const ctClass = "1.2.840.10008.5.1.4.1.1.2"

// startSCP runs our SCP on loopback with a small maximum PDU, so that
// stores are fragmented.
func startSCP(t *testing.T) (string, *ingesttest.Recorder) {
	t.Helper()
	rec := &ingesttest.Recorder{}
	srv, err := scp.New(scp.Config{MaxPDULength: 4096, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, rec)
	if err != nil {
		t.Fatal(err)
	}
	return testkit.ServeLoopback(t, srv.Serve), rec
}

func elem(b []byte, group, element uint16, v string, pad string) []byte {
	if len(v)%2 == 1 {
		v += pad
	}
	b = binary.LittleEndian.AppendUint16(b, group)
	b = binary.LittleEndian.AppendUint16(b, element)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// ctDataSet is an implicit VR little endian CT with pixels bytes of
// Pixel Data.
func ctDataSet(sop string, pixels int) []byte {
	var b []byte
	b = elem(b, 0x0008, 0x0016, ctClass, "\x00")
	b = elem(b, 0x0008, 0x0018, sop, "\x00")
	b = elem(b, 0x0008, 0x0060, "CT", " ")
	b = elem(b, 0x0010, 0x0020, "PAT-7", " ")
	b = elem(b, 0x0020, 0x000D, "1.2.826.0.1.3680043.10.1447.500", "\x00")
	b = elem(b, 0x0020, 0x000E, "1.2.826.0.1.3680043.10.1447.500.1", "\x00")
	return elem(b, 0x7FE0, 0x0010, strings.Repeat("\x00", pixels), "\x00")
}

// part10 wraps a data set in File Meta Information.
func part10(sop, ts string, body []byte) []byte {
	meta := func(b []byte, el uint16, v string) []byte {
		if len(v)%2 == 1 {
			v += "\x00"
		}
		b = binary.LittleEndian.AppendUint16(b, 2)
		b = binary.LittleEndian.AppendUint16(b, el)
		b = append(b, 'U', 'I')
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		return append(b, v...)
	}
	var g []byte
	g = meta(g, 0x0002, ctClass)
	g = meta(g, 0x0003, sop)
	g = meta(g, 0x0010, ts)
	out := append(make([]byte, 128), "DICM"...)
	out = append(out, 2, 0, 0, 0, 'U', 'L', 4, 0)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(g)))
	out = append(out, g...)
	return append(out, body...)
}

func TestClientAgainstOurSCP(t *testing.T) {
	addr, rec := startSCP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := scu.Dial(ctx, addr, scu.Config{
		CallingAE: "MODALITY",
		Contexts: []scu.Context{
			{AbstractSyntax: ctClass, TransferSyntaxes: []string{dataset.ImplicitVRLittleEndian, dataset.ExplicitVRLittleEndian}},
			{AbstractSyntax: scu.IANSOPClass, TransferSyntaxes: []string{dataset.ImplicitVRLittleEndian}},
		},
		Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx); err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if got, want := c.AcceptedTransferSyntaxes(ctClass), []string{dataset.ImplicitVRLittleEndian, dataset.ExplicitVRLittleEndian}; !cmp.Equal(got, want) {
		t.Errorf("accepted %v, want %v", got, want)
	}
	// 100 kB of pixels through a 4 kB maximum PDU.
	if st, err := c.Store(ctx, ctClass, "1.2.3.1", dataset.ImplicitVRLittleEndian, bytes.NewReader(ctDataSet("1.2.3.1", 100_000))); err != nil || st != 0 {
		t.Fatalf("Store: status %v, %v", st, err)
	}
	file := filepath.Join(t.TempDir(), "ct.dcm")
	if err := os.WriteFile(file, part10("1.2.3.2", dataset.ImplicitVRLittleEndian, ctDataSet("1.2.3.2", 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	if m, st, err := c.StoreFile(ctx, file); err != nil || st != 0 || m.SOPInstanceUID != "1.2.3.2" {
		t.Fatalf("StoreFile: %+v status %v, %v", m, st, err)
	}
	if _, err := c.Store(ctx, ctClass, "1.2.3.3", "1.2.840.10008.1.2.4.70", bytes.NewReader(nil)); !errors.Is(err, scu.ErrNoContext) {
		t.Errorf("Store in an unproposed syntax: %v, want ErrNoContext", err)
	}
	ian := scu.IAN{StudyInstanceUID: "1.2.826.0.1.3680043.10.1447.500", Series: []scu.IANSeries{{
		SeriesInstanceUID: "1.2.826.0.1.3680043.10.1447.500.1",
		Instances:         []scu.IANInstance{{SOPClassUID: ctClass, SOPInstanceUID: "1.2.3.1"}, {SOPClassUID: ctClass, SOPInstanceUID: "1.2.3.2", RetrieveAETitle: "PACS"}},
	}}}
	if st, err := c.NCreateIAN(ctx, ian); err != nil || st != 0 {
		t.Fatalf("NCreateIAN: status %v, %v", st, err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}

	var sops []string
	for _, i := range rec.Instances() {
		sops = append(sops, i.SOPInstanceUID)
	}
	if diff := cmp.Diff(sops, []string{"1.2.3.1", "1.2.3.2"}); diff != "" {
		t.Errorf("stored (-got +want):\n%s", diff)
	}
	ians := rec.IANs()
	if len(ians) != 1 {
		t.Fatalf("got %d IANs, want 1", len(ians))
	}
	got := ians[0]
	if got.StudyInstanceUID != ian.StudyInstanceUID || len(got.Series) != 1 || len(got.Series[0].Instances) != 2 ||
		got.Series[0].Instances[0].InstanceAvailability != "ONLINE" || got.Series[0].Instances[1].RetrieveAETitle != "PACS" {
		t.Errorf("IAN received: %+v", got)
	}
}

func TestRejectedAssociation(t *testing.T) {
	addr, _ := startSCP(t)
	_, err := scu.Dial(context.Background(), addr, scu.Config{CalledAE: "SOMEONE", Timeout: 5 * time.Second})
	var rj *scu.RejectError
	if !errors.As(err, &rj) || !errors.Is(err, ul.ErrRejected) {
		t.Fatalf("Dial to a wrong AE: %v, want *RejectError", err)
	}
	if rj.Result != 1 || rj.Source != 1 || rj.Reason != 7 || !strings.Contains(err.Error(), "called AE title not recognized") {
		t.Errorf("got %v", err)
	}
}

func TestReadFileMeta(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content []byte
		wantErr error
	}{
		{"part10", part10("1.2.3", dataset.ExplicitVRLittleEndian, []byte{8, 0, 0x16, 0}), nil},
		{"text", []byte("MSH|^~\\&|"), scu.ErrNotDICOM},
		{"no meta", append(make([]byte, 128), "DICM"...), scu.ErrNotDICOM},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, tt.name)
		if err := os.WriteFile(p, tt.content, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := scu.ReadFileMeta(p)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.wantErr)
		}
		if err == nil && (m.SOPInstanceUID != "1.2.3" || m.TransferSyntaxUID != dataset.ExplicitVRLittleEndian || m.Offset != int64(len(tt.content)-4)) {
			t.Errorf("%s: %+v", tt.name, m)
		}
	}
}

func TestContextCancelAborts(t *testing.T) {
	// A peer that accepts and then never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		a, err := ul.Accept(context.Background(), conn, ul.AcceptConfig{AETitle: "RADBRIDGE", Negotiate: func(string, []string) (string, byte) { return dataset.ImplicitVRLittleEndian, 0 }})
		if err != nil {
			return
		}
		for {
			if _, err := a.ReadPDV(); err != nil {
				return
			}
		}
	}()
	dialCtx, cancelDial := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelDial()
	c, err := scu.Dial(dialCtx, ln.Addr().String(), scu.Config{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Only the echo gets the short deadline: association set-up on a loaded
	// machine may take longer than the deadline under test.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Echo(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Echo without answer: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Echo returned after %v", d)
	}
}
