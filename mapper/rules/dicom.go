package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"radbridge/ingest"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// Study status values of StudyState.Status.
const (
	StudyReceiving = "receiving"
	StudyAvailable = "available"
)

// StudyState is what the mapper knows of one study (by Study Instance UID).
// It is built from C-STORE headers, IANs and MPPS updates; the ImagingStudy
// resource of every event is derived from it.
type StudyState struct {
	UID string `json:"uid"`
	// PatientID is the instances' Patient ID (0010,0020); IssuerOfPatientID
	// its issuer (0010,0021), kept for the FHIR identifier.
	PatientID         string `json:"patient_id,omitempty"`
	IssuerOfPatientID string `json:"issuer_of_patient_id,omitempty"`
	AccessionNumber   string `json:"accession_number,omitempty"`
	Description       string `json:"description,omitempty"`
	// Date and Time are the DICOM StudyDate (DA) and StudyTime (TM).
	Date     string `json:"date,omitempty"`
	Time     string `json:"time,omitempty"`
	Referrer string `json:"referrer,omitempty"`
	// TZOffset is the Timezone Offset From UTC (0008,0201) and Zone the
	// zone recorded with the observation (ingest.Observation.Zone) of the
	// instance that set Date; Date and Time are read with the offset, else
	// in the zone, else in Options.Zone.
	TZOffset string `json:"tz_offset,omitempty"`
	Zone     string `json:"zone,omitempty"`
	// Source is where the study's latest observation came from (the
	// sending AE), so timer-driven events name the sender too.
	Source *ingest.Source `json:"source,omitempty"`
	// Series by Series Instance UID.
	Series map[string]*SeriesState `json:"series,omitempty"`
	// Expected are the SOP Instance UIDs the study is known to hold: listed
	// by an IAN or referenced by a COMPLETED MPPS. Empty when unknown.
	Expected map[string]bool `json:"expected,omitempty"`
	// IANParts are the parts seen of IANs recorded in parts (by the IAN's
	// SOP Instance UID), until all are in.
	IANParts map[string][]int `json:"ian_parts,omitempty"`
	// MPPS maps Performed Procedure Step SOP Instance UIDs to their latest
	// status (IN PROGRESS, COMPLETED, DISCONTINUED).
	MPPS map[string]string `json:"mpps,omitempty"`
	// Status is StudyReceiving until the study is first available.
	Status string `json:"status"`
	// AvailableSent: IMAGING_STUDY_AVAILABLE was emitted.
	AvailableSent bool `json:"available_sent,omitempty"`
	// LastProgress is the observation time of the last PROGRESS event,
	// LastArrival that of the last new or changed instance.
	LastProgress time.Time `json:"last_progress,omitzero"`
	LastArrival  time.Time `json:"last_arrival,omitzero"`
	// Changes since the last AVAILABLE or UPDATED event: instances added,
	// series added, instances whose attributes changed.
	Added     int `json:"added,omitempty"`
	NewSeries int `json:"new_series,omitempty"`
	Corrected int `json:"corrected,omitempty"`
	// AvailabilityChanged counts instances whose availability an IAN
	// changed since the last AVAILABLE or UPDATED event.
	AvailabilityChanged int `json:"availability_changed,omitempty"`
	// ReadModelPatient is the patient whose read model holds the study
	// (it moves when a correction changes the Patient ID).
	ReadModelPatient string `json:"read_model_patient,omitempty"`
	// ExpectedFrom names what listed the Expected instances: ExpectedIAN,
	// ExpectedMPPS (sorted; empty when none did, or in a state of a
	// radbridge before completion reasons).
	ExpectedFrom []string `json:"expected_from,omitempty"`
	// Completion says why the study first counted as complete; nil until
	// it did.
	Completion *Completion `json:"completion,omitempty"`
	// Records are ingest records that made the study, for explaining it:
	// its first instance, IANs, MPPS updates, its completion and operator
	// actions (at most StudyRecordsKept), and LastInstance its newest
	// instance's.
	Records      []uint64 `json:"records,omitempty"`
	LastInstance uint64   `json:"last_instance,omitempty"`
	// Operator corrections (see Reconcile): the study was marked entered
	// in error; unlinked from its orders; moved to patient PatientOverride
	// (its images' Patient ID was wrong); Actions lists them.
	EnteredInError  bool      `json:"entered_in_error,omitempty"`
	AccessionLinked bool      `json:"accession_linked,omitempty"` // AccessionNumber is the linked order's
	Arrived         time.Time `json:"arrived,omitzero"`           // the first observation of the study
	Unlinked        bool      `json:"unlinked,omitempty"`
	PatientOverride string    `json:"patient_override,omitempty"`
	Actions         []Action  `json:"actions,omitempty"`
}

