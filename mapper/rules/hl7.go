package rules

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"radbridge/hl7"
	"radbridge/ingest"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// OrderState is what the mapper knows of one order.
type OrderState struct {
	PatientID  string `json:"patient_id"`
	Accession  string `json:"accession"`
	ResourceID string `json:"resource_id"`
	Stat       bool   `json:"stat,omitempty"`
	Placer     string `json:"placer,omitempty"`
	Filler     string `json:"filler,omitempty"`
	Cancelled  bool   `json:"cancelled,omitempty"`
	// StudyUID is the Study Instance UID the order names (OMI IPC-3, ORM
	// ZDS-1): the study the modality will make joins the order by it.
	StudyUID string `json:"study_uid,omitempty"`
}

// hl7Rules maps HL7 v2 orders (ORM^O01, OMI^O23) and results (ORU^R01).
func hl7Rules(o Options) map[string]Rule {
	if len(o.HL7Accession) == 0 {
		o.HL7Accession = []string{"OBR-18", "IPC-1", "ORC-3", "OBR-3"}
	}
	r := &hl7Rule{o: o}
	return map[string]Rule{ingest.KindHL7: r}
}

type hl7Rule struct{ o Options }

// group is one order or result: ORC with its OBR, IPC, TQ1, ZDS, OBX and
// NTE.
type group struct {
	orc, obr, ipc, tq1, zds *hl7.Segment
	obx, nte                []*hl7.Segment
}

func groups(m *hl7.Message) []*group {
	var out []*group
	var cur *group
	for _, s := range m.AllSegments() {
		switch s.ID() {
		case "ORC":
			cur = &group{orc: s}
			out = append(out, cur)
		case "OBR":
			if cur == nil || cur.obr != nil {
				cur = &group{orc: cur.orcOrNil()}
				out = append(out, cur)
			}
			cur.obr = s
		case "IPC":
			if cur != nil && cur.ipc == nil {
				cur.ipc = s
			}
		case "TQ1":
			if cur != nil && cur.tq1 == nil {
				cur.tq1 = s
			}
		case "ZDS":
			if cur != nil && cur.zds == nil {
				cur.zds = s
			}
		case "OBX":
			if cur != nil {
				cur.obx = append(cur.obx, s)
			}
		case "NTE":
			if cur != nil && cur.obr != nil {
				cur.nte = append(cur.nte, s)
			}
		}
	}
	return out
}

func (g *group) orcOrNil() *hl7.Segment {
	if g == nil {
		return nil
	}
	return g.orc
}

func field(s *hl7.Segment, n, comp int) string {
	if s == nil {
		return ""
	}
	return strings.TrimSpace(s.Component(n, 1, comp))
}

func (r *hl7Rule) Apply(c *Context) error {
	var body ingest.HL7Body
	if err := json.Unmarshal(c.Rec.Body, &body); err != nil {
		return fmt.Errorf("hl7 body: %w", err)
	}
	m, err := hl7.Parse(body.Raw)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	code, trigger, _ := m.MessageType()
	pid, pidValue, authority := r.patient(m)
	subject := patientSubject(r.o, pid, pidValue, authority)
	switch {
	case code == "ORM" && trigger == "O01", code == "OMI" && trigger == "O23":
		for _, g := range groups(m) {
			if g.orc != nil && r.imaging(g) {
				r.order(c, m, g, pid, subject)
			}
		}
	case code == "ORU" && trigger == "R01":
		for _, g := range groups(m) {
			if g.obr != nil && r.imaging(g) {
				r.result(c, m, g, pid, subject)
			}
		}
	default:
		return fmt.Errorf("unsupported message %s^%s", code, trigger)
	}
	return nil
}

