package rules

import (
	"fmt"
	"slices"

	"radbridge/ingest"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Reconcile actions (ingest.KindReconcile), as the exceptions worklist
// proposes them.
const (
	ReconcileLink           = ingest.ReconcileLink
	ReconcileUnlink         = ingest.ReconcileUnlink
	ReconcileMove           = ingest.ReconcileMove
	ReconcileEnteredInError = ingest.ReconcileEnteredInError
)

// studyActionsKept bounds StudyState.Actions.
const studyActionsKept = 32

// reconcile applies an operator's correction of a study (README,
// "Explain and reconcile"):
//   - move: the study belongs to patient r.Patient from now on, whatever
//     Patient ID its images carry. The patient it leaves gets
//     IMAGING_STUDY_UPDATED with the ImagingStudy entered-in-error (so its
//     subscribers drop it; the new patient is not named there) and loses
//     it from its read model; the new patient gets IMAGING_STUDY_UPDATED
//     (PROGRESS while it is still arriving) and the study joins its orders.
//   - link: the study takes the accession number of the order r.Order (a
//     ServiceRequest id or accession of the study's patient) and joins it;
//     later instances do not change it.
//   - unlink: the study joins no order (basedOn removed) until linked.
//   - entered-in-error: IMAGING_STUDY_UPDATED with status
//     entered-in-error; it joins nothing and never becomes available.
//
// A correction naming a study or order the state does not hold changes
// nothing (the API checks before it records one).
func (d *dicomMapper) reconcile(c *Context) error {
	r, err := ingest.DecodeReconcile(c.Rec.Observation)
	if err != nil {
		return err
	}
	st := c.State.study(r.Study)
	if st == nil {
		return nil
	}
	act := Action{IngestSeq: c.Rec.Seq, Time: c.Rec.Time, Action: r.Action, Actor: r.Actor, Reason: r.Reason}
	from := st.ReadModelPatient
	typ := rbv1.EventType_IMAGING_STUDY_UPDATED
	if !st.AvailableSent {
		typ = rbv1.EventType_IMAGING_STUDY_PROGRESS
	}
	var msg string
	switch r.Action {
	case ReconcileMove:
		if r.Patient == from {
			return nil
		}
		act.Detail = fmt.Sprintf("moved from patient %s to %s", from, r.Patient)
		if from != "" {
			// The patient it leaves: the study is withdrawn there.
			res := imagingStudy(st, "entered-in-error", d.o)
			if pb := toStruct(res); pb != nil {
				c.Emit(&rbv1.Event{Type: rbv1.EventType_IMAGING_STUDY_UPDATED, PatientId: from, StudyInstanceUid: st.UID,
					Severity: rbv1.Severity_SEVERITY_WARNING, Message: "Imaging study moved to another patient by an operator: " + st.label(),
					Priority: rbv1.Priority_PRIORITY_ROUTINE, ResourceType: "ImagingStudy", ResourceId: StudyResourceID(st.UID), Resource: pb})
			}
			c.State.dropStudyRefs(st.UID, from)
		}
		st.PatientOverride = r.Patient
		msg = "Imaging study moved to this patient by an operator: " + st.label()
	case ReconcileLink:
		o := c.State.findOrder(studyPatient(st), r.Order)
		if o == nil || o.Accession == "" {
			return nil
		}
		act.Detail = "linked to order " + o.ResourceID + " (accession " + o.Accession + ")"
		c.State.dropStudyRefs(st.UID, from)
		st.AccessionNumber, st.AccessionLinked, st.Unlinked = o.Accession, true, false
		msg = "Imaging study linked to its order by an operator: " + st.label()
	case ReconcileUnlink:
		if st.Unlinked {
			return nil
		}
		act.Detail = "unlinked from its orders"
		st.Unlinked = true
		c.State.dropStudyRefs(st.UID, from)
		msg = "Imaging study unlinked from its order by an operator: " + st.label()
	case ReconcileEnteredInError:
		if st.EnteredInError {
			return nil
		}
		st.EnteredInError = true
		c.Cancel(quietKey(st.UID))
		c.State.dropStudyRefs(st.UID, from)
		typ = rbv1.EventType_IMAGING_STUDY_UPDATED
		msg = "Imaging study entered in error (withdrawn by an operator): " + st.label()
	default:
		return fmt.Errorf("reconcile: unknown action %q", r.Action)
	}
	if len(st.Actions) < studyActionsKept {
		st.Actions = append(st.Actions, act)
	}
	st.record(c.Rec.Seq)
	if st.ReadModelPatient == "" && st.PatientOverride == "" && len(st.Series) == 0 {
		return nil // nothing announced yet: the study's first event carries it
	}
	sev := rbv1.Severity_SEVERITY_INFO
	if r.Action == ReconcileEnteredInError {
		sev = rbv1.Severity_SEVERITY_WARNING
	}
	return d.emit(c, st, typ, sev, msg)
}

// dropStudyRefs removes study uid of patient pid from the accession index,
// so that the orders and reports of its accessions are joined again
// without it.
func (s *State) dropStudyRefs(uid, pid string) {
	ref := ResourceRef{Patient: pid, Type: "ImagingStudy", ID: StudyResourceID(uid)}
	for _, acc := range sortedMapKeys(s.Accessions) {
		refs := s.Accessions[acc]
		if i := slices.Index(refs, ref); i >= 0 {
			refs = slices.Delete(slices.Clone(refs), i, i+1)
			if len(refs) == 0 {
				delete(s.Accessions, acc)
			} else {
				s.Accessions[acc] = refs
			}
		}
	}
}

// findOrder returns patient pid's order whose ServiceRequest id or
// accession is id, or nil.
func (s *State) findOrder(pid, id string) *OrderState {
	for _, k := range sortedMapKeys(s.Orders) {
		if o := s.Orders[k]; o.PatientID == pid && (o.ResourceID == id || o.Accession == id) {
			return o
		}
	}
	return nil
}

// CheckReconcile reports why a correction cannot apply to the current
// state (nil: it can): the study must be known (in memory), a link's
// order must be one of the study's patient's, a move must change the
// patient.
func (s *State) CheckReconcile(r ingest.Reconcile) error {
	st := s.Studies[r.Study]
	if st == nil {
		return fmt.Errorf("no study %s is known (or its patient is not in memory)", r.Study)
	}
	pid := studyPatient(st)
	switch r.Action {
	case ReconcileMove:
		if r.Patient == pid {
			return fmt.Errorf("the study is already that patient's")
		}
	case ReconcileLink:
		if o := s.findOrder(pid, r.Order); o == nil || o.Accession == "" {
			return fmt.Errorf("no order %s with an accession number for the study's patient (move the study to the order's patient first)", r.Order)
		}
	case ReconcileUnlink:
		if st.Unlinked {
			return fmt.Errorf("the study is unlinked already")
		}
	case ReconcileEnteredInError:
		if st.EnteredInError {
			return fmt.Errorf("the study is entered in error already")
		}
	}
	return nil
}
