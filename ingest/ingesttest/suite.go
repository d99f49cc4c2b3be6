// Package ingesttest is the conformance suite every ingest.Log backend
// runs: what the receivers and the mapper rely on (durable order, dedup by
// key, every observation read back exactly as it was written). It also
// holds Recorder, the in-memory handler the receivers' tests give them.
package ingesttest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/ingest"
)

// Run runs the suite; open returns a new, empty log.
func Run(t *testing.T, open func(t *testing.T) ingest.Log) {
	t.Run("AppendGetInOrder", func(t *testing.T) { appendGet(t, open(t)) })
	t.Run("DuplicateKey", func(t *testing.T) { duplicate(t, open(t)) })
	t.Run("EveryKindRoundTrips", func(t *testing.T) { roundTrip(t, open(t)) })
	t.Run("WatchCatchUpThenLive", func(t *testing.T) { watch(t, open(t)) })
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// observations returns one observation of every kind, built by package
// ingest's constructors as the receivers build them.
func observations(t *testing.T) []ingest.Observation {
	t.Helper()
	peer := ingest.Peer{CallingAE: "MOD", CalledAE: "RADBRIDGE", RemoteAddr: "127.0.0.1:4000"}
	var out []ingest.Observation
	add := func(o ingest.Observation, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, o)
	}
	add(ingest.NewHL7([]byte("MSH|^~\\&|RIS|HOSP|RB|HOSP|20261201100000||ORM^O01|C1|P|2.5.1\rPID|1||MRN1^^^HOSP^MR||ÇAĞRI^ZOË\r"), "RIS", "HOSP", "C1", t0))
	add(ingest.NewInstance(&ingest.Instance{Peer: peer, SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: "1.2.3.1.1", StudyInstanceUID: "1.2.3", SeriesInstanceUID: "1.2.3.1",
		PatientID: "MRN1", PatientName: "ÇAĞRI^ZOË", SeriesNumber: 1, InstanceNumber: 1, Size: 10, ReceivedAt: t0.Add(time.Second)}))
	add(ingest.NewIAN(&ingest.IAN{Peer: peer, SOPInstanceUID: "1.2.9", StudyInstanceUID: "1.2.3",
		Series: []ingest.IANSeries{{SeriesInstanceUID: "1.2.3.1", Instances: []ingest.IANInstance{{SOPInstanceUID: "1.2.3.1.1", InstanceAvailability: "ONLINE"}}}}, ReceivedAt: t0.Add(2 * time.Second)}))
	add(ingest.NewMPPS(&ingest.MPPSUpdate{Peer: peer, SOPInstanceUID: "1.2.8", Create: true, Status: ingest.MPPSInProgress, StudyInstanceUIDs: []string{"1.2.3"}, ReceivedAt: t0.Add(3 * time.Second)}))
	add(ingest.NewViewed(ingest.Viewed{PatientID: "MRN1", StudyInstanceUID: "1.2.3", ViewerName: "Dr Ö"}, "ev-1", "127.0.0.1:5000", t0.Add(4*time.Second)))
	add(ingest.NewTimer(&ingest.Timer{Key: "quiet:1.2.3", Kind: ingest.KindDICOMInstance, At: t0.Add(time.Minute), Body: []byte(`{"study":"1.2.3"}`)}, t0.Add(time.Minute)))
	return out
}