// patient picks the PID-3 identifier of the configured assigning
// authority; without one configured, the first whose identifier type
// (CX-5) is MR, else the first. It returns the patient key (see
// PatientKey) and the identifier with its authority.
func (r *hl7Rule) patient(m *hl7.Message) (key, id, authority string) {
	pid := m.Segment("PID")
	if pid == nil {
		return "", "", ""
	}
	n := pid.NumRepetitions(3)
	first := 0
	for rep := 1; rep <= n; rep++ {
		// CX-4 is an HD: its namespace ID is the first sub-component,
		// split at the message's own separator.
		idv, auth := strings.TrimSpace(pid.Component(3, rep, 1)), strings.TrimSpace(pid.Sub(3, rep, 4, 1))
		if idv == "" {
			continue
		}
		if r.o.HL7PatientAuthority != "" && strings.EqualFold(auth, r.o.HL7PatientAuthority) {
			return idv, idv, auth
		}
		if r.o.HL7PatientAuthority == "" && strings.EqualFold(strings.TrimSpace(pid.Component(3, rep, 5)), "MR") {
			return idv, idv, auth
		}
		if first == 0 {
			first = rep
		}
	}
	if r.o.HL7PatientAuthority == "" {
		if first == 0 {
			return "", "", ""
		}
		idv, auth := strings.TrimSpace(pid.Component(3, first, 1)), strings.TrimSpace(pid.Sub(3, first, 4, 1))
		return idv, idv, auth
	}
	// No identifier of the hospital's authority: the first, qualified by
	// its authority so it never merges with an MRN (see PatientKey).
	a := strings.TrimSpace(pid.Sub(3, 1, 4, 1))
	idv := strings.TrimSpace(pid.Component(3, 1, 1))
	return PatientKey(idv, a, r.o.HL7PatientAuthority), idv, a
}

// imaging reports whether the group is an imaging order or result
// (OBR-24 diagnostic service section; empty counts as imaging).
func (r *hl7Rule) imaging(g *group) bool {
	sec := field(g.obr, 24, 1)
	if sec == "" || len(r.o.HL7ImagingSections) == 0 {
		return true
	}
	return slices.ContainsFunc(r.o.HL7ImagingSections, func(s string) bool { return strings.EqualFold(s, sec) })
}

func (r *hl7Rule) accession(g *group) string {
	for _, where := range r.o.HL7Accession {
		var v string
		switch strings.ToUpper(where) {
		case "OBR-18":
			v = field(g.obr, 18, 1)
		case "IPC-1":
			v = field(g.ipc, 1, 1)
		case "ORC-3":
			v = field(g.orc, 3, 1)
		case "OBR-3":
			v = field(g.obr, 3, 1)
		}
		if v != "" {
			return v
		}
	}
	return ""
}

// orderStudyUID is the Study Instance UID an IHE scheduled workflow order
// carries for the modality to use: IPC-3 (OMI^O23) or ZDS-1.1 (ORM^O01,
// IHE SWF for v2.3/2.4); "" when there is none or it is not a UID.
func orderStudyUID(g *group) string {
	for _, v := range []string{field(g.ipc, 3, 1), field(g.zds, 1, 1)} {
		if v != "" && len(v) <= 64 && isDICOMOID(v) {
			return v
		}
	}
	return ""
}

// priority from ORC-7.6 / OBR-27.6 (TQ) or TQ1-9: S stat, A asap.
func priority(g *group) (fhir string, stat bool) {
	for _, v := range []string{field(g.orc, 7, 6), field(g.obr, 27, 6), field(g.tq1, 9, 1)} {
		switch strings.ToUpper(v) {
		case "S":
			return "stat", true
		case "A":
			return "asap", false
		case "R":
			return "routine", false
		}
	}
	return "routine", false
}

// resourceID is the FHIR id of a patient's order or report: prefix and v
// (the accession, or the order numbers) made FHIR-safe, then "-" and 12 hex
// digits of a SHA-256 of the patient key and v. It is stable for one
// resource and never shared by two patients with one accession (a FHIR
// store that upserts by id would overwrite one with the other), and fits
// FHIR's [A-Za-z0-9\-\.]{1,64}.
func resourceID(prefix, patient, v string) string {
	sum := sha256.Sum256([]byte(patient + "\x00" + v))
	h := hex.EncodeToString(sum[:6])
	return fhirID(prefix, v, 64-len(h)-1) + "-" + h
}

// ServiceRequestID is the FHIR id of patient's order with accession acc.
func ServiceRequestID(patient, acc string) string { return resourceID("", patient, acc) }

// DiagnosticReportID is the FHIR id of patient's report with accession acc.
func DiagnosticReportID(patient, acc string) string { return resourceID("report-", patient, acc) }

