package rules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// ResourceRef names one resource of a patient's read model.
type ResourceRef struct {
	Patient string `json:"patient"`
	Type    string `json:"type"` // ServiceRequest, ImagingStudy, DiagnosticReport
	ID      string `json:"id"`
}

// join links the orders, studies and reports that share an accession
// number, whatever order they arrived in (IHE SWF: the accession number is
// what the order, the modality worklist, the images and the report have in
// common). After a rule has run it
//   - records the accession of every resource the rule emitted,
//   - recomputes the links of every resource with that accession and the
//     same patient: ImagingStudy.basedOn and DiagnosticReport.basedOn →
//     the ServiceRequest, DiagnosticReport.imagingStudy → the studies, and
//     the order's status (completed once a study is available or a report
//     final, unless it was revoked),
//   - puts the linked resource into the rule's own events, and emits
//     IMAGING_STUDY_UPDATED / ORDER_UPDATED / IMAGING_REPORT_UPDATED for
//     other resources whose links changed, so subscribers hold the joined
//     picture; an arrival announces only its own resource (README, "Join
//     rules").
//
// A study also joins the order that names its Study Instance UID (IPC-3,
// ZDS-1; see studyJoin): it then belongs to that order's accession even
// when its images carry no accession or another one.
//
// Resources of different patients with one accession or Study Instance UID
// are never linked; the events about them carry a warning instead.
func join(c *Context) {
	if c.State.Accessions == nil {
		c.State.Accessions = map[string][]ResourceRef{}
	}
	touched := map[string]bool{}
	add := func(acc string, ref ResourceRef) {
		refs := c.State.accession(acc)
		if !slices.Contains(refs, ref) {
			c.State.Accessions[acc] = append(refs, ref)
		}
		touched[acc] = true
	}
	for _, ev := range c.events {
		if ev.PatientId == "" || !joinable(ev.ResourceType) {
			continue
		}
		if ev.ResourceType == "ImagingStudy" && ev.GetResource().GetFields()["status"].GetStringValue() == "entered-in-error" {
			continue // withdrawn (or moved away) by an operator: it joins nothing
		}
		ref := ResourceRef{Patient: ev.PatientId, Type: ev.ResourceType, ID: ev.ResourceId}
		if ev.AccessionNumber != "" {
			add(ev.AccessionNumber, ref)
		}
		uid := ev.StudyInstanceUid
		if uid == "" {
			continue
		}
		if st := c.State.study(uid); st != nil && st.Unlinked {
			continue // an operator unlinked it from every order
		}
		switch ev.ResourceType {
		case "ImagingStudy":
			acc, note := studyJoin(c, uid, ev.PatientId, ev.AccessionNumber)
			warn(ev, note)
			if acc != "" && acc != ev.AccessionNumber {
				add(acc, ref)
			}
		case "ServiceRequest":
			// The order names a study that is already here.
			st := c.State.study(uid)
			if ev.AccessionNumber == "" || st == nil || st.ReadModelPatient == "" {
				continue
			}
			if st.ReadModelPatient != ev.PatientId {
				warn(ev, " (warning: its Study Instance UID belongs to a study of a different patient; not linked across patients)")
				continue
			}
			if acc, note := studyJoin(c, uid, st.ReadModelPatient, st.AccessionNumber); acc == ev.AccessionNumber {
				warn(ev, note)
				add(acc, ResourceRef{Patient: st.ReadModelPatient, Type: "ImagingStudy", ID: StudyResourceID(uid)})
				if st.AccessionNumber != "" && st.AccessionNumber != acc {
					touched[st.AccessionNumber] = true // it leaves that accession's links
				}
			}
		}
	}
	accs := make([]string, 0, len(touched))
	for a := range touched {
		accs = append(accs, a)
	}
	sort.Strings(accs)
	for _, acc := range accs {
		joinAccession(c, acc)
	}
}

// warn raises ev to a warning and appends note to its message (nothing
// when note is empty). Notes never carry patient data.
func warn(ev *rbv1.Event, note string) {
	if note == "" || strings.Contains(ev.Message, note) {
		return
	}
	ev.Severity = max(ev.Severity, rbv1.Severity_SEVERITY_WARNING)
	ev.Message += note
}

// studyJoin returns the accession whose links the study uid of patient pid
// (its images carrying accession own) belongs to, and a warning note when
// the evidence conflicts. A study joins the order of the same patient that
// names its Study Instance UID (the first by order key when several do),
// whatever its own accession; a Study Instance UID named only by orders of
// other patients links nothing, and the study keeps its own accession.
func studyJoin(c *Context, uid, pid, own string) (acc, note string) {
	var match *OrderState
	other := false
	for _, k := range c.State.studyOrders(uid) {
		o := c.State.order(k)
		if o == nil || o.StudyUID != uid || o.Accession == "" {
			continue
		}
		if o.PatientID != pid {
			other = true
			continue
		}
		if match == nil {
			match = o
		}
	}
	if match == nil {
		if other {
			note = " (warning: an order of a different patient names this Study Instance UID; not linked across patients)"
		}
		return own, note
	}
	if own != "" && own != match.Accession && c.State.order(orderKey(pid, own, "", "")) != nil {
		note = fmt.Sprintf(" (warning: the images' accession %s names another order than their Study Instance UID; joined by Study Instance UID to %s)", own, match.Accession)
	}
	return match.Accession, note
}

