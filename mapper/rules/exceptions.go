package rules

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Exception kinds (the exceptions worklist, GET /v1/exceptions).
const (
	// ExceptionStudyWithoutOrder: a study joined no order for
	// ExceptionRules.UnorderedAfter since it arrived.
	ExceptionStudyWithoutOrder = "study-without-order"
	// ExceptionOrderWithoutImages: an order (not cancelled) has no study
	// past its scheduled time (else its time of entry) plus
	// ExceptionRules.OrderGrace.
	ExceptionOrderWithoutImages = "order-without-images"
	// ExceptionReportWithoutStudy: a report whose accession names no study
	// of its patient.
	ExceptionReportWithoutStudy = "report-without-study"
	// ExceptionAccessionTwoPatients: one accession number on resources of
	// several patients (never linked).
	ExceptionAccessionTwoPatients = "accession-two-patients"
	// ExceptionIssuerConflict: a study whose Issuer of Patient ID is not
	// the hospital MRN's, whose patient id is known as an MRN.
	ExceptionIssuerConflict = "issuer-conflict"
	// ExceptionDeadLetter: an ingest record the mapper passed over
	// (listed by the daemon from the dead-letter store).
	ExceptionDeadLetter = "dead-letter"
)

// ExceptionKinds lists every kind, in the order the worklist shows them.
var ExceptionKinds = []string{ExceptionStudyWithoutOrder, ExceptionOrderWithoutImages, ExceptionReportWithoutStudy,
	ExceptionAccessionTwoPatients, ExceptionIssuerConflict, ExceptionDeadLetter}

// ExceptionRules are the worklist's thresholds.
type ExceptionRules struct {
	UnorderedAfter time.Duration
	OrderGrace     time.Duration
}

// Exception is one item of the worklist: what is wrong, the evidence, and
// the action that would resolve it.
type Exception struct {
	// ID is stable while the exception lasts (kind and what it is about).
	ID               string    `json:"id"`
	Kind             string    `json:"kind"`
	PatientID        string    `json:"patient_id,omitempty"`
	StudyInstanceUID string    `json:"study_instance_uid,omitempty"`
	AccessionNumber  string    `json:"accession_number,omitempty"`
	OrderID          string    `json:"order_id,omitempty"`
	ReportID         string    `json:"report_id,omitempty"`
	IngestSeq        uint64    `json:"ingest_seq,omitempty"`
	Since            time.Time `json:"since,omitzero"`
	Evidence         string    `json:"evidence"`
	// Action says what resolves it; Resolve, when set, is the
	// reconciliation request that would (the worklist page offers it).
	Action  string   `json:"action"`
	Resolve *Resolve `json:"resolve,omitempty"`
}