// StudyRecordsKept bounds StudyState.Records.
const StudyRecordsKept = 64

// StudyEnteredInError is the explained status of a study an operator
// marked entered in error.
const StudyEnteredInError = "entered-in-error"

// record notes ingest record seq as one that made the study.
func (s *StudyState) record(seq uint64) {
	if seq == 0 || len(s.Records) >= StudyRecordsKept || slices.Contains(s.Records, seq) {
		return
	}
	s.Records = append(s.Records, seq)
}

// Completion reasons: why a study counts as complete
// (CompletionExtension, the event's completion).
const (
	// CompletedByIAN: an Instance Availability Notification (every part of
	// it) said the archive holds the study.
	CompletedByIAN = "ian"
	// CompletedByMPPS: an MPPS COMPLETED named the study's instances and
	// every one of them was received.
	CompletedByMPPS = "mpps-completed"
	// CompletedBySTOW: a STOW-RS request that stored instances of the
	// study ended (every instance it stored was received).
	CompletedBySTOW = "stow-rs"
	// CompletedByQuietPeriod: no new instance arrived for the quiet period
	// (--study-quiet-period).
	CompletedByQuietPeriod = "quiet-period"
)

// Where the expected instance count came from (Completion.ExpectedFrom).
const (
	ExpectedIAN  = "ian"
	ExpectedMPPS = "mpps"
	ExpectedSTOW = "stow-rs"
)

// Completion is the reason a study first counted as complete, with its
// evidence as of that moment.
type Completion struct {
	Reason string `json:"reason"`
	// Received is how many instances a C-STORE (or STOW-RS) had brought;
	// Expected how many an IAN or MPPS had named (0: unknown), and
	// ExpectedFrom which of them.
	Received     int      `json:"received"`
	Expected     int      `json:"expected,omitempty"`
	ExpectedFrom []string `json:"expected_from,omitempty"`
	// IngestSeq is the ingest record that completed it (a timer's firing
	// for the quiet period).
	IngestSeq uint64 `json:"ingest_seq"`
}

// expectedBy records that source (ExpectedIAN, ExpectedMPPS) listed
// expected instances.
func (s *StudyState) expectedBy(source string) {
	if !slices.Contains(s.ExpectedFrom, source) {
		s.ExpectedFrom = append(s.ExpectedFrom, source)
		sort.Strings(s.ExpectedFrom)
	}
}

// SeriesState is one series of a study.
type SeriesState struct {
	UID         string `json:"uid"`
	Number      int    `json:"number,omitempty"`
	Modality    string `json:"modality,omitempty"`
	Description string `json:"description,omitempty"`
	BodyPart    string `json:"body_part,omitempty"`
	// Instances by SOP Instance UID.
	Instances map[string]*InstanceState `json:"instances,omitempty"`
}

// InstanceState is one instance of a series.
type InstanceState struct {
	SOPClassUID string `json:"sop_class_uid,omitempty"`
	Number      int    `json:"number,omitempty"`
	Frames      int    `json:"frames,omitempty"`
	// Received is true once a C-STORE brought it; an instance only listed
	// by an IAN is not received.
	Received bool `json:"received,omitempty"`
	// Digest identifies the attributes it was received with, so a resend
	// is told apart from a correction.
	Digest string `json:"digest,omitempty"`
	// Availability is the Instance Availability (0008,0056) the latest IAN
	// gave, when not ONLINE: NEARLINE, OFFLINE or UNAVAILABLE ("" is
	// ONLINE, or not stated).
	Availability string `json:"availability,omitempty"`
}

// ianAvailability normalises an IAN's Instance Availability: "" for
// ONLINE or absent.
func ianAvailability(v string) string {
	v = strings.ToUpper(strings.TrimSpace(v))
	if v == "ONLINE" {
		return ""
	}
	return v
}