// orderKey is the key of a patient's order in State.Orders: the accession
// number, or the order numbers when there is none, scoped to the patient.
func orderKey(pid, acc, filler, placer string) string {
	if acc == "" {
		return pid + "|order:" + filler + "|" + placer
	}
	return pid + "|" + acc
}

// legacyOrder returns the order a radbridge before per-patient ids keyed
// by accession (or order numbers) alone, when it is this patient's: the
// state of a daemon upgraded without a replay keeps its ids (README,
// upgrade). A replay from the first record never has such keys.
func legacyOrder(s *State, pid, acc, filler, placer string) *OrderState {
	if s.ResourceIDs > 0 {
		return nil
	}
	key := acc
	if key == "" {
		key = "order:" + filler + "|" + placer
	}
	if o := s.order(key); o != nil && o.PatientID == pid {
		return o
	}
	return nil
}

// fhirID turns an identifier into a FHIR id ([A-Za-z0-9.-], at most max).
func fhirID(prefix, v string, max int) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, r := range v {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := b.String()
	if len(s) > max {
		s = s[:max]
	}
	return s
}

// hl7Time converts an HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]) to
// a FHIR dateTime. Without an offset the time is read in loc (the zone
// recorded with the message).
func hl7Time(v string, loc *time.Location) string {
	v = strings.TrimSpace(v)
	if len(v) < 4 {
		return ""
	}
	zone := ""
	if i := strings.IndexAny(v, "+-"); i >= 0 {
		zone, v = v[i:], v[:i]
	}
	if i := strings.IndexByte(v, '.'); i >= 0 {
		v = v[:i]
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return ""
		}
	}
	switch len(v) {
	case 4:
		return v
	case 6:
		return v[:4] + "-" + v[4:6]
	case 8:
		return v[:4] + "-" + v[4:6] + "-" + v[6:8]
	}
	for len(v) < 14 {
		v += "0"
	}
	if loc == nil {
		loc = dicomZone
	}
	if l, ok := hl7Offset(zone); ok {
		loc = l
	}
	t, err := time.ParseInLocation("20060102150405", v[:14], loc)
	if err != nil {
		return ""
	}
	return t.Format(time.RFC3339)
}

// hl7Offset reads a DTM offset as hl7Time always did: +/-HHMM by its
// digits (no range check, so old records map as before).
func hl7Offset(zone string) (*time.Location, bool) {
	if len(zone) != 5 {
		return nil, false
	}
	var h, m int
	if _, err := fmt.Sscanf(zone[1:], "%02d%02d", &h, &m); err != nil {
		return nil, false
	}
	off := h*3600 + m*60
	if zone[0] == '-' {
		off = -off
	}
	return time.FixedZone("", off), true
}

func hl7Codeable(s *hl7.Segment, n int) map[string]any {
	code, text, system := field(s, n, 1), field(s, n, 2), field(s, n, 3)
	if code == "" && text == "" {
		return nil
	}
	cc := map[string]any{}
	if code != "" {
		coding := map[string]any{"code": code}
		if text != "" {
			coding["display"] = text
		}
		if system != "" {
			coding["system"] = codeSystem(system)
		}
		cc["coding"] = []any{coding}
	}
	if text != "" {
		cc["text"] = text
	}
	return cc
}

// codeSystem maps HL7 table 0396 coding system names to FHIR URIs.
func codeSystem(s string) string {
	switch strings.ToUpper(s) {
	case "LN":
		return "http://loinc.org"
	case "SCT", "SNM", "SNOMED":
		return "http://snomed.info/sct"
	case "C4", "CPT", "CPT4":
		return "http://www.ama-assn.org/go/cpt"
	case "RADLEX", "RID":
		return "http://www.radlex.org"
	}
	return "urn:hl7v2:coding-system:" + url.PathEscape(s)
}

// orderStatusExtension is the FHIR extension carrying ORC-5 as received.
// An extension's url SHALL be a URL, not a URN (FHIR R4 2.21.0.1).
const orderStatusExtension = "https://radbridge.dev/fhir/StructureDefinition/hl7v2-order-status"