// Resolve is a proposed reconciliation (POST /v1/reconcile).
type Resolve struct {
	Action  string `json:"action"`
	Study   string `json:"study,omitempty"`
	Order   string `json:"order,omitempty"`
	Patient string `json:"patient,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
}

// Exceptions lists the worklist's items the mapper's state shows, as of
// now, that the caller may see (may; an item about several patients is
// shown when the caller may see one of them, naming only those). Dead
// letters are not in the state: the caller adds them.
func (s *State) Exceptions(now time.Time, rules ExceptionRules, may func(string) bool) []Exception {
	out := []Exception{}
	orderOf := func(pid, acc, uid string) bool { // a joinable order of the patient
		if acc != "" {
			for _, r := range s.Accessions[acc] {
				if r.Type == "ServiceRequest" && r.Patient == pid {
					return true
				}
			}
		}
		for _, k := range s.StudyOrders[uid] {
			if o := s.Orders[k]; o != nil && o.PatientID == pid {
				return true
			}
		}
		return false
	}
	for _, uid := range sortedMapKeys(s.Studies) {
		st := s.Studies[uid]
		pid := studyPatient(st)
		if pid == "" || st.EnteredInError || !may(pid) {
			continue
		}
		since := st.Arrived
		if since.IsZero() {
			since = st.LastArrival
		}
		if (st.Unlinked || !orderOf(pid, st.AccessionNumber, uid)) && !since.IsZero() && now.Sub(since) >= rules.UnorderedAfter {
			ev := fmt.Sprintf("no order of this patient with accession %s since %s", orDash(st.AccessionNumber), since.UTC().Format(time.RFC3339))
			if st.Unlinked {
				ev = "unlinked from its order by an operator"
			}
			out = append(out, Exception{ID: ExceptionStudyWithoutOrder + ":" + uid, Kind: ExceptionStudyWithoutOrder, PatientID: pid,
				StudyInstanceUID: uid, AccessionNumber: st.AccessionNumber, Since: since, Evidence: ev,
				Action: "link the study to its order (action link), move it to the order's patient if the images carry the wrong patient id (action move), or mark it entered in error"})
		}
		if bare, issuer, ok := strings.Cut(pid, "^"); ok && bare != "" {
			known := s.Patients[bare] != nil
			if !known {
				for _, r := range s.Accessions[st.AccessionNumber] {
					known = known || r.Patient == bare
				}
			}
			if known && may(bare) {
				out = append(out, Exception{ID: ExceptionIssuerConflict + ":" + uid, Kind: ExceptionIssuerConflict, PatientID: pid,
					StudyInstanceUID: uid, AccessionNumber: st.AccessionNumber, Since: since,
					Evidence: fmt.Sprintf("the images' Issuer of Patient ID is %s, not the hospital MRN's; patient id %s is known under the MRN issuer", issuer, bare),
					Action:   "move the study to the MRN patient " + bare + " if it is that patient's",
					Resolve:  &Resolve{Action: ReconcileMove, Study: uid, Patient: bare}})
			}
		}
	}
	for _, k := range sortedMapKeys(s.Orders) {
		o := s.Orders[k]
		if o.Cancelled || !may(o.PatientID) {
			continue
		}
		if o.Accession != "" && hasRef(s.Accessions[o.Accession], "ImagingStudy", o.PatientID) {
			continue
		}
		if st := s.Studies[o.StudyUID]; o.StudyUID != "" && st != nil && studyPatient(st) == o.PatientID {
			continue
		}
		p := s.Patients[o.PatientID]
		if p == nil {
			continue
		}
		var res map[string]any
		if json.Unmarshal(p.Orders[o.ResourceID], &res) != nil || res["status"] == "revoked" || res["status"] == "completed" {
			continue
		}
		when, what := parseFHIRTime(res["occurrenceDateTime"]), "scheduled"
		if when.IsZero() {
			when, what = parseFHIRTime(res["authoredOn"]), "ordered"
		}
		if when.IsZero() || now.Sub(when) < rules.OrderGrace {
			continue
		}
		out = append(out, Exception{ID: ExceptionOrderWithoutImages + ":" + o.PatientID + "|" + o.ResourceID, Kind: ExceptionOrderWithoutImages,
			PatientID: o.PatientID, AccessionNumber: o.Accession, OrderID: o.ResourceID, Since: when,
			Evidence: fmt.Sprintf("%s %s, no study of this patient with accession %s since", what, when.UTC().Format(time.RFC3339), orDash(o.Accession)),
			Action:   "find the study (wrong accession or patient id in the images: link or move it), or cancel the order in the RIS"})
	}
	for _, acc := range sortedMapKeys(s.Accessions) {
		refs := s.Accessions[acc]
		patients := map[string]bool{}
		for _, r := range refs {
			patients[r.Patient] = true
		}
		var visible []string
		for _, p := range sortedMapKeys(patients) {
			if may(p) {
				visible = append(visible, p)
			}
		}
		for _, r := range refs {
			if r.Type != "DiagnosticReport" || !may(r.Patient) || hasRef(refs, "ImagingStudy", r.Patient) {
				continue
			}
			out = append(out, Exception{ID: ExceptionReportWithoutStudy + ":" + r.Patient + "|" + r.ID, Kind: ExceptionReportWithoutStudy,
				PatientID: r.Patient, AccessionNumber: acc, ReportID: r.ID,
				Evidence: "no study of this patient with accession " + acc,
				Action:   "wait for the study, or find it (wrong accession or patient id in the images: link or move it)"})
		}
		if len(patients) < 2 || len(visible) == 0 {
			continue
		}
		e := Exception{ID: ExceptionAccessionTwoPatients + ":" + acc, Kind: ExceptionAccessionTwoPatients, AccessionNumber: acc,
			PatientID: strings.Join(visible, ","),
			Evidence:  fmt.Sprintf("accession %s is on resources of %d patients; they are not linked", acc, len(patients)),
			Action:    "move the study to the right patient (action move), or correct the order in the RIS"}
		// One study and one order of different patients: propose moving
		// the study to the order's patient.
		var studies, orders []ResourceRef
		for _, r := range refs {
			switch r.Type {
			case "ImagingStudy":
				studies = append(studies, r)
			case "ServiceRequest":
				orders = append(orders, r)
			}
		}
		if len(studies) == 1 && len(orders) == 1 && studies[0].Patient != orders[0].Patient && len(visible) == len(patients) {
			e.StudyInstanceUID = studies[0].ID
			e.Resolve = &Resolve{Action: ReconcileMove, Study: studies[0].ID, Patient: orders[0].Patient}
			e.Action = "move the study to the order's patient " + orders[0].Patient + " if the images carry the wrong patient id"
		}
		out = append(out, e)
	}
	return out
}

func hasRef(refs []ResourceRef, typ, pid string) bool {
	for _, r := range refs {
		if r.Type == typ && r.Patient == pid {
			return true
		}
	}
	return false
}

func parseFHIRTime(v any) time.Time {
	s, _ := v.(string)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02", "2006-01", "2006"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