func joinable(t string) bool {
	return t == "ServiceRequest" || t == "ImagingStudy" || t == "DiagnosticReport"
}

func joinAccession(c *Context, acc string) {
	refs := c.State.accession(acc)
	patients := map[string]bool{}
	for _, r := range refs {
		patients[r.Patient] = true
	}
	if len(patients) > 1 {
		for _, ev := range c.events {
			if ev.AccessionNumber == acc && joinable(ev.ResourceType) {
				ev.Severity = max(ev.Severity, rbv1.Severity_SEVERITY_WARNING)
				ev.Message += fmt.Sprintf(" (warning: accession %s is also used for another patient; not linked across patients)", acc)
			}
		}
	}
	for _, pid := range sortedMapKeys(patients) { // events in a stable order
		joinPatient(c, acc, pid, refs)
	}
}

// resourcesOf returns the current resources of refs for patient pid that
// belong to accession acc (a study by studyJoin).
func resourcesOf(c *Context, p *readmodel.Patient, acc string, refs []ResourceRef, pid string) (orders, studies, reports map[string]map[string]any) {
	orders, studies, reports = map[string]map[string]any{}, map[string]map[string]any{}, map[string]map[string]any{}
	for _, r := range refs {
		if r.Patient != pid {
			continue
		}
		var src map[string]json.RawMessage
		dst := orders
		switch r.Type {
		case "ServiceRequest":
			src = p.Orders
		case "ImagingStudy":
			src, dst = p.Studies, studies
		case "DiagnosticReport":
			src, dst = p.Reports, reports
		}
		var m map[string]any
		raw, ok := src[r.ID]
		if !ok || json.Unmarshal(raw, &m) != nil {
			continue
		}
		// (a corrected resource may have moved to another accession)
		in := accessionOf(m)
		if r.Type == "ImagingStudy" {
			in, _ = studyJoin(c, r.ID, pid, in)
		}
		if in == acc {
			dst[r.ID] = m
		}
	}
	return orders, studies, reports
}