func appendGet(t *testing.T, l ingest.Log) {
	ctx := context.Background()
	if last, err := l.Last(ctx); err != nil || last != 0 {
		t.Fatalf("Last of an empty log = %d, %v; want 0", last, err)
	}
	if _, err := l.Get(ctx, 1); !errors.Is(err, ingest.ErrNotFound) {
		t.Fatalf("Get(1) of an empty log: %v, want ErrNotFound", err)
	}
	obs := observations(t)
	for i, o := range obs {
		seq, dup, err := l.Append(ctx, o)
		if err != nil || dup || seq != uint64(i+1) {
			t.Fatalf("Append %s = %d, %v, %v; want %d, false, nil", o.Kind, seq, dup, err, i+1)
		}
	}
	if last, err := l.Last(ctx); err != nil || last != uint64(len(obs)) {
		t.Fatalf("Last = %d, %v; want %d", last, err, len(obs))
	}
	for i, want := range obs {
		got, err := l.Get(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != uint64(i+1) {
			t.Errorf("Get(%d).Seq = %d", i+1, got.Seq)
		}
		if d := cmp.Diff(got.Observation, want); d != "" {
			t.Errorf("Get(%d) (-got +want):\n%s", i+1, d)
		}
	}
	if _, err := l.Get(ctx, uint64(len(obs)+1)); !errors.Is(err, ingest.ErrNotFound) {
		t.Errorf("Get past the end: %v, want ErrNotFound", err)
	}
}

func duplicate(t *testing.T, l ingest.Log) {
	ctx := context.Background()
	raw := "MSH|^~\\&|RIS|HOSP|RB|HOSP|20261201100000||ORM^O01|C1|P|2.5.1\rPID|1||MRN1\rORC|NW|P1\r"
	first, _ := ingest.NewHL7([]byte(raw), "RIS", "HOSP", "C1", t0)
	resend, _ := ingest.NewHL7([]byte(strings.Replace(raw, "20261201100000", "20261201100500", 1)), "RIS", "HOSP", "C1", t0.Add(time.Minute))
	reuse, _ := ingest.NewHL7([]byte(raw[:len(raw)-3]+"P2\r"), "RIS", "HOSP", "C1", t0.Add(2*time.Minute))
	s1, dup, err := l.Append(ctx, first)
	if err != nil || dup {
		t.Fatalf("first: %d %v %v", s1, dup, err)
	}
	s2, dup, err := l.Append(ctx, resend)
	if err != nil || !dup || s2 != s1 {
		t.Errorf("resend (MSH-7 restamped): %d, %v, %v; want %d, a duplicate", s2, dup, err, s1)
	}
	s3, dup, err := l.Append(ctx, reuse)
	if err != nil || dup || s3 != s1+1 {
		t.Errorf("reused control id, other content: %d, %v, %v; want %d, recorded", s3, dup, err, s1+1)
	}
	if last, _ := l.Last(ctx); last != s1+1 {
		t.Errorf("Last = %d, want %d", last, s1+1)
	}
}

func roundTrip(t *testing.T, l ingest.Log) {
	ctx := context.Background()
	obs := observations(t)
	for _, o := range obs {
		if _, _, err := l.Append(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	check := func(kind string, decode func(ingest.Observation) (any, error), want any) {
		t.Helper()
		for seq := uint64(1); seq <= uint64(len(obs)); seq++ {
			r, err := l.Get(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != kind {
				continue
			}
			got, err := decode(r.Observation)
			if err != nil {
				t.Fatalf("decode %s: %v", kind, err)
			}
			if d := cmp.Diff(got, want); d != "" {
				t.Errorf("%s read back (-got +want):\n%s", kind, d)
			}
			return
		}
		t.Errorf("no %s read back", kind)
	}
	for _, o := range obs {
		var want any
		var decode func(ingest.Observation) (any, error)
		switch o.Kind {
		case ingest.KindHL7:
			want, _ = ingest.DecodeHL7(o)
			decode = func(o ingest.Observation) (any, error) { return ingest.DecodeHL7(o) }
		case ingest.KindDICOMInstance:
			want, _ = ingest.DecodeInstance(o)
			decode = func(o ingest.Observation) (any, error) { return ingest.DecodeInstance(o) }
		case ingest.KindDICOMIAN:
			want, _ = ingest.DecodeIAN(o)
			decode = func(o ingest.Observation) (any, error) { return ingest.DecodeIAN(o) }
		case ingest.KindDICOMMPPS:
			want, _ = ingest.DecodeMPPS(o)
			decode = func(o ingest.Observation) (any, error) { return ingest.DecodeMPPS(o) }
		case ingest.KindViewed:
			want, _ = ingest.DecodeViewed(o)
			decode = func(o ingest.Observation) (any, error) { return ingest.DecodeViewed(o) }
		case ingest.KindTimer:
			want, _ = ingest.DecodeTimer(o)
			decode = func(o ingest.Observation) (any, error) { return ingest.DecodeTimer(o) }
		}
		check(o.Kind, decode, want)
	}
	if _, err := ingest.DecodeInstance(obs[0]); err == nil {
		t.Error("an HL7 observation decoded as an instance")
	}
}

func watch(t *testing.T, l ingest.Log) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obs := observations(t)
	for _, o := range obs[:3] {
		if _, _, err := l.Append(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan ingest.Record, len(obs))
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- l.Watch(wctx, 2, func(r ingest.Record) error { got <- r; return nil })
	}()
	for _, o := range obs[3:] {
		if _, _, err := l.Append(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(2); seq <= uint64(len(obs)); seq++ {
		select {
		case r := <-got:
			if r.Seq != seq {
				t.Fatalf("Watch delivered %d, want %d", r.Seq, seq)
			}
			if d := cmp.Diff(r.Observation, obs[seq-1]); d != "" {
				t.Errorf("Watch record %d (-got +want):\n%s", seq, d)
			}
		case <-ctx.Done():
			t.Fatalf("Watch delivered nothing for %d", seq)
		}
	}
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Watch ended with %v", err)
	}
}