// availabilityNote says how many instances are not online ("instances
// not online: 2 offline, 1 unavailable"), "" when all are; bad is true when some cannot
// be retrieved without intervention (OFFLINE, UNAVAILABLE).
func (s *StudyState) availabilityNote() (note string, bad bool) {
	counts := map[string]int{}
	for _, se := range s.Series {
		for _, in := range se.Instances {
			if in.Availability != "" {
				counts[in.Availability]++
			}
		}
	}
	var parts []string
	for _, a := range sortedMapKeys(counts) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[a], strings.ToLower(a)))
		bad = bad || a != "NEARLINE"
	}
	if len(parts) == 0 {
		return "", false
	}
	return "instances not online: " + strings.Join(parts, ", "), bad
}

// ianPart records part of parts of IAN sop and reports whether every part
// is in now.
func (s *StudyState) ianPart(sop string, part, parts int) bool {
	if s.IANParts == nil {
		s.IANParts = map[string][]int{}
	}
	seen := s.IANParts[sop]
	if !slices.Contains(seen, part) {
		seen = append(seen, part)
	}
	if len(seen) < parts {
		s.IANParts[sop] = seen
		return false
	}
	delete(s.IANParts, sop)
	if len(s.IANParts) == 0 {
		s.IANParts = nil
	}
	return true
}

// counts returns how many instances a C-STORE brought, and how many are
// known (received or listed by an IAN).
func (s *StudyState) counts() (received, total int) {
	for _, se := range s.Series {
		for _, in := range se.Instances {
			total++
			if in.Received {
				received++
			}
		}
	}
	return received, total
}

// find returns the series holding SOP Instance UID sop, or nil.
func (s *StudyState) find(sop string) *SeriesState {
	for _, se := range s.Series {
		if se.Instances[sop] != nil {
			return se
		}
	}
	return nil
}

// missing counts the expected instances not received.
func (s *StudyState) missing() int {
	n := 0
	for sop := range s.Expected {
		se := s.find(sop)
		if se == nil || !se.Instances[sop].Received {
			n++
		}
	}
	return n
}

func (s *StudyState) changed() bool {
	return s.Added > 0 || s.NewSeries > 0 || s.Corrected > 0 || s.AvailabilityChanged > 0
}

func (s *StudyState) mppsStatus(status string) bool {
	for _, st := range s.MPPS {
		if st == status {
			return true
		}
	}
	return false
}

// modalities returns the distinct series modalities, sorted.
func (s *StudyState) modalities() []string {
	seen := map[string]bool{}
	var out []string
	for _, se := range s.Series {
		if se.Modality != "" && !seen[se.Modality] {
			seen[se.Modality] = true
			out = append(out, se.Modality)
		}
	}
	sort.Strings(out)
	return out
}

// label names the study in messages: its description, else its modalities.
func (s *StudyState) label() string {
	if s.Description != "" {
		return s.Description
	}
	if m := s.modalities(); len(m) > 0 {
		return strings.Join(m, "/")
	}
	return "imaging study"
}

// quietKey is the timer of a study's quiet period.
func quietKey(uid string) string { return "quiet:" + uid }

type studyQuietBody struct {
	Study string `json:"study"`
}

type dicomMapper struct{ o Options }

// dicomRules maps DICOM observations: C-STORE headers, IANs and MPPS
// updates. Quiet-period timers wake the instance rule.
func dicomRules(o Options) map[string]Rule {
	d := &dicomMapper{o: o}
	return map[string]Rule{
		ingest.KindDICOMInstance: RuleFunc(d.instance),
		ingest.KindDICOMIAN:      RuleFunc(d.ian),
		ingest.KindDICOMMPPS:     RuleFunc(d.mpps),
		ingest.KindReconcile:     RuleFunc(d.reconcile),
		ingest.KindSTOWRequest:   RuleFunc(d.stowRequest),
	}
}

func studyOf(c *Context, uid string) *StudyState {
	st := c.State.study(uid)
	if st == nil {
		st = &StudyState{UID: uid, Status: StudyReceiving, Series: map[string]*SeriesState{}, Arrived: c.Rec.Time}
		c.State.Studies[uid] = st
	}
	if st.Series == nil {
		st.Series = map[string]*SeriesState{}
	}
	return st
}

func (s *StudyState) series(uid string) (*SeriesState, bool) {
	se := s.Series[uid]
	if se != nil {
		return se, false
	}
	se = &SeriesState{UID: uid, Instances: map[string]*InstanceState{}}
	s.Series[uid] = se
	return se, true
}

