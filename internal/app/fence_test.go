package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/internal/app"
	"radbridge/internal/config"
	"radbridge/internal/natstest"
	"radbridge/internal/testkit"
	"radbridge/mapper"
	"radbridge/readmodel"
	"radbridge/store"
)

// pausingReadModel is the stall of a paused process (GC, a VM stopped):
// the first write blocks until the test lets it go, then goes to the real
// store.
type pausingReadModel struct {
	*store.Patients
	paused  chan struct{} // closed when the first write blocks
	resume  chan struct{} // closed by the test
	written chan error    // the paused write's result
	armed   bool
}

func (p *pausingReadModel) PutPatientAt(ctx context.Context, pt *readmodel.Patient, applied uint64) error {
	if !p.armed {
		return p.Patients.PutPatientAt(ctx, pt, applied)
	}
	p.armed = false
	close(p.paused)
	<-p.resume
	// The process is being stopped meanwhile (the test cancels it so that
	// it writes nothing after this); the write itself goes through.
	err := p.Patients.PutPatientAt(context.WithoutCancel(ctx), pt, applied)
	p.written <- err
	return err
}

// TestPausedLeaderCannotRewindReadModel: two processes share one
// JetStream. The first maps a patient's two views and stalls just before
// writing the read model; the second takes over, maps two more views and
// writes the patient at 4 views; the first wakes up and writes its read
// model of 2 views. The read model GetPatientImaging serves stays at 4.
func TestPausedLeaderCannotRewindReadModel(t *testing.T) {
	ns := natstest.Server(t, store.MaxPayload)
	cfg, err := config.Load("test", []string{"--nats-url", ns.ClientURL()}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	open := func() *store.Store {
		st, err := store.Open(ctx, store.Config{NATSURL: ns.ClientURL()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st
	}
	first, second := open(), open()
	view := func(i int) {
		b, _ := json.Marshal(ingest.Viewed{PatientID: "MRN-F", StudyInstanceUID: "1.2.3.4", ViewerID: fmt.Sprint("dr-", i)})
		o := ingest.Observation{Kind: ingest.KindViewed, Key: fmt.Sprint("api:view-", i), Time: time.Now().UTC(), Body: b}
		if _, _, err := first.Ingest().Append(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	views := func() (uint64, uint32) {
		p, err := second.Patients().Patient(ctx, "MRN-F")
		if err != nil {
			t.Fatal(err)
		}
		if p == nil {
			return 0, 0
		}
		return p.LastSequence, p.Views["1.2.3.4"]
	}

	view(1)
	view(2)
	rm := &pausingReadModel{Patients: first.Patients(), armed: true,
		paused: make(chan struct{}), resume: make(chan struct{}), written: make(chan error, 1)}
	c1 := app.CleanReplayConfig(cfg, first)
	c1.ReadModel = rm
	ctx1, stop1 := context.WithCancel(ctx)
	done1 := make(chan error, 1)
	go func() { done1 <- mapper.New(c1).Run(ctx1) }()
	resumed := false
	defer func() {
		stop1()
		if !resumed {
			close(rm.resume)
		}
		<-done1
	}()
	select {
	case <-rm.paused:
	case <-time.After(time.Minute):
		t.Fatal("the first mapper never wrote a read model")
	}

	// The successor: the first one's lease expired.
	view(3)
	view(4)
	ctx2, stop2 := context.WithCancel(ctx)
	done2 := make(chan error, 1)
	go func() { done2 <- mapper.New(app.CleanReplayConfig(cfg, second)).Run(ctx2) }()
	if !testkit.Poll(60*time.Second, func() bool { seq, n := views(); return seq == 4 && n == 4 }) {
		seq, n := views()
		t.Fatalf("the successor's read model: sequence %d, %d views; want 4 and 4", seq, n)
	}
	stop2()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}

	// The first process wakes up and writes what it computed before, then
	// stops (it would map on and lose its lease).
	stop1()
	resumed = true
	close(rm.resume)
	select {
	case err := <-rm.written:
		if !errors.Is(err, store.ErrSuperseded) {
			t.Errorf("the stale write: %v, want ErrSuperseded", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the stale write never finished")
	}
	if err := <-done1; err != nil {
		t.Errorf("first mapper: %v", err)
	}
	done1 <- nil
	if seq, n := views(); seq != 4 || n != 4 {
		t.Errorf("after the stale write the read model is at sequence %d with %d views; want 4 and 4", seq, n)
	}
}