// hl7Instant converts an HL7 DTM to a FHIR instant (seconds and zone
// required), or "" when it is less precise than a minute.
func hl7Instant(v string, loc *time.Location) string {
	t := hl7Time(v, loc)
	if !strings.Contains(t, "T") {
		return ""
	}
	return t
}

// hl7Language returns MSH-19 (principal language of message) as a BCP 47
// language code, or "" when it is missing or not one.
func hl7Language(m *hl7.Message) string {
	l := strings.ToLower(field(m.MSH(), 19, 1))
	if !languageRE.MatchString(l) {
		return ""
	}
	return l
}

var languageRE = regexp.MustCompile(`^[a-z]{2,3}(-[a-z0-9]{2,8})*$`)

// person renders an XCN (ORC-12, OBR-16) or NDL's first component
// (OBR-32, sub-components) as a display name.
func hl7Person(s *hl7.Segment, n int) string {
	if s == nil {
		return ""
	}
	id, family, given := field(s, n, 1), field(s, n, 2), field(s, n, 3)
	// NDL: the name is the first component, its sub-components (split at
	// the message's own separator) ID, FAMILY, GIVEN.
	if p := s.Subcomponents(n, 1, 1); len(p) > 1 {
		id, family, given = strings.TrimSpace(p[0]), p[1], ""
		if len(p) > 2 {
			given = p[2]
		}
	}
	name := strings.TrimSpace(strings.TrimSpace(given) + " " + strings.TrimSpace(family))
	if name == "" {
		return id
	}
	return name
}

func hl7Identifiers(accession, placer, filler string) []any {
	var out []any
	add := func(code, display, v string) {
		if v != "" {
			out = append(out, map[string]any{
				"type":  map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code, "display": display}}},
				"value": v,
			})
		}
	}
	add("ACSN", "Accession ID", accession)
	add("PLAC", "Placer Identifier", placer)
	add("FILL", "Filler Identifier", filler)
	return out
}

// orderControl maps ORC-1 to the event type.
func orderControl(ctl string) rbv1.EventType {
	switch strings.ToUpper(ctl) {
	case "NW", "SN":
		return rbv1.EventType_ORDER_PLACED
	case "CA", "OC", "DC", "OD", "CR", "DR", "OR":
		return rbv1.EventType_ORDER_CANCELLED
	}
	return rbv1.EventType_ORDER_UPDATED
}

// orderStatus maps ORC-5 (table 0038) and the control code to a FHIR
// ServiceRequest status.
func orderStatus(ctl, status string) string {
	if orderControl(ctl) == rbv1.EventType_ORDER_CANCELLED {
		return "revoked"
	}
	switch strings.ToUpper(status) {
	case "CM":
		return "completed"
	case "HD":
		return "on-hold"
	case "CA", "DC":
		return "revoked"
	}
	return "active"
}

// orderNumbers returns the placer and filler order numbers (field 2 and 3
// of ORC and OBR) from first, falling back to second.
func orderNumbers(first, second *hl7.Segment) (placer, filler string) {
	placer, filler = field(first, 2, 1), field(first, 3, 1)
	if placer == "" {
		placer = field(second, 2, 1)
	}
	if filler == "" {
		filler = field(second, 3, 1)
	}
	return placer, filler
}

