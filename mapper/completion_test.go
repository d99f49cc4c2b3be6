package mapper_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"radbridge/ingest"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
)

// TestCompletionReasons: IMAGING_STUDY_AVAILABLE says why the study
// counts as complete, with the evidence, in the event and in the
// ImagingStudy's completion-reason extension; later events keep the
// extension (the resource's state), not the event field.
func TestCompletionReasons(t *testing.T) {
	for _, tc := range []struct {
		name string
		feed func(h *dicomHarness)
		want *rbv1.Completion
	}{
		{"quiet period", func(h *dicomHarness) {
			h.store(ctInstance(1))
			h.store(ctInstance(2))
		}, &rbv1.Completion{Reason: rules.CompletedByQuietPeriod, InstancesReceived: 2}},
		{"IAN", func(h *dicomHarness) {
			h.store(ctInstance(1))
			h.ian(ianFor(ctInstance(1), ctInstance(2), ctInstance(3)))
		}, &rbv1.Completion{Reason: rules.CompletedByIAN, InstancesReceived: 1, InstancesExpected: 3, ExpectedFrom: []string{"ian"}}},
		{"MPPS completed, then the last instance", func(h *dicomHarness) {
			h.mpps(mppsCreate())
			h.store(ctInstance(1))
			h.mpps(mppsSet(ingest.MPPSCompleted, ctInstance(1), ctInstance(2)))
			h.store(ctInstance(2))
		}, &rbv1.Completion{Reason: rules.CompletedByMPPS, InstancesReceived: 2, InstancesExpected: 2, ExpectedFrom: []string{"mpps"}}},
		{"instances, then MPPS completed", func(h *dicomHarness) {
			h.mpps(mppsCreate())
			h.store(ctInstance(1))
			h.store(ctInstance(2))
			h.mpps(mppsSet(ingest.MPPSCompleted, ctInstance(1), ctInstance(2)))
		}, &rbv1.Completion{Reason: rules.CompletedByMPPS, InstancesReceived: 2, InstancesExpected: 2, ExpectedFrom: []string{"mpps"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newDICOMHarness(t)
			tc.feed(h)
			h.settleQuiet()
			var avail *rbv1.Event
			for _, e := range h.events() {
				if e.Type == rbv1.EventType_IMAGING_STUDY_AVAILABLE {
					if avail != nil {
						t.Fatalf("two AVAILABLE events: %v", studySummaries(h.events()))
					}
					avail = e
				} else if e.Completion != nil {
					t.Errorf("%v carries a completion: %v", e.Type, e.Completion)
				}
			}
			if avail == nil {
				t.Fatalf("no AVAILABLE event: %v", studySummaries(h.events()))
			}
			got := avail.GetCompletion()
			if got.GetIngestSequence() == 0 {
				t.Errorf("completion names no ingest record: %v", got)
			}
			if diff := cmp.Diff(got, tc.want, protocmp.Transform(), protocmp.IgnoreFields(&rbv1.Completion{}, "ingest_sequence")); diff != "" {
				t.Errorf("completion (-got +want):\n%s", diff)
			}
			ext := completionExt(avail.Resource.AsMap())
			if ext["reason"] != tc.want.Reason || ext["instancesReceived"] != float64(tc.want.InstancesReceived) {
				t.Errorf("ImagingStudy completion-reason extension %v, want reason %s and %d received", ext, tc.want.Reason, tc.want.InstancesReceived)
			}
			if tc.want.InstancesExpected > 0 && ext["instancesExpected"] != float64(tc.want.InstancesExpected) {
				t.Errorf("extension instancesExpected %v, want %d", ext["instancesExpected"], tc.want.InstancesExpected)
			}
		})
	}
}

// completionExt returns the completion-reason extension's parts by name
// (the last value of a repeated part).
func completionExt(res map[string]any) map[string]any {
	out := map[string]any{}
	exts, _ := res["extension"].([]any)
	for _, e := range exts {
		m, _ := e.(map[string]any)
		if m["url"] != rules.CompletionExtension {
			continue
		}
		subs, _ := m["extension"].([]any)
		for _, s := range subs {
			sm, _ := s.(map[string]any)
			for k, v := range sm {
				if k != "url" {
					out[sm["url"].(string)] = v
				}
			}
		}
	}
	return out
}
