package mapper_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
)

// reconcile records an operator's correction and returns its events.
func (h *dicomHarness) reconcile(r ingest.Reconcile) []*rbv1.Event {
	h.t.Helper()
	r.Actor, r.Reason = "alice", "test"
	o, err := ingest.NewReconcile(r, "", "127.0.0.1:1", time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	seq, _, err := h.in.Append(context.Background(), o)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := h.m.Await(ctx, seq)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

// orderACC77 places an order of MRN123 with accession ACC77.
func (h *dicomHarness) orderACC77() {
	h.t.Helper()
	msg := "MSH|^~\\&|RIS|HOSP|RADBRIDGE|HOSP|20240305140000||ORM^O01|CTL77|P|2.5.1\rPID|1||MRN123^^^HOSP^MR||DOE^JANE\rORC|NW|P77|F77||||||20240305140000\rOBR|1|P77|F77|CT^CT CHEST" + strings.Repeat("|", 14) + "ACC77\r"
	o, err := ingest.NewHL7([]byte(msg), "RIS", "HOSP", "CTL77", time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	seq, _, err := h.in.Append(context.Background(), o)
	if err != nil {
		h.t.Fatal(err)
	}
	if got := h.await(seq); len(got) != 1 || got[0] != rbv1.EventType_ORDER_PLACED {
		h.t.Fatalf("order: %v", got)
	}
}

func basedOn(ev *rbv1.Event) string {
	return strings.TrimSpace(strings.Join(func() []string {
		var out []string
		l, _ := ev.Resource.AsMap()["basedOn"].([]any)
		for _, x := range l {
			out = append(out, x.(map[string]any)["reference"].(string))
		}
		return out
	}(), " "))
}

// TestReconcileLinkUnlinkEnteredInError: an operator links a study whose
// images carry another accession to its order, unlinks it, and withdraws
// it; each correction derives the update a consumer needs, and Explain
// shows it.
func TestReconcileLinkUnlinkEnteredInError(t *testing.T) {
	h := newDICOMHarness(t)
	h.orderACC77()
	h.store(ctInstance(1)) // accession ACC42: no order
	h.settleQuiet()
	ex, err := h.m.Exceptions(t.Context(), time.Now().Add(time.Hour), rules.ExceptionRules{UnorderedAfter: time.Minute, OrderGrace: time.Minute}, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, e := range ex {
		kinds[e.Kind]++
	}
	if kinds[rules.ExceptionStudyWithoutOrder] != 1 || kinds[rules.ExceptionOrderWithoutImages] != 1 {
		t.Errorf("exceptions %v", ex)
	}

	evs := h.reconcile(ingest.Reconcile{Action: ingest.ReconcileLink, Study: studyUID, Order: "ACC77"})
	var study, order *rbv1.Event
	for _, e := range evs {
		switch e.ResourceType {
		case "ImagingStudy":
			study = e
		case "ServiceRequest":
			order = e
		}
	}
	if study == nil || study.Type != rbv1.EventType_IMAGING_STUDY_UPDATED || study.AccessionNumber != "ACC77" || !strings.HasPrefix(basedOn(study), "ServiceRequest/") {
		t.Fatalf("link: study event %v", study)
	}
	if order == nil || order.Type != rbv1.EventType_ORDER_UPDATED || order.Resource.AsMap()["status"] != "completed" {
		t.Errorf("link: order event %v", order)
	}
	// A later instance keeps the linked accession.
	in := ctInstance(2)
	h.store(in)
	h.settleQuiet()
	evs = h.events()
	if last := evs[len(evs)-1]; last.AccessionNumber != "ACC77" || basedOn(last) == "" {
		t.Errorf("after a later instance: %v %q", last.AccessionNumber, basedOn(last))
	}

	evs = h.reconcile(ingest.Reconcile{Action: ingest.ReconcileUnlink, Study: studyUID})
	if len(evs) != 1 || evs[0].Type != rbv1.EventType_IMAGING_STUDY_UPDATED || basedOn(evs[0]) != "" {
		t.Fatalf("unlink: %v", evs)
	}
	e, err := h.m.Explain(t.Context(), rules.ExplainQuery{Study: studyUID}, time.Now(), func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Studies) != 1 || e.Studies[0].Order.WhyNot != "unlinked by an operator" || len(e.Studies[0].Actions) != 2 || e.Studies[0].Actions[0].Actor != "alice" {
		t.Errorf("explained after unlink: %+v", e.Studies)
	}

	evs = h.reconcile(ingest.Reconcile{Action: ingest.ReconcileEnteredInError, Study: studyUID})
	if len(evs) != 1 || evs[0].Resource.AsMap()["status"] != "entered-in-error" || evs[0].Severity != rbv1.Severity_SEVERITY_WARNING {
		t.Fatalf("entered-in-error: %v", evs)
	}
	if p := h.rm.Patient("MRN123"); !strings.Contains(string(p.Studies[studyUID]), `"status":"entered-in-error"`) {
		t.Errorf("read model %s", p.Studies[studyUID])
	}
	// A later instance does not bring it back.
	n := len(h.events())
	h.store(ctInstance(3))
	h.settleQuiet()
	for _, ev := range h.events()[n:] {
		if ev.Type == rbv1.EventType_IMAGING_STUDY_AVAILABLE || ev.Resource.AsMap()["status"] == "available" {
			t.Errorf("after entered-in-error: %v %q", ev.Type, ev.Message)
		}
	}
	if err := h.m.CheckReconcile(t.Context(), ingest.Reconcile{Action: ingest.ReconcileEnteredInError, Study: studyUID}); err == nil {
		t.Error("CheckReconcile accepts a second entered-in-error")
	}
	if err := h.m.CheckReconcile(t.Context(), ingest.Reconcile{Action: ingest.ReconcileMove, Study: "1.2.3.404", Patient: "X"}); err == nil {
		t.Error("CheckReconcile accepts an unknown study")
	}
}