func (r *hl7Rule) order(c *Context, m *hl7.Message, g *group, pid string, subject map[string]any) {
	acc := r.accession(g)
	placer, filler := orderNumbers(g.orc, g.obr)
	key := orderKey(pid, acc, filler, placer)
	prev := c.State.order(key)
	if prev == nil {
		prev = legacyOrder(c.State, pid, acc, filler, placer)
	}
	id := ServiceRequestID(pid, acc)
	if acc == "" {
		id = resourceID("order-", pid, filler+"|"+placer)
	}
	if prev != nil {
		id = prev.ResourceID
	}
	ctl, st := field(g.orc, 1, 1), field(g.orc, 5, 1)
	prio, stat := priority(g)
	sr := map[string]any{
		"resourceType": "ServiceRequest",
		"id":           id,
		"status":       orderStatus(ctl, st),
		"intent":       "order",
		"priority":     prio,
		"category": []any{map[string]any{"coding": []any{map[string]any{
			"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging",
		}}}},
		"subject": subject,
	}
	studyUID := orderStudyUID(g)
	if studyUID == "" && prev != nil {
		studyUID = prev.StudyUID // an update that does not repeat it
	}
	ids := hl7Identifiers(acc, placer, filler)
	if studyUID != "" {
		ids = append(ids, map[string]any{"system": studySystemUID, "value": "urn:oid:" + studyUID})
	}
	if len(ids) > 0 {
		sr["identifier"] = ids
	}
	if cc := hl7Codeable(g.obr, 4); cc != nil {
		sr["code"] = cc
	}
	if t := hl7Time(field(g.orc, 9, 1), c.recZone(r.o)); t != "" {
		sr["authoredOn"] = t
	}
	if p := hl7Person(g.orc, 12); p != "" {
		sr["requester"] = map[string]any{"display": p}
	} else if p := hl7Person(g.obr, 16); p != "" {
		sr["requester"] = map[string]any{"display": p}
	}
	if t := hl7Time(field(g.tq1, 7, 1), c.recZone(r.o)); t != "" {
		sr["occurrenceDateTime"] = t
	} else if t := hl7Time(field(g.obr, 27, 4), c.recZone(r.o)); t != "" {
		sr["occurrenceDateTime"] = t
	}
	if reason := field(g.obr, 31, 2); reason != "" {
		sr["reasonCode"] = []any{map[string]any{"text": reason}}
	} else if reason := field(g.obr, 13, 1); reason != "" {
		sr["reasonCode"] = []any{map[string]any{"text": reason}}
	}
	if st != "" {
		sr["extension"] = []any{map[string]any{
			"url":         orderStatusExtension,
			"valueString": st,
		}}
	}
	typ := orderControl(ctl)
	if sr["status"] == "revoked" {
		// ORC-5 CA or DC with another control code (SC, XO …) cancels
		// too: the event says what the resource says.
		typ = rbv1.EventType_ORDER_CANCELLED
	}
	conflict := ""
	if typ == rbv1.EventType_ORDER_PLACED && prev != nil {
		typ = rbv1.EventType_ORDER_UPDATED // a resent NW with changes
		if (prev.Placer != "" && placer != "" && prev.Placer != placer) || (prev.Filler != "" && filler != "" && prev.Filler != filler) {
			// Two orders with one accession number: one accession is one
			// imaging procedure (IHE SWF), so the newer order replaces the
			// older one, and the event says so.
			conflict = fmt.Sprintf(" (warning: accession %s already belonged to order %s/%s; replaced by %s/%s)", acc, prev.Placer, prev.Filler, placer, filler)
		}
	}
	what := procedureName(g)
	sev, msg := rbv1.Severity_SEVERITY_INFO, "New imaging order: "+what
	switch typ {
	case rbv1.EventType_ORDER_UPDATED:
		msg = "Imaging order updated: " + what
		if st != "" {
			msg += " (" + orderStatusText(st) + ")"
		}
	case rbv1.EventType_ORDER_CANCELLED:
		sev, msg = rbv1.Severity_SEVERITY_WARNING, "Imaging order cancelled: "+what
	}
	evPrio := rbv1.Priority_PRIORITY_ROUTINE
	if stat {
		evPrio = rbv1.Priority_PRIORITY_STAT
		msg = "STAT " + msg
	}
	if conflict != "" {
		sev, msg = rbv1.Severity_SEVERITY_WARNING, msg+conflict
	}
	if prev != nil && prev.StudyUID != "" && prev.StudyUID != studyUID {
		c.State.setStudyOrder(prev.StudyUID, key, false)
	}
	if studyUID != "" {
		c.State.setStudyOrder(studyUID, key, true)
	}
	c.State.Orders[key] = &OrderState{PatientID: pid, Accession: acc, ResourceID: id, Stat: stat, Placer: placer, Filler: filler,
		Cancelled: typ == rbv1.EventType_ORDER_CANCELLED, StudyUID: studyUID}
	r.emit(c, typ, pid, acc, sev, evPrio, msg, "ServiceRequest", id, sr)
	c.events[len(c.events)-1].StudyInstanceUid = studyUID
	if pid != "" {
		p := c.State.Patient(pid)
		setResource(&p.Orders, id, sr)
		c.Touch(pid)
	}
}

