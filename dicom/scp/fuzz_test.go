package scp

import (
	"context"
	"flag"
	"net"
	"testing"
	"time"

	"radbridge/dicom/dimse"
	"radbridge/dicom/ul"
	"radbridge/ingest/ingesttest"
	"radbridge/internal/testkit"
)

// FuzzSCP plays random bytes as a peer against a whole association of the
// SCP (upper layer, DIMSE, C-STORE header parsing, N-CREATE): no panic, no
// hang. Seeds are a valid association carrying C-ECHO, C-STORE and N-CREATE.
func FuzzSCP(f *testing.F) {
	ctx := []ul.PresentationContextRQ{
		{ID: 1, AbstractSyntax: ctSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
		{ID: 3, AbstractSyntax: IANSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
		{ID: 5, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
	}
	rq, _ := ul.Encode(&ul.AssociateRQ{ProtocolVersion: 1, CalledAE: "RADBRIDGE", CallingAE: "FUZZ",
		ApplicationContext: ul.ApplicationContextName, PresentationContexts: ctx, UserInfo: ul.UserInfo{MaxPDULength: 16384}})
	msg := func(pc byte, cmd *dimse.Command, data []byte) []byte {
		p, _ := ul.Encode(&ul.PDataTF{PDVs: []ul.PDV{{ContextID: pc, Command: true, Last: true, Data: cmd.Encode()}}})
		if data != nil {
			d, _ := ul.Encode(&ul.PDataTF{PDVs: []ul.PDV{{ContextID: pc, Last: true, Data: data}}})
			p = append(p, d...)
		}
		return p
	}
	const sop = "1.2.826.0.1.3680043.10.1447.900.1"
	echo := msg(5, &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}, nil)
	store := msg(1, &dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 2, AffectedSOPClassUID: ctSOPClass, AffectedSOPInstanceUID: sop, CommandDataSetType: 0},
		append(pixelHeader(ctHeader(sop), 4), 1, 2, 3, 4))
	ian := msg(3, &dimse.Command{CommandField: dimse.NCreateRQ, MessageID: 3, AffectedSOPClassUID: IANSOPClass, AffectedSOPInstanceUID: sop + ".2", CommandDataSetType: 0},
		ds{}.seq(0x0008, 0x1115, ds{}.uid(0x0020, 0x000E, "1.2")).uid(0x0020, 0x000D, "1.2.3"))
	rel, _ := ul.Encode(&ul.ReleaseRQ{})
	join := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	f.Add(join(rq, echo, store, ian, rel))
	f.Add(join(rq, store[:len(store)/2]))
	f.Add(join(rq, ian, echo))

	srv, err := New(Config{ARTIMTimeout: 20 * time.Millisecond, IdleTimeout: 20 * time.Millisecond,
		MaxHeaderBytes: 1 << 16, Logger: discardLogger()}, &ingesttest.Recorder{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		testkit.PlayPeer(t, b, "association", func(server net.Conn) {
			srv.serveConn(context.Background(), server, "pipe")
		})
	})
	// The seeds must reach the handler: the fuzzer starts from real traffic.
	// (With -fuzz the inputs run in worker processes; only plain test runs
	// see the counts here.)
	if fuzzing := flag.Lookup("test.fuzz"); fuzzing != nil && fuzzing.Value.String() != "" {
		return
	}
	if st := srv.Stats(); st.Echoes == 0 || st.InstancesStored == 0 || st.Notifications == 0 {
		f.Errorf("seeds did not exercise the services: %+v", st)
	}
}