func sortedKeys(m map[string]map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func refsTo(typ string, ids []string) []any {
	out := make([]any, 0, len(ids))
	for _, id := range ids {
		out = append(out, map[string]any{"reference": typ + "/" + id})
	}
	return out
}

// sameJSON reports whether a and b have the same JSON at each of keys
// (both absent counts as the same).
func sameJSON(a, b map[string]any, keys []string) bool {
	for _, k := range keys {
		va, ina := a[k]
		vb, inb := b[k]
		if ina != inb {
			return false
		}
		if !ina {
			continue
		}
		ja, erra := json.Marshal(va)
		jb, errb := json.Marshal(vb)
		if erra != nil || errb != nil || !bytes.Equal(ja, jb) {
			return false
		}
	}
	return true
}

func joinPatient(c *Context, acc, pid string, refs []ResourceRef) {
	p := c.State.patient(pid)
	if p == nil {
		return
	}
	orders, studies, reports := resourcesOf(c, p, acc, refs, pid)
	orderIDs, studyIDs := sortedKeys(orders), sortedKeys(studies)
	available, final := false, false
	for _, id := range studyIDs {
		available = available || studies[id]["status"] == "available"
	}
	for _, r := range reports {
		final = final || r["status"] == "final" || r["status"] == "corrected" || r["status"] == "amended"
	}
	// changed applies set, which may change only the top-level keys named,
	// to a copy of res, and records and announces the copy if its JSON
	// differs. The other keys keep their values, so comparing the named
	// ones is comparing the whole (a map's JSON orders its keys).
	changed := func(typ, id string, res map[string]any, keys []string, set func(map[string]any)) {
		next := make(map[string]any, len(res)+len(keys))
		for k, v := range res {
			next[k] = v
		}
		set(next)
		if sameJSON(res, next, keys) {
			return
		}
		c.Touch(pid)
		switch typ {
		case "ServiceRequest":
			setResource(&p.Orders, id, next)
		case "ImagingStudy":
			setResource(&p.Studies, id, next)
		case "DiagnosticReport":
			setResource(&p.Reports, id, next)
		}
		st := toStruct(next)
		if st == nil {
			return
		}
		// The rule's own event about this resource carries the linked
		// version; otherwise the change is an event of its own.
		for _, ev := range c.events {
			if ev.ResourceType == typ && ev.ResourceId == id && ev.PatientId == pid {
				ev.Resource = st
				return
			}
		}
		c.Emit(linkEvent(typ, id, pid, acc, next, st))
	}
	for _, id := range orderIDs {
		changed("ServiceRequest", id, orders[id], []string{"status"}, func(r map[string]any) {
			if r["status"] == "active" && (available || final) {
				r["status"] = "completed"
			}
		})
	}
	for _, id := range studyIDs {
		changed("ImagingStudy", id, studies[id], []string{"basedOn"}, func(r map[string]any) {
			setOrDelete(r, "basedOn", refsTo("ServiceRequest", orderIDs))
		})
	}
	for _, id := range sortedKeys(reports) {
		changed("DiagnosticReport", id, reports[id], []string{"basedOn", "imagingStudy"}, func(r map[string]any) {
			setOrDelete(r, "basedOn", refsTo("ServiceRequest", orderIDs))
			setOrDelete(r, "imagingStudy", refsTo("ImagingStudy", studyIDs))
		})
	}
	revoked := false
	for _, o := range orders {
		revoked = revoked || o["status"] == "revoked"
	}
	if revoked {
		// A study of a cancelled order keeps the status its images give it
		// (FHIR ImagingStudy "cancelled" is a study not performed), its
		// order stays revoked, and the study's events say so, as a
		// report's do.
		for _, ev := range c.events {
			if ev.ResourceType == "ImagingStudy" && ev.PatientId == pid && studies[ev.ResourceId] != nil && !strings.Contains(ev.Message, "was cancelled") {
				ev.Severity = max(ev.Severity, rbv1.Severity_SEVERITY_WARNING)
				ev.Message += " (warning: its order " + acc + " was cancelled)"
			}
		}
	}
}

// linkEvent is the event for a resource whose links or derived status
// changed because another resource of its accession arrived.
func linkEvent(typ, id, pid, acc string, res map[string]any, st *structpb.Struct) *rbv1.Event {
	ev := &rbv1.Event{
		PatientId: pid, AccessionNumber: acc, ResourceType: typ, ResourceId: id, Resource: st,
		Severity: rbv1.Severity_SEVERITY_INFO,
	}
	switch typ {
	case "ServiceRequest":
		ev.Type = rbv1.EventType_ORDER_UPDATED
		ev.StudyInstanceUid = studyUIDOf(res)
		ev.Message = "Imaging order " + fmt.Sprint(res["status"]) + ": " + codeText(res)
		if res["priority"] == "stat" {
			ev.Priority = rbv1.Priority_PRIORITY_STAT
		}
	case "ImagingStudy":
		ev.Type = rbv1.EventType_IMAGING_STUDY_UPDATED
		ev.StudyInstanceUid = id
		ev.AccessionNumber = accessionOf(res) // its own (it may have joined acc by Study Instance UID)
		what, _ := res["description"].(string)
		if what == "" {
			what = "imaging study"
		}
		ev.Message = "Imaging study linked to its order: " + what
		if res["status"] == "registered" {
			// Not announced available yet: UPDATED would come before
			// AVAILABLE; the link is news about a study still arriving.
			ev.Type = rbv1.EventType_IMAGING_STUDY_PROGRESS
			ev.Message = "Receiving " + what + ": linked to its order"
		}
	case "DiagnosticReport":
		// Not a new result: the report was announced when it arrived
		// (IMAGING_REPORT_READY / RESULT_RECEIVED); a link is an update.
		ev.Type = rbv1.EventType_IMAGING_REPORT_UPDATED
		ev.Message = "Radiology report linked: " + codeText(res)
	}
	return ev
}

func codeText(res map[string]any) string {
	if cc, ok := res["code"].(map[string]any); ok {
		if t, ok := cc["text"].(string); ok {
			return t
		}
	}
	return "imaging procedure"
}

func setOrDelete(r map[string]any, k string, refs []any) {
	if len(refs) == 0 {
		delete(r, k)
		return
	}
	r[k] = refs
}

// accessionOf returns the accession identifier (type ACSN) of a resource.
func accessionOf(r map[string]any) string {
	ids, _ := r["identifier"].([]any)
	for _, x := range ids {
		id, _ := x.(map[string]any)
		t, _ := id["type"].(map[string]any)
		codings, _ := t["coding"].([]any)
		for _, c := range codings {
			if cm, _ := c.(map[string]any); cm["code"] == "ACSN" {
				v, _ := id["value"].(string)
				return v
			}
		}
	}
	return ""
}

// studyUIDOf returns the Study Instance UID identifier (system
// urn:dicom:uid) of a resource, "" when it has none.
func studyUIDOf(r map[string]any) string {
	ids, _ := r["identifier"].([]any)
	for _, x := range ids {
		id, _ := x.(map[string]any)
		if id["system"] == studySystemUID {
			v, _ := id["value"].(string)
			return strings.TrimPrefix(v, "urn:oid:")
		}
	}
	return ""
}
