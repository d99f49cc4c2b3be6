package rules

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ExplainQuery selects what to explain: one of its fields (the first set,
// in this order).
type ExplainQuery struct {
	Study     string // Study Instance UID
	Accession string
	// Order is an order's ServiceRequest id, placer or filler order number,
	// or accession number.
	Order   string
	Patient string
}

// Explanation is what the mapper knows about the studies, orders and
// reports a query selects, and why each event has or has not fired. It
// holds the patient data of the patients it names only (Notes never name
// another patient).
type Explanation struct {
	// AppliedSequence is the last ingest record the state reflects.
	AppliedSequence uint64              `json:"applied_sequence"`
	Studies         []StudyExplanation  `json:"studies"`
	Orders          []OrderExplanation  `json:"orders"`
	Reports         []ReportExplanation `json:"reports"`
	// Notes say what the caller may not see the details of ("accession A
	// is also used for another patient") or what was not found.
	Notes []string `json:"notes"`
}

// StudyExplanation explains one study.
type StudyExplanation struct {
	StudyInstanceUID string `json:"study_instance_uid"`
	PatientID        string `json:"patient_id,omitempty"`
	AccessionNumber  string `json:"accession_number,omitempty"`
	// Status: receiving, available or entered-in-error.
	Status            string              `json:"status"`
	Series            []SeriesExplanation `json:"series"`
	InstancesReceived int                 `json:"instances_received"`
	// InstancesExpected: named by an IAN or a COMPLETED MPPS (0: none
	// did); ExpectedFrom which; Missing how many of them were not received.
	InstancesExpected int      `json:"instances_expected,omitempty"`
	ExpectedFrom      []string `json:"expected_from,omitempty"`
	Missing           int      `json:"missing,omitempty"`
	// IAN: whether an IAN named the study, and parts of a large IAN still
	// awaited.
	IAN IANExplanation `json:"ian"`
	// MPPS maps each Performed Procedure Step to its status.
	MPPS map[string]string `json:"mpps"`
	// QuietPeriod is the pending end of the quiet period, if any.
	QuietPeriod *QuietPeriod `json:"quiet_period,omitempty"`
	// Available says whether IMAGING_STUDY_AVAILABLE fired, and why (or
	// why not yet).
	Available  EventExplanation `json:"available"`
	Completion *Completion      `json:"completion,omitempty"`
	// Order: the orders it joined (ServiceRequest ids), or why none.
	Order JoinExplanation `json:"order"`
	// Reports joined to it (DiagnosticReport ids).
	Reports []string `json:"reports"`
	// IngestSequences are the records that made the study: its first and
	// last instance, IANs, MPPS updates, completion and operator actions
	// (sorted, at most StudyRecordsKept of the others).
	IngestSequences []uint64 `json:"ingest_sequences"`
	// Actions are the operator actions on it, oldest first.
	Actions []Action `json:"actions"`
}

// SeriesExplanation counts one series' instances.
type SeriesExplanation struct {
	SeriesInstanceUID string `json:"series_instance_uid"`
	Number            int    `json:"number,omitempty"`
	Modality          string `json:"modality,omitempty"`
	Instances         int    `json:"instances"`
	Received          int    `json:"received"`
}

// IANExplanation is a study's IAN state.
type IANExplanation struct {
	Received     bool `json:"received"`
	PartsPending int  `json:"parts_pending,omitempty"`
}

// QuietPeriod is a pending quiet-period end.
type QuietPeriod struct {
	Ends        time.Time `json:"ends"`
	SecondsLeft float64   `json:"seconds_left"`
}

// EventExplanation says whether an event fired and why, or why not.
type EventExplanation struct {
	Fired  bool   `json:"fired"`
	Reason string `json:"reason"`
}

// JoinExplanation lists what a resource joined, or says why nothing.
type JoinExplanation struct {
	Joined []string `json:"joined"`
	WhyNot string   `json:"why_not,omitempty"`
}

// OrderExplanation explains one order.
type OrderExplanation struct {
	ResourceID      string `json:"resource_id"`
	PatientID       string `json:"patient_id"`
	AccessionNumber string `json:"accession_number,omitempty"`
	Placer          string `json:"placer,omitempty"`
	Filler          string `json:"filler,omitempty"`
	// Status is the ServiceRequest's (active, completed, revoked).
	Status    string `json:"status"`
	Scheduled string `json:"scheduled,omitempty"`
	// Completed says why the order is (or is not yet) completed.
	Completed EventExplanation `json:"completed"`
	Studies   JoinExplanation  `json:"studies"`
	Reports   []string         `json:"reports"`
}

// ReportExplanation explains one report.
type ReportExplanation struct {
	ResourceID      string `json:"resource_id"`
	PatientID       string `json:"patient_id"`
	AccessionNumber string `json:"accession_number,omitempty"`
	Status          string `json:"status"`
	// Ready: IMAGING_REPORT_READY fired (final or corrected), or why not.
	Ready   EventExplanation `json:"ready"`
	Studies JoinExplanation  `json:"studies"`
	Orders  []string         `json:"orders"`
}

// Explain reports what the state holds about what q selects, as of the
// last record applied, with the quiet periods' time left at now. may says
// whether the caller may see a patient's data: what it may not see is
// left out (a note says so without naming the patient). Explain reads
// only what is in memory: a patient evicted to the archive is not
// explained until an observation reloads it.
func (s *State) Explain(q ExplainQuery, now time.Time, may func(patient string) bool) *Explanation {
	e := &Explanation{AppliedSequence: s.Applied, Studies: []StudyExplanation{}, Orders: []OrderExplanation{}, Reports: []ReportExplanation{}, Notes: []string{}}
	x := &explainer{s: s, e: e, now: now, may: may, studies: map[string]bool{}, orders: map[string]bool{}, reports: map[string]bool{}}
	switch {
	case q.Study != "":
		x.study(q.Study)
		acc := ""
		if st := s.Studies[q.Study]; st != nil {
			acc = st.AccessionNumber
		}
		// The orders of its accession or naming it, and its reports.
		for _, k := range sortedMapKeys(s.Orders) {
			if o := s.Orders[k]; o.StudyUID == q.Study || acc != "" && o.Accession == acc {
				x.order(k)
			}
		}
		for _, r := range s.Accessions[acc] {
			if r.Type == "DiagnosticReport" && acc != "" {
				x.report(r.Patient, r.ID)
			}
		}
	case q.Accession != "":
		x.accession(q.Accession)
	case q.Order != "":
		for _, k := range sortedMapKeys(s.Orders) {
			o := s.Orders[k]
			if q.Order == o.ResourceID || q.Order == o.Placer || q.Order == o.Filler || q.Order == o.Accession {
				x.order(k)
				if o.Accession != "" {
					x.accession(o.Accession)
				}
			}
		}
	case q.Patient != "":
		if !may(q.Patient) {
			return e
		}
		for _, uid := range sortedMapKeys(s.Studies) {
			if st := s.Studies[uid]; studyPatient(st) == q.Patient {
				x.study(uid)
			}
		}
		for _, k := range sortedMapKeys(s.Orders) {
			if s.Orders[k].PatientID == q.Patient {
				x.order(k)
			}
		}
		if p := s.Patients[q.Patient]; p != nil {
			for _, id := range sortedMapKeys(p.Reports) {
				x.report(q.Patient, id)
			}
		}
	}
	if len(e.Studies)+len(e.Orders)+len(e.Reports) == 0 && x.hidden == 0 {
		e.Notes = append(e.Notes, "nothing known for this query (or its patient is not in memory: evicted patients are explained once an observation reloads them)")
	}
	if x.hidden > 0 {
		e.Notes = append(e.Notes, fmt.Sprintf("%d resources of patients this token may not read are left out", x.hidden))
	}
	return e
}

type explainer struct {
	s                        *State
	e                        *Explanation
	now                      time.Time
	may                      func(string) bool
	studies, orders, reports map[string]bool
	hidden                   int
}

func studyPatient(st *StudyState) string {
	if st.ReadModelPatient != "" {
		return st.ReadModelPatient
	}
	return st.PatientID
}

// accession adds every resource carrying accession acc.
func (x *explainer) accession(acc string) {
	patients := map[string]bool{}
	for _, r := range x.s.Accessions[acc] {
		patients[r.Patient] = true
		switch r.Type {
		case "ImagingStudy":
			x.study(r.ID)
		case "DiagnosticReport":
			x.report(r.Patient, r.ID)
		}
	}
	for _, uid := range sortedMapKeys(x.s.Studies) {
		if st := x.s.Studies[uid]; st.AccessionNumber == acc {
			patients[studyPatient(st)] = true
			x.study(uid)
		}
	}
	for _, k := range sortedMapKeys(x.s.Orders) {
		if o := x.s.Orders[k]; o.Accession == acc {
			patients[o.PatientID] = true
			x.order(k)
		}
	}
	if len(patients) > 1 {
		x.e.Notes = append(x.e.Notes, fmt.Sprintf("accession %s is used for %d patients: resources of different patients are never linked", acc, len(patients)))
	}
}

func (x *explainer) study(uid string) {
	st := x.s.Studies[uid]
	if st == nil || x.studies[uid] {
		return
	}
	x.studies[uid] = true
	pid := studyPatient(st)
	if !x.may(pid) {
		x.hidden++
		return
	}
	se := StudyExplanation{StudyInstanceUID: uid, PatientID: pid, AccessionNumber: st.AccessionNumber, Status: st.Status,
		Series: []SeriesExplanation{}, MPPS: map[string]string{}, Reports: []string{}, Completion: st.Completion,
		IngestSequences: slices.Clone(st.Records), Actions: slices.Clone(st.Actions)}
	if st.LastInstance != 0 && !slices.Contains(se.IngestSequences, st.LastInstance) {
		se.IngestSequences = append(se.IngestSequences, st.LastInstance)
	}
	slices.Sort(se.IngestSequences)
	if se.IngestSequences == nil {
		se.IngestSequences = []uint64{}
	}
	if se.Actions == nil {
		se.Actions = []Action{}
	}
	if st.EnteredInError {
		se.Status = StudyEnteredInError
	}
	for _, suid := range sortedMapKeys(st.Series) {
		s := st.Series[suid]
		sx := SeriesExplanation{SeriesInstanceUID: suid, Number: s.Number, Modality: s.Modality, Instances: len(s.Instances)}
		for _, in := range s.Instances {
			if in.Received {
				sx.Received++
			}
		}
		se.InstancesReceived += sx.Received
		se.Series = append(se.Series, sx)
	}
	se.InstancesExpected, se.ExpectedFrom, se.Missing = len(st.Expected), st.ExpectedFrom, st.missing()
	se.IAN.Received = slices.Contains(st.ExpectedFrom, ExpectedIAN) || st.Completion != nil && st.Completion.Reason == CompletedByIAN
	se.IAN.PartsPending = len(st.IANParts)
	for k, v := range st.MPPS {
		se.MPPS[k] = v
	}
	if t := x.s.Timers[quietKey(uid)]; t != nil {
		se.QuietPeriod = &QuietPeriod{Ends: t.At, SecondsLeft: max(0, t.At.Sub(x.now).Round(time.Millisecond).Seconds())}
	}
	se.Available = studyAvailability(st, se)
	// The joined orders and reports are in the read model's ImagingStudy
	// and the patient's reports.
	var res map[string]any
	if p := x.s.Patients[pid]; p != nil {
		if raw, ok := p.Studies[StudyResourceID(uid)]; ok {
			_ = json.Unmarshal(raw, &res)
		}
		for _, id := range sortedMapKeys(p.Reports) {
			var r map[string]any
			if json.Unmarshal(p.Reports[id], &r) == nil && slices.Contains(refIDs(r["imagingStudy"], "ImagingStudy"), StudyResourceID(uid)) {
				se.Reports = append(se.Reports, id)
			}
		}
	}
	se.Order.Joined = refIDs(res["basedOn"], "ServiceRequest")
	if len(se.Order.Joined) == 0 {
		se.Order.WhyNot = x.whyNoOrder(st, pid)
	}
	x.e.Studies = append(x.e.Studies, se)
}

// studyAvailability says why IMAGING_STUDY_AVAILABLE fired, or what it
// waits for.
func studyAvailability(st *StudyState, se StudyExplanation) EventExplanation {
	if st.AvailableSent {
		r := "fired"
		if c := st.Completion; c != nil {
			r = fmt.Sprintf("fired: %s (%d instances received", c.Reason, c.Received)
			if c.Expected > 0 {
				r += fmt.Sprintf(" of %d expected from %s", c.Expected, strings.Join(c.ExpectedFrom, " and "))
			}
			r += fmt.Sprintf("; ingest record %d)", c.IngestSeq)
		}
		return EventExplanation{Fired: true, Reason: r}
	}
	var why []string
	if se.IAN.PartsPending > 0 {
		why = append(why, fmt.Sprintf("%d IAN(s) recorded in parts wait for their other parts", se.IAN.PartsPending))
	}
	if st.mppsStatus("COMPLETED") && se.Missing > 0 {
		why = append(why, fmt.Sprintf("MPPS COMPLETED named %d instances; %d not received yet", se.InstancesExpected, se.Missing))
	} else if len(st.MPPS) > 0 && !st.mppsStatus("COMPLETED") {
		why = append(why, "MPPS not COMPLETED yet")
	}
	if q := se.QuietPeriod; q != nil {
		why = append(why, fmt.Sprintf("quiet period ends in %.1f s (%s) unless another instance arrives", q.SecondsLeft, q.Ends.UTC().Format(time.RFC3339)))
	}
	if len(why) == 0 {
		why = append(why, "no instance received and no IAN yet")
	}
	return EventExplanation{Reason: "not yet: " + strings.Join(why, "; ")}
}

// whyNoOrder says why a study of patient pid joined no order.
func (x *explainer) whyNoOrder(st *StudyState, pid string) string {
	acc := st.AccessionNumber
	if acc == "" && len(x.s.StudyOrders[st.UID]) == 0 {
		return "no accession number in the images, and no order names the Study Instance UID"
	}
	var others, foreign, cancelled bool
	for _, k := range sortedMapKeys(x.s.Orders) {
		o := x.s.Orders[k]
		if o.Accession != acc && o.StudyUID != st.UID {
			continue
		}
		switch {
		case o.PatientID == pid && o.Cancelled:
			cancelled = true
		case o.PatientID != pid && sameIDOtherIssuer(o.PatientID, pid):
			foreign = true
		case o.PatientID != pid:
			others = true
		}
	}
	switch {
	case st.Unlinked:
		return "unlinked by an operator"
	case foreign:
		return "issuer mismatch: an order with accession " + acc + " is for the same patient id under another issuer (Issuer of Patient ID differs from --dicom-patient-issuer); move the study to the order's patient"
	case others:
		return "patient conflict: the order with accession " + acc + " is for another patient; resources of different patients are never linked"
	case cancelled:
		return "the order with accession " + acc + " was cancelled"
	case !st.AvailableSent && st.ReadModelPatient == "":
		return "no event about the study yet"
	}
	return "no order with accession " + acc + " for this patient yet"
}

// sameIDOtherIssuer reports whether patient keys a and b are one id under
// two issuers ("ID" and "ID^ISSUER", or two issuers).
func sameIDOtherIssuer(a, b string) bool {
	ia, _, _ := strings.Cut(a, "^")
	ib, _, _ := strings.Cut(b, "^")
	return ia == ib && a != b
}

// refIDs returns the ids of references "Type/id" in a list of references.
func refIDs(v any, typ string) []string {
	out := []string{}
	l, _ := v.([]any)
	for _, x := range l {
		m, _ := x.(map[string]any)
		if ref, _ := m["reference"].(string); strings.HasPrefix(ref, typ+"/") {
			out = append(out, strings.TrimPrefix(ref, typ+"/"))
		}
	}
	return out
}

func (x *explainer) order(key string) {
	o := x.s.Orders[key]
	if o == nil || x.orders[key] {
		return
	}
	x.orders[key] = true
	if !x.may(o.PatientID) {
		x.hidden++
		return
	}
	oe := OrderExplanation{ResourceID: o.ResourceID, PatientID: o.PatientID, AccessionNumber: o.Accession, Placer: o.Placer, Filler: o.Filler,
		Studies: JoinExplanation{Joined: []string{}}, Reports: []string{}}
	var res map[string]any
	p := x.s.Patients[o.PatientID]
	if p != nil {
		_ = json.Unmarshal(p.Orders[o.ResourceID], &res)
	}
	oe.Status, _ = res["status"].(string)
	oe.Scheduled, _ = res["occurrenceDateTime"].(string)
	if p != nil {
		for _, id := range sortedMapKeys(p.Studies) {
			var r map[string]any
			if json.Unmarshal(p.Studies[id], &r) == nil && slices.Contains(refIDs(r["basedOn"], "ServiceRequest"), o.ResourceID) {
				oe.Studies.Joined = append(oe.Studies.Joined, id)
			}
		}
		for _, id := range sortedMapKeys(p.Reports) {
			var r map[string]any
			if json.Unmarshal(p.Reports[id], &r) == nil && slices.Contains(refIDs(r["basedOn"], "ServiceRequest"), o.ResourceID) {
				oe.Reports = append(oe.Reports, id)
			}
		}
	}
	switch {
	case o.Cancelled || oe.Status == "revoked":
		oe.Completed = EventExplanation{Reason: "cancelled (ORDER_CANCELLED): it is never completed"}
	case oe.Status == "completed":
		oe.Completed = EventExplanation{Fired: true, Reason: "completed: a joined study is available or a joined report final"}
	default:
		oe.Completed = EventExplanation{Reason: "not yet: no joined study is available and no joined report is final"}
	}
	if len(oe.Studies.Joined) == 0 {
		switch {
		case o.Accession == "" && o.StudyUID == "":
			oe.Studies.WhyNot = "the order has no accession number and names no Study Instance UID"
		default:
			oe.Studies.WhyNot = "no study of this patient with accession " + o.Accession + " yet"
			for _, uid := range sortedMapKeys(x.s.Studies) {
				st := x.s.Studies[uid]
				if (o.Accession != "" && st.AccessionNumber == o.Accession) || (o.StudyUID != "" && uid == o.StudyUID) {
					if pid := studyPatient(st); pid != o.PatientID {
						if sameIDOtherIssuer(pid, o.PatientID) {
							oe.Studies.WhyNot = "issuer mismatch: a study with this accession has the same patient id under another issuer"
						} else {
							oe.Studies.WhyNot = "patient conflict: a study with this accession is for another patient"
						}
					} else if st.Unlinked {
						oe.Studies.WhyNot = "a study with this accession was unlinked by an operator"
					}
				}
			}
		}
	}
	x.e.Orders = append(x.e.Orders, oe)
}

func (x *explainer) report(pid, id string) {
	k := pid + "|" + id
	if x.reports[k] {
		return
	}
	x.reports[k] = true
	if !x.may(pid) {
		x.hidden++
		return
	}
	p := x.s.Patients[pid]
	if p == nil {
		return
	}
	var r map[string]any
	if json.Unmarshal(p.Reports[id], &r) != nil {
		return
	}
	re := ReportExplanation{ResourceID: id, PatientID: pid, AccessionNumber: accessionOf(r)}
	re.Status, _ = r["status"].(string)
	switch re.Status {
	case "final", "corrected", "amended":
		re.Ready = EventExplanation{Fired: true, Reason: "IMAGING_REPORT_READY: the result is " + re.Status}
	default:
		re.Ready = EventExplanation{Reason: "not yet: the result is " + re.Status + " (RESULT_RECEIVED); IMAGING_REPORT_READY fires on a final or corrected result"}
	}
	re.Studies.Joined = refIDs(r["imagingStudy"], "ImagingStudy")
	re.Orders = refIDs(r["basedOn"], "ServiceRequest")
	if len(re.Studies.Joined) == 0 {
		re.Studies.WhyNot = "no study of this patient with accession " + re.AccessionNumber + " yet"
		if re.AccessionNumber == "" {
			re.Studies.WhyNot = "the report has no accession number"
		}
		for _, ref := range x.s.Accessions[re.AccessionNumber] {
			if ref.Type == "ImagingStudy" && ref.Patient != pid {
				re.Studies.WhyNot = "patient conflict: a study with this accession is for another patient"
			}
		}
	}
	x.e.Reports = append(x.e.Reports, re)
}

// Action is an operator's correction as recorded (see Reconcile).
type Action struct {
	IngestSeq uint64    `json:"ingest_seq"`
	Time      time.Time `json:"time"`
	Action    string    `json:"action"`
	Actor     string    `json:"actor"`
	Reason    string    `json:"reason"`
	// Detail: the order linked or unlinked, the patients moved between.
	Detail string `json:"detail,omitempty"`
}