// zone is the zone of the study's date and time: its Timezone Offset From
// UTC, else the zone recorded when it was received, else def.
func (s *StudyState) zone(def *time.Location) *time.Location {
	if l, ok := utcOffset(s.TZOffset); ok {
		return l
	}
	return zoneOf(s.Zone, def)
}

func dicomSet(dst *string, v string) {
	if v = strings.TrimSpace(v); v != "" {
		*dst = v
	}
}

// instance maps a C-STORE header, or a study's quiet period ending.
func (d *dicomMapper) instance(c *Context) error {
	if c.Timer != nil {
		return d.quiet(c)
	}
	in, err := ingest.DecodeInstance(c.Rec.Observation)
	if err != nil {
		return err
	}
	if in.StudyInstanceUID == "" || in.SOPInstanceUID == "" || in.SeriesInstanceUID == "" {
		return errors.New("dicom instance: study, series and SOP instance UIDs required")
	}
	st := studyOf(c, in.StudyInstanceUID)
	digest := in.AttributeDigest()
	old := st.find(in.SOPInstanceUID)
	var inst *InstanceState
	if old != nil {
		inst = old.Instances[in.SOPInstanceUID]
		if inst.Received && inst.Digest == digest {
			return nil // a resend: nothing new
		}
		// A correction, or an instance an IAN listed now arriving.
		st.Corrected++
		if old.UID != in.SeriesInstanceUID {
			delete(old.Instances, in.SOPInstanceUID)
			if len(old.Instances) == 0 {
				delete(st.Series, old.UID)
			}
		}
	}
	se, created := st.series(in.SeriesInstanceUID)
	if created && old == nil {
		st.NewSeries++
	}
	if old == nil {
		st.Added++
	}
	if inst == nil {
		inst = &InstanceState{}
	}
	se.Instances[in.SOPInstanceUID] = inst
	inst.SOPClassUID, inst.Number, inst.Frames = in.SOPClassUID, in.InstanceNumber, in.NumberOfFrames
	inst.Received, inst.Digest = true, digest
	if in.SeriesNumber != 0 {
		se.Number = in.SeriesNumber
	}
	dicomSet(&se.Modality, strings.ToUpper(in.Modality))
	dicomSet(&se.Description, in.SeriesDescription)
	dicomSet(&se.BodyPart, strings.ToUpper(in.BodyPartExamined))

	// The Patient ID is the patient's id whatever its issuer (a site whose
	// MRN issuer differs still gets the study under that Patient ID); the
	// issuer is kept for the FHIR identifier.
	dicomSet(&st.PatientID, in.PatientID)
	dicomSet(&st.IssuerOfPatientID, in.IssuerOfPatientID)
	if !st.AccessionLinked {
		dicomSet(&st.AccessionNumber, in.AccessionNumber)
	}
	dicomSet(&st.Description, in.StudyDescription)
	if strings.TrimSpace(in.StudyDate) != "" {
		st.TZOffset, st.Zone = strings.TrimSpace(in.TimezoneOffsetFromUTC), c.Rec.Zone
	}
	dicomSet(&st.Date, in.StudyDate)
	dicomSet(&st.Time, in.StudyTime)
	dicomSet(&st.Referrer, in.ReferringPhysicianName)
	st.LastArrival = c.Rec.Time
	if len(st.Records) == 0 {
		st.record(c.Rec.Seq)
	}
	st.LastInstance = c.Rec.Seq

	if !st.AvailableSent && st.mppsStatus(ingest.MPPSCompleted) && len(st.Expected) > 0 && st.missing() == 0 {
		return d.complete(c, st, CompletedByMPPS, "")
	}
	if err := c.Schedule(quietKey(st.UID), ingest.KindDICOMInstance, c.Rec.Time.Add(d.o.QuietPeriod), studyQuietBody{Study: st.UID}); err != nil {
		return err
	}
	if st.AvailableSent {
		return nil // changes after availability are reported when the study is quiet again
	}
	if !st.LastProgress.IsZero() && c.Rec.Time.Sub(st.LastProgress) < d.o.ProgressInterval {
		return nil
	}
	st.LastProgress = c.Rec.Time
	received, _ := st.counts()
	count := studyPlural(received, "%d instance", "%d instances")
	if n := max(len(st.Expected), received); len(st.Expected) > 0 {
		count = fmt.Sprintf("%d of %s", received, studyPlural(n, "%d instance", "%d instances"))
	}
	return d.emit(c, st, rbv1.EventType_IMAGING_STUDY_PROGRESS, rbv1.Severity_SEVERITY_INFO,
		fmt.Sprintf("Receiving %s: %s", st.label(), count))
}

