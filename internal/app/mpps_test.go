package app_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
	"radbridge/dicom/scu"
	"radbridge/internal/testkit"
)

// TestMPPSStateMachine: a modality (our SCU) drives MPPS steps through
// the real DICOM port, and the PACS side (storescu) stores the instances.
// The SCP applies PS3.4 F.7: N-CREATE only IN PROGRESS (0106), N-SET of an
// unknown step 0112, N-CREATE of an existing step 0111, N-SET of a
// COMPLETED or DISCONTINUED step 0110 with no effect; a resend of the same
// message (a lost response) succeeds again; IN PROGRESS → COMPLETED
// referencing every stored instance makes the study available. The step
// states survive a restart.
func TestMPPSStateMachine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), "--dicom-addr", "127.0.0.1:0", "--study-quiet-period", "10m")
	host, port := hostPort(d.DICOMAddr())
	base := "http://" + d.HTTPAddr()
	const done, dropped = "1.2.826.0.1.3680043.10.1447.81", "1.2.826.0.1.3680043.10.1447.82"
	for _, study := range []string{done, dropped} {
		src := t.TempDir()
		makeStudy(t, src, study, 1, 2, 1)
		if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, src); err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(addr string) *scu.Client {
		t.Helper()
		c, err := scu.Dial(ctx, addr, scu.Config{CallingAE: "MODALITY", Contexts: []scu.Context{
			{AbstractSyntax: scu.MPPSSOPClass, TransferSyntaxes: []string{dataset.ImplicitVRLittleEndian}}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := dial(d.DICOMAddr())
	expect := func(what string, st dimse.Status, err error, want dimse.Status) {
		t.Helper()
		var se *scu.StatusError
		if err != nil && !errors.As(err, &se) {
			t.Fatalf("%s: %v", what, err)
		}
		if st != want {
			t.Errorf("%s: status %v (%v), want %v", what, st, err, want)
		}
	}
	series := func(study string) []scu.MPPSSeries {
		return []scu.MPPSSeries{{SeriesInstanceUID: study + ".1", SOPClassUID: "1.2.840.10008.5.1.4.1.1.2",
			SOPInstanceUIDs: []string{study + ".1.1", study + ".1.2"}}}
	}
	available := func() map[string]int {
		t.Helper()
		publish(t, base, "MRN4711", done) // mapped in order: everything before it is mapped too
		_, list := testkit.GetJSON(t, base+"/v1/events?type=IMAGING_STUDY_AVAILABLE")
		n := map[string]int{}
		evs, _ := list["events"].([]any)
		for _, e := range evs {
			uid, _ := e.(map[string]any)["study_instance_uid"].(string)
			n[uid]++
		}
		return n
	}

	step, other := scu.NewUID(), scu.NewUID()
	create := scu.MPPS{SOPInstanceUID: step, Status: "IN PROGRESS", PatientID: "MRN4711", StudyInstanceUID: done, AccessionNumber: "ACC1001"}
	bad := create
	bad.Status = "COMPLETED"
	st, err := c.NCreateMPPS(ctx, bad)
	expect("N-CREATE with COMPLETED", st, err, dimse.StatusInvalidAttributeValue)
	st, err = c.NSetMPPS(ctx, scu.MPPS{SOPInstanceUID: step, Status: "COMPLETED"})
	expect("N-SET of an unknown step", st, err, dimse.StatusNoSuchSOPInstance)
	st, err = c.NCreateMPPS(ctx, create)
	expect("N-CREATE IN PROGRESS", st, err, dimse.StatusSuccess)
	st, err = c.NCreateMPPS(ctx, create)
	expect("the same N-CREATE resent", st, err, dimse.StatusSuccess)
	again := create
	again.AccessionNumber = "ACC9999"
	st, err = c.NCreateMPPS(ctx, again)
	expect("another N-CREATE of the step", st, err, dimse.StatusDuplicateSOPInstance)
	if n := available(); n[done] != 0 {
		t.Fatalf("available before COMPLETED: %v", n)
	}
	completed := scu.MPPS{SOPInstanceUID: step, Status: "COMPLETED", Series: series(done)}
	st, err = c.NSetMPPS(ctx, completed)
	expect("N-SET COMPLETED", st, err, dimse.StatusSuccess)
	if n := available(); n[done] != 1 {
		t.Errorf("IMAGING_STUDY_AVAILABLE after COMPLETED with every instance stored: %v, want 1 for %s", n, done)
	}
	st, err = c.NSetMPPS(ctx, completed)
	expect("the same N-SET COMPLETED resent", st, err, dimse.StatusSuccess)
	st, err = c.NSetMPPS(ctx, scu.MPPS{SOPInstanceUID: step, Status: "DISCONTINUED"})
	expect("N-SET DISCONTINUED of a COMPLETED step", st, err, dimse.StatusProcessingFailure)

	// DISCONTINUED is final: a late COMPLETED does not complete its study.
	st, err = c.NCreateMPPS(ctx, scu.MPPS{SOPInstanceUID: other, Status: "IN PROGRESS", PatientID: "MRN4711", StudyInstanceUID: dropped, AccessionNumber: "ACC1001"})
	expect("N-CREATE of the second step", st, err, dimse.StatusSuccess)
	st, err = c.NSetMPPS(ctx, scu.MPPS{SOPInstanceUID: other, Status: "DISCONTINUED"})
	expect("N-SET DISCONTINUED", st, err, dimse.StatusSuccess)
	st, err = c.NSetMPPS(ctx, scu.MPPS{SOPInstanceUID: other, Status: "COMPLETED", Series: series(dropped)})
	expect("N-SET COMPLETED of a DISCONTINUED step", st, err, dimse.StatusProcessingFailure)
	if n := available(); n[dropped] != 0 || n[done] != 1 {
		t.Errorf("IMAGING_STUDY_AVAILABLE per study after the refused N-SETs: %v, want only %s once", n, done)
	}

	// The states are in the store: a restarted daemon judges alike.
	third := scu.NewUID()
	st, err = c.NCreateMPPS(ctx, scu.MPPS{SOPInstanceUID: third, Status: "IN PROGRESS", StudyInstanceUID: dropped})
	expect("N-CREATE of a third step", st, err, dimse.StatusSuccess)
	c.Close()
	stop()
	d, _ = runDaemon(t, dir, slog.New(slog.DiscardHandler), "--dicom-addr", "127.0.0.1:0", "--study-quiet-period", "10m")
	base = "http://" + d.HTTPAddr()
	c = dial(d.DICOMAddr())
	st, err = c.NSetMPPS(ctx, scu.MPPS{SOPInstanceUID: other, Status: "COMPLETED", Series: series(dropped)})
	expect("after a restart: N-SET COMPLETED of the DISCONTINUED step", st, err, dimse.StatusProcessingFailure)
	st, err = c.NSetMPPS(ctx, scu.MPPS{SOPInstanceUID: third, Status: "DISCONTINUED"})
	expect("after a restart: N-SET DISCONTINUED of the step in progress", st, err, dimse.StatusSuccess)
	if n := available(); n[dropped] != 0 {
		t.Errorf("IMAGING_STUDY_AVAILABLE after the restart: %v", n)
	}
}