func orderStatusText(st string) string {
	switch strings.ToUpper(st) {
	case "SC":
		return "scheduled"
	case "IP":
		return "in progress"
	case "CM":
		return "completed"
	case "HD":
		return "on hold"
	case "CA":
		return "cancelled"
	case "DC":
		return "discontinued"
	case "A":
		return "some results available"
	}
	return st
}

func procedureName(g *group) string {
	if v := field(g.obr, 4, 2); v != "" {
		return v
	}
	if v := field(g.obr, 4, 1); v != "" {
		return v
	}
	return "imaging procedure"
}

// reportStatus maps OBR-25 (table 0123) to a FHIR DiagnosticReport status.
func reportStatus(s string) string {
	switch strings.ToUpper(s) {
	case "F":
		return "final"
	case "C":
		return "corrected"
	case "X":
		return "cancelled"
	case "I", "O", "S":
		return "registered"
	case "A":
		return "partial"
	}
	return "preliminary" // P, R and anything else not final
}

func (r *hl7Rule) result(c *Context, m *hl7.Message, g *group, pid string, subject map[string]any) {
	acc := r.accession(g)
	placer, filler := orderNumbers(g.obr, g.orc)
	id := DiagnosticReportID(pid, acc)
	if acc == "" {
		id = resourceID("report-", pid, filler+"|"+placer)
	}
	st := field(g.obr, 25, 1)
	var text []string
	var findings []any // contained Observations of the critical results
	for _, x := range g.obx {
		var own []string
		switch strings.ToUpper(field(x, 2, 1)) {
		case "TX", "FT", "ST", "CE", "CWE", "":
			for _, v := range x.Repetitions(5) {
				if strings.ToUpper(field(x, 2, 1)) == "CE" || strings.ToUpper(field(x, 2, 1)) == "CWE" {
					v = x.Component(5, 1, 2)
				}
				own = append(own, v)
			}
		}
		text = append(text, own...)
		var flags []any
		for _, f := range x.Repetitions(8) {
			f = strings.ToUpper(strings.TrimSpace(f))
			if d, ok := readmodel.CriticalFlags[f]; ok {
				flags = append(flags, map[string]any{"system": readmodel.InterpretationSystem, "code": f, "display": d})
			}
		}
		if len(flags) > 0 {
			findings = append(findings, criticalFinding(len(findings)+1, x, st, own, flags, subject))
		}
	}
	critical := len(findings) > 0
	for _, n := range g.nte {
		if v := n.Field(3); v != "" {
			text = append(text, v)
		}
	}
	report := strings.Join(text, "\n")
	dr := map[string]any{
		"resourceType": "DiagnosticReport",
		"id":           id,
		"status":       reportStatus(st),
		"category": []any{map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology",
		}}}},
		"subject": subject,
	}
	if cc := hl7Codeable(g.obr, 4); cc != nil {
		dr["code"] = cc
	} else {
		dr["code"] = map[string]any{"text": "Imaging report"}
	}
	if ids := hl7Identifiers(acc, placer, filler); len(ids) > 0 {
		dr["identifier"] = ids
	}
	if t := hl7Time(field(g.obr, 7, 1), c.recZone(r.o)); t != "" {
		dr["effectiveDateTime"] = t
	}
	if t := hl7Instant(field(g.obr, 22, 1), c.recZone(r.o)); t != "" {
		dr["issued"] = t
	} else if t := hl7Instant(m.MSH().Field(7), c.recZone(r.o)); t != "" {
		dr["issued"] = t
	}
	if p := hl7Person(g.obr, 32); p != "" {
		dr["resultsInterpreter"] = []any{map[string]any{"display": p}}
	}
	order := c.State.order(orderKey(pid, acc, "", ""))
	if order == nil && acc != "" {
		order = legacyOrder(c.State, pid, acc, "", "")
	}
	if c.State.ResourceIDs == 0 {
		// A report a radbridge before per-patient ids stored keeps its id
		// until a replay from the first record rebuilds it (README, upgrade).
		old := fhirID("report-", acc, 64)
		if acc == "" {
			old = fhirID("report-", filler+placer, 64)
		}
		if p := c.State.patient(pid); p != nil && p.Reports[old] != nil {
			id = old
		}
	}
	if o := order; acc != "" && o != nil {
		dr["basedOn"] = []any{map[string]any{"reference": "ServiceRequest/" + o.ResourceID}}
	}
	if critical {
		// FHIR R4: the flagged results as contained Observations whose
		// interpretation is the v3 code (HH, LL, AA), referenced from
		// DiagnosticReport.result, so the resource itself says it is
		// critical (README, "Critical results").
		dr["contained"] = findings
		var refs []any
		for _, f := range findings {
			refs = append(refs, map[string]any{"reference": "#" + f.(map[string]any)["id"].(string)})
		}
		dr["result"] = refs
	}
	if report != "" {
		dr["conclusion"] = report
		form := map[string]any{
			"contentType": "text/plain; charset=utf-8",
			"data":        base64.StdEncoding.EncodeToString([]byte(report)),
			"title":       procedureName(g),
		}
		if l := hl7Language(m); l != "" {
			form["language"] = l
		}
		dr["presentedForm"] = []any{form}
	}
	what := procedureName(g)
	typ := rbv1.EventType_RESULT_RECEIVED
	sev, msg := rbv1.Severity_SEVERITY_INFO, "Preliminary radiology result: "+what
	switch strings.ToUpper(st) {
	case "F":
		typ, sev, msg = rbv1.EventType_IMAGING_REPORT_READY, rbv1.Severity_SEVERITY_SUCCESS, "Radiology report ready: "+what
	case "C":
		typ, sev, msg = rbv1.EventType_IMAGING_REPORT_READY, rbv1.Severity_SEVERITY_WARNING, "Corrected radiology report: "+what
	case "X":
		sev, msg = rbv1.Severity_SEVERITY_WARNING, "Radiology result cancelled: "+what
	}
	prio := rbv1.Priority_PRIORITY_ROUTINE
	if _, stat := priority(g); stat || (order != nil && acc != "" && order.Stat) {
		prio = rbv1.Priority_PRIORITY_STAT
	}
	if o := order; acc != "" && o != nil && o.Cancelled {
		// A report for a cancelled order is kept and linked; the order
		// stays revoked, and the event says so.
		sev = max(sev, rbv1.Severity_SEVERITY_WARNING)
		msg += " (warning: its order " + acc + " was cancelled)"
	}
	if critical {
		prio, sev = rbv1.Priority_PRIORITY_CRITICAL, rbv1.Severity_SEVERITY_ERROR
		msg = "CRITICAL: " + msg
	}
	r.emit(c, typ, pid, acc, sev, prio, msg, "DiagnosticReport", id, dr)
	if pid != "" {
		p := c.State.Patient(pid)
		setResource(&p.Reports, id, dr)
		c.Touch(pid)
	}
}

