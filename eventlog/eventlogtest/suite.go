// Package eventlogtest is the conformance suite every eventlog.Log backend
// runs.
package eventlogtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Run runs the suite; open returns a new, empty log.
func Run(t *testing.T, open func(t *testing.T) eventlog.Log) {
	t.Run("AppendReadInOrder", func(t *testing.T) { appendRead(t, open(t)) })
	t.Run("IdempotentAppend", func(t *testing.T) { idempotent(t, open(t)) })
	t.Run("Filters", func(t *testing.T) { filters(t, open(t)) })
	t.Run("WatchCatchUpThenLive", func(t *testing.T) { watch(t, open(t)) })
}

func ev(i int, patient string, typ rbv1.EventType) *rbv1.Event {
	return &rbv1.Event{
		Id:           fmt.Sprintf("id-%d", i),
		Type:         typ,
		PatientId:    patient,
		ResourceType: "ImagingStudy",
		Message:      fmt.Sprintf("event %d", i),
	}
}

func appendRead(t *testing.T, l eventlog.Log) {
	ctx := context.Background()
	if f, last, err := l.Bounds(ctx); err != nil || f != 0 || last != 0 {
		t.Fatalf("Bounds of empty log = %d, %d, %v; want 0, 0, nil", f, last, err)
	}
	for i := 1; i <= 5; i++ {
		seq, err := l.Append(ctx, eventlog.Key{IngestSeq: uint64(i)}, ev(i, "P1", rbv1.EventType_IMAGING_STUDY_AVAILABLE))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("Append #%d got sequence %d", i, seq)
		}
	}
	got, err := l.Read(ctx, 2, eventlog.Filter{}, 3)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range got {
		seqs = append(seqs, e.Sequence)
	}
	if diff := cmp.Diff(seqs, []uint64{2, 3, 4}); diff != "" {
		t.Errorf("Read(2, max 3) sequences (-got +want):\n%s", diff)
	}
	want := ev(2, "P1", rbv1.EventType_IMAGING_STUDY_AVAILABLE)
	want.Sequence = 2
	if diff := cmp.Diff(got[0], want, protocmp.Transform()); diff != "" {
		t.Errorf("stored event differs (-got +want):\n%s", diff)
	}
	if f, last, _ := l.Bounds(ctx); f != 1 || last != 5 {
		t.Errorf("Bounds = %d, %d; want 1, 5", f, last)
	}
	k, err := l.LastKey(ctx)
	if err != nil || k != (eventlog.Key{IngestSeq: 5}) {
		t.Errorf("LastKey = %v, %v; want {5 0}", k, err)
	}
	if got, _ := l.Read(ctx, 6, eventlog.Filter{}, 10); len(got) != 0 {
		t.Errorf("Read past the end returned %d events", len(got))
	}
}

func idempotent(t *testing.T, l eventlog.Log) {
	ctx := context.Background()
	k := eventlog.Key{IngestSeq: 7, Index: 1}
	s1, err := l.Append(ctx, k, ev(1, "P1", rbv1.EventType_ORDER_PLACED))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := l.Append(ctx, k, ev(1, "P1", rbv1.EventType_ORDER_PLACED))
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Errorf("re-append of key %v got sequence %d, first append %d", k, s2, s1)
	}
	if _, last, _ := l.Bounds(ctx); last != 1 {
		t.Errorf("log holds %d events after a duplicate append, want 1", last)
	}
}

func filters(t *testing.T, l eventlog.Log) {
	ctx := context.Background()
	types := []rbv1.EventType{rbv1.EventType_ORDER_PLACED, rbv1.EventType_IMAGING_REPORT_READY}
	patients := []string{"P1", "P.2 *>", ""}
	i := 0
	for _, p := range patients {
		for _, ty := range types {
			i++
			if _, err := l.Append(ctx, eventlog.Key{IngestSeq: uint64(i)}, ev(i, p, ty)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name string
		f    eventlog.Filter
		want []uint64
	}{
		{"all", eventlog.Filter{}, []uint64{1, 2, 3, 4, 5, 6}},
		{"patient with subject characters", eventlog.Filter{PatientIDs: []string{"P.2 *>"}}, []uint64{3, 4}},
		{"type", eventlog.Filter{Types: []rbv1.EventType{rbv1.EventType_IMAGING_REPORT_READY}}, []uint64{2, 4, 6}},
		{"patient and type", eventlog.Filter{PatientIDs: []string{"P1", "P.2 *>"}, Types: []rbv1.EventType{rbv1.EventType_ORDER_PLACED}}, []uint64{1, 3}},
		{"resource type", eventlog.Filter{ResourceTypes: []string{"DiagnosticReport"}}, nil},
		{"unknown patient", eventlog.Filter{PatientIDs: []string{"nobody"}}, nil},
	} {
		got, err := l.Read(ctx, 1, tc.f, 100)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var seqs []uint64
		for _, e := range got {
			seqs = append(seqs, e.Sequence)
		}
		if diff := cmp.Diff(seqs, tc.want); diff != "" {
			t.Errorf("%s: sequences (-got +want):\n%s", tc.name, diff)
		}
	}
}

func watch(t *testing.T, l eventlog.Log) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		if _, err := l.Append(ctx, eventlog.Key{IngestSeq: uint64(i)}, ev(i, "P1", rbv1.EventType_ORDER_PLACED)); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan uint64, 10)
	done := make(chan error, 1)
	errStop := errors.New("stop")
	go func() {
		done <- l.Watch(ctx, 2, func(e *rbv1.Event) error {
			got <- e.Sequence
			if e.Sequence == 5 {
				return errStop
			}
			return nil
		})
	}()
	for _, want := range []uint64{2, 3} {
		if s := <-got; s != want {
			t.Fatalf("Watch delivered %d, want %d", s, want)
		}
	}
	for i := 4; i <= 5; i++ {
		if _, err := l.Append(ctx, eventlog.Key{IngestSeq: uint64(i)}, ev(i, "P1", rbv1.EventType_ORDER_PLACED)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []uint64{4, 5} {
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("Watch delivered %d, want %d", s, want)
			}
		case <-ctx.Done():
			t.Fatalf("Watch did not deliver live event %d", want)
		}
	}
	if err := <-done; !errors.Is(err, errStop) {
		t.Errorf("Watch returned %v, want the callback's error", err)
	}
}