// quiet handles the end of a study's quiet period.
func (d *dicomMapper) quiet(c *Context) error {
	var b studyQuietBody
	if err := json.Unmarshal(c.Timer.Body, &b); err != nil {
		return fmt.Errorf("quiet timer body: %w", err)
	}
	st := c.State.study(b.Study)
	if st == nil {
		return nil
	}
	return d.complete(c, st, CompletedByQuietPeriod, "")
}

// complete makes the study available now: AVAILABLE the first time (for
// reason, one of the Completed* values), then UPDATED when something
// changed since the last event. note is appended to the message.
func (d *dicomMapper) complete(c *Context, st *StudyState, reason, note string) error {
	c.Cancel(quietKey(st.UID))
	if st.EnteredInError {
		return nil // an operator withdrew it
	}
	received, total := st.counts()
	if total == 0 {
		return nil
	}
	sev := rbv1.Severity_SEVERITY_SUCCESS
	var notes []string
	if n := st.missing(); n > 0 && received > 0 && !st.AvailableSent {
		// Some instances came, others the IAN or MPPS named did not: the
		// study is in the archive, but not everything reached us. (A study
		// known only from an IAN received nothing: that is how IAN-only
		// sites work, not a warning; and updates report changes only.)
		sev = rbv1.Severity_SEVERITY_WARNING
		notes = append(notes, fmt.Sprintf("%d of %d instances not received", n, len(st.Expected)))
	}
	if st.mppsStatus(ingest.MPPSDiscontinued) {
		notes = append(notes, "procedure step discontinued")
	}
	if avail, bad := st.availabilityNote(); avail != "" {
		notes = append(notes, avail)
		if bad {
			sev = rbv1.Severity_SEVERITY_WARNING
		}
	} else if st.AvailableSent && st.AvailabilityChanged > 0 {
		notes = append(notes, "all instances online")
	}
	if note != "" {
		notes = append(notes, note)
	}
	var typ rbv1.EventType
	var msg string
	if !st.AvailableSent {
		typ = rbv1.EventType_IMAGING_STUDY_AVAILABLE
		msg = "New imaging study available: " + st.label()
	} else {
		if !st.changed() {
			return nil
		}
		typ = rbv1.EventType_IMAGING_STUDY_UPDATED
		msg = "Imaging study updated: " + st.label()
		var parts []string
		if st.Added > 0 {
			parts = append(parts, studyPlural(st.Added, "+%d instance", "+%d instances"))
		}
		if st.Corrected > 0 {
			parts = append(parts, studyPlural(st.Corrected, "%d instance corrected", "%d instances corrected"))
		}
		notes = append(parts, notes...)
		if sev == rbv1.Severity_SEVERITY_SUCCESS {
			sev = rbv1.Severity_SEVERITY_INFO
		}
	}
	if len(notes) > 0 {
		msg += " (" + strings.Join(notes, "; ") + ")"
	}
	if !st.AvailableSent {
		st.Completion = &Completion{Reason: reason, Received: received, Expected: len(st.Expected),
			ExpectedFrom: slices.Clone(st.ExpectedFrom), IngestSeq: c.Rec.Seq}
		st.record(c.Rec.Seq)
		if len(st.Expected) == 0 {
			st.Completion.ExpectedFrom = nil
		}
	}
	st.Status = StudyAvailable
	st.AvailableSent = true
	st.Added, st.NewSeries, st.Corrected, st.AvailabilityChanged = 0, 0, 0, 0
	return d.emit(c, st, typ, sev, msg)
}

func studyPlural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf(one, n)
	}
	return fmt.Sprintf(many, n)
}