// criticalFinding is the contained Observation ("obx-<n>") of a critical
// OBX: its code (OBX-3), the report's status, its text and its flags.
func criticalFinding(n int, x *hl7.Segment, reportStatusCode string, text []string, flags []any, subject map[string]any) map[string]any {
	status := reportStatus(reportStatusCode)
	if status == "partial" { // not an Observation status
		status = "preliminary"
	}
	o := map[string]any{
		"resourceType":   "Observation",
		"id":             fmt.Sprintf("obx-%d", n),
		"status":         status,
		"code":           map[string]any{"text": "Imaging finding"},
		"subject":        subject,
		"interpretation": []any{map[string]any{"coding": flags}},
	}
	if cc := hl7Codeable(x, 3); cc != nil {
		o["code"] = cc
	}
	if v := strings.TrimSpace(strings.Join(text, "\n")); v != "" {
		o["valueString"] = v
	}
	return o
}

func (r *hl7Rule) emit(c *Context, typ rbv1.EventType, pid, acc string, sev rbv1.Severity, prio rbv1.Priority, msg, rtype, rid string, res map[string]any) {
	st := toStruct(res)
	c.Emit(&rbv1.Event{
		Type: typ, PatientId: pid, AccessionNumber: acc, Severity: sev, Priority: prio, Message: msg,
		ResourceType: rtype, ResourceId: rid, Resource: st,
	})
}