// ian maps an Instance Availability Notification: the archive says the
// study holds these instances, so it is available now.
func (d *dicomMapper) ian(c *Context) error {
	n, err := ingest.DecodeIAN(c.Rec.Observation)
	if err != nil {
		return err
	}
	if n.StudyInstanceUID == "" {
		return errors.New("dicom IAN: study UID required")
	}
	st := studyOf(c, n.StudyInstanceUID)
	st.record(c.Rec.Seq)
	if st.Expected == nil {
		st.Expected = map[string]bool{}
	}
	for _, s := range n.Series {
		if s.SeriesInstanceUID == "" {
			continue
		}
		for _, i := range s.Instances {
			if i.SOPInstanceUID == "" {
				continue
			}
			st.Expected[i.SOPInstanceUID] = true
			st.expectedBy(ExpectedIAN)
			avail := ianAvailability(i.InstanceAvailability)
			if old := st.find(i.SOPInstanceUID); old != nil {
				// Known: an IAN saying it moved (NEARLINE, OFFLINE,
				// UNAVAILABLE, back ONLINE) updates the study.
				if in := old.Instances[i.SOPInstanceUID]; in.Availability != avail {
					in.Availability = avail
					st.AvailabilityChanged++
				}
				continue
			}
			se, created := st.series(s.SeriesInstanceUID)
			if created {
				st.NewSeries++
			}
			se.Instances[i.SOPInstanceUID] = &InstanceState{SOPClassUID: i.SOPClassUID, Availability: avail}
			st.Added++
		}
	}
	if len(st.Expected) == 0 {
		st.Expected = nil
	}
	if n.Parts > 1 && !st.ianPart(n.SOPInstanceUID, n.Part, n.Parts) {
		return nil // complete once every part of a large IAN is in
	}
	return d.complete(c, st, CompletedByIAN, "")
}

// mpps maps an MPPS N-CREATE or N-SET. COMPLETED tells which instances the
// study should hold; once all are in, the study is available at once.
// DISCONTINUED is only a hint, shown in the message. Only the transitions
// of PS3.4 F.7 apply: a step that is COMPLETED or DISCONTINUED is final,
// and a later update of it (which the SCP refuses since it records step
// states, but older ingest logs may hold) changes nothing.
func (d *dicomMapper) mpps(c *Context) error {
	u, err := ingest.DecodeMPPS(c.Rec.Observation)
	if err != nil {
		return err
	}
	if u.SOPInstanceUID == "" {
		return errors.New("dicom MPPS: SOP instance UID required")
	}
	uids := dicomNonEmpty(u.StudyInstanceUIDs)
	if len(uids) == 0 {
		// An N-SET names only its MPPS: find the studies its N-CREATE named
		// (those evicted with a cold patient are reloaded first).
		c.State.mppsStudies(u.SOPInstanceUID)
		for uid, st := range c.State.Studies {
			if _, ok := st.MPPS[u.SOPInstanceUID]; ok {
				uids = append(uids, uid)
			}
		}
		sort.Strings(uids)
	}
	for _, uid := range uids {
		st := studyOf(c, uid)
		st.record(c.Rec.Seq)
		if st.MPPS == nil {
			st.MPPS = map[string]string{}
		}
		status := st.MPPS[u.SOPInstanceUID]
		if status == ingest.MPPSCompleted || status == ingest.MPPSDiscontinued {
			continue // final (PS3.4 F.7.2.2): no transition, no attribute change
		}
		if u.Status != "" {
			status = strings.ToUpper(strings.TrimSpace(u.Status))
		}
		st.MPPS[u.SOPInstanceUID] = status
		if st.PatientID == "" {
			dicomSet(&st.PatientID, u.PatientID)
		}
		if st.AccessionNumber == "" {
			if a := dicomNonEmpty(u.AccessionNumbers); len(a) > 0 {
				st.AccessionNumber = a[0]
			}
		}
		// The referenced instances belong to the study only when the step
		// names one study; with several they cannot be told apart.
		if status == ingest.MPPSCompleted && len(uids) == 1 {
			for _, s := range u.Series {
				for _, sop := range s.SOPInstanceUIDs {
					if sop == "" {
						continue
					}
					if st.Expected == nil {
						st.Expected = map[string]bool{}
					}
					st.Expected[sop] = true
					st.expectedBy(ExpectedMPPS)
				}
			}
		}
		received, _ := st.counts()
		if status == ingest.MPPSCompleted && !st.AvailableSent && received > 0 && len(st.Expected) > 0 && st.missing() == 0 {
			if err := d.complete(c, st, CompletedByMPPS, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// stowRequest maps the end of a STOW-RS request: the study holds the
// instances it stored (they count as expected, from "stow-rs"), and once
// every one was received it is complete (AVAILABLE the first time, UPDATED
// when something changed since).
func (d *dicomMapper) stowRequest(c *Context) error {
	r, err := ingest.DecodeSTOWRequest(c.Rec.Observation)
	if err != nil {
		return err
	}
	st := c.State.study(r.StudyInstanceUID)
	if st == nil || len(r.SOPInstanceUIDs) == 0 {
		return nil
	}
	st.record(c.Rec.Seq)
	if st.Expected == nil {
		st.Expected = map[string]bool{}
	}
	for _, sop := range r.SOPInstanceUIDs {
		if sop != "" {
			st.Expected[sop] = true
		}
	}
	st.expectedBy(ExpectedSTOW)
	if st.missing() > 0 {
		return nil // the quiet period decides
	}
	return d.complete(c, st, CompletedBySTOW, "")
}

func dicomNonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// emit sends an event about st carrying its ImagingStudy and updates the
// patient's read model.
func (d *dicomMapper) emit(c *Context, st *StudyState, typ rbv1.EventType, sev rbv1.Severity, msg string) error {
	status := "registered"
	if st.Status == StudyAvailable {
		status = "available"
	}
	if c.Timer == nil {
		src := c.Rec.Source
		st.Source = &src
	}
	res := imagingStudy(st, status, d.o)
	viewer := studyLinks(res, st, d.o)
	pb := toStruct(res)
	if pb == nil {
		return fmt.Errorf("imaging study resource is not JSON")
	}
	key := PatientKey(st.PatientID, st.IssuerOfPatientID, d.o.DICOMPatientIssuer)
	if st.PatientOverride != "" {
		key = st.PatientOverride // moved by an operator
	}
	if st.EnteredInError {
		res["status"] = "entered-in-error"
		pb = toStruct(res)
	}
	acc := st.AccessionNumber
	if st.Unlinked {
		acc = "" // joins nothing (the resource keeps the images' accession)
	}
	c.Emit(&rbv1.Event{
		Type:             typ,
		PatientId:        key,
		AccessionNumber:  acc,
		StudyInstanceUid: st.UID,
		Severity:         sev,
		Message:          msg,
		Priority:         rbv1.Priority_PRIORITY_ROUTINE,
		ResourceType:     "ImagingStudy",
		ResourceId:       StudyResourceID(st.UID),
		Resource:         pb,
		Source:           eventSource(st.Source),
		ViewerUrl:        viewer,
		Completion:       completionProto(st, typ),
	})
	if prev := st.ReadModelPatient; prev != "" && prev != key {
		if p := c.State.patient(prev); p != nil {
			delete(p.Studies, st.UID)
			recountBodyRegions(c.State, p)
			c.Touch(prev)
		}
	}
	st.ReadModelPatient = key
	if key == "" {
		return nil
	}
	p := c.State.Patient(key)
	setResource(&p.Studies, StudyResourceID(st.UID), res)
	recountBodyRegions(c.State, p)
	c.Touch(key)
	return nil
}

// completionProto is the event's completion: on IMAGING_STUDY_AVAILABLE
// only.
func completionProto(st *StudyState, typ rbv1.EventType) *rbv1.Completion {
	cm := st.Completion
	if cm == nil || typ != rbv1.EventType_IMAGING_STUDY_AVAILABLE {
		return nil
	}
	return &rbv1.Completion{Reason: cm.Reason, InstancesReceived: uint32(cm.Received), InstancesExpected: uint32(cm.Expected),
		ExpectedFrom: slices.Clone(cm.ExpectedFrom), IngestSequence: cm.IngestSeq}
}

// bodyRegions recounts a patient's studies per body region: a study counts
// once for each distinct body part of its series.
func recountBodyRegions(s *State, p *readmodel.Patient) {
	counts := map[string]uint32{}
	for uid := range p.Studies {
		st := s.study(uid)
		if st == nil {
			continue
		}
		seen := map[string]bool{}
		for _, se := range st.Series {
			if r := se.BodyPart; r != "" && !seen[r] {
				seen[r] = true
				counts[r]++
			}
		}
	}
	if len(counts) == 0 {
		counts = nil
	}
	p.BodyRegions = counts
}

// eventSource is the event source of a recorded observation source; nil
// lets the mapper fill in the current observation's.
func eventSource(s *ingest.Source) *rbv1.Source {
	if s == nil {
		return nil
	}
	return &rbv1.Source{Protocol: s.Protocol, CallingAeTitle: s.CallingAETitle, CalledAeTitle: s.CalledAETitle}
}
