package rules

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// FHIR R4 ImagingStudy (https://hl7.org/fhir/R4/imagingstudy.html) built
// from a StudyState. Values follow the DICOM mapping of the FHIR spec:
// UIDs as urn:oid, modalities from the DICOM DCM code system, body parts
// from DICOM PS3.16 CID 4031 (SNOMED CT).

const (
	studySystemUID     = "urn:dicom:uid"
	studySystemDCM     = "http://dicom.nema.org/resources/ontology/DCM"
	studySystemSNOMED  = "http://snomed.info/sct"
	studySystemV2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
	studySystemURI     = "urn:ietf:rfc:3986"
	dataAbsentReason   = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
)

// InstanceAvailabilityExtension carries, on an ImagingStudy.series.instance,
// the Instance Availability (0008,0056) an IAN gave when it is not ONLINE:
// NEARLINE, OFFLINE or UNAVAILABLE (FHIR R4 ImagingStudy has no element for
// it). An extension's url SHALL be a URL (FHIR R4 2.21.0.1).
const InstanceAvailabilityExtension = "https://radbridge.dev/fhir/StructureDefinition/instance-availability"

// dicomZone is the zone of times without an offset (DICOM StudyDate and
// StudyTime, HL7 DTM) when neither the observation nor Options.Zone names
// one: the machine's, as before zones were recorded.
var dicomZone = time.Local

// modalityNames are the displays of common DICOM modalities (PS3.16 CID 29
// and CID 33).
var dicomModalityNames = map[string]string{
	"AR": "Autorefraction", "AU": "Audio", "BDUS": "Ultrasound Bone Densitometry",
	"BI": "Biomagnetic Imaging", "BMD": "Bone Mineral Densitometry", "CR": "Computed Radiography",
	"CT": "Computed Tomography", "DG": "Diaphanography", "DOC": "Document", "DX": "Digital Radiography",
	"ECG": "Electrocardiography", "ES": "Endoscopy", "GM": "General Microscopy", "IO": "Intra-oral Radiography",
	"IVOCT": "Intravascular Optical Coherence Tomography", "IVUS": "Intravascular Ultrasound",
	"KO": "Key Object Selection", "MG": "Mammography", "MR": "Magnetic Resonance", "NM": "Nuclear Medicine",
	"OCT": "Optical Coherence Tomography", "OP": "Ophthalmic Photography", "OT": "Other",
	"PR": "Presentation State", "PT": "Positron emission tomography", "PX": "Panoramic X-Ray",
	"RF": "Radio Fluoroscopy", "RG": "Radiographic imaging", "RTIMAGE": "RT Image", "SC": "Secondary Capture",
	"SEG": "Segmentation", "SM": "Slide Microscopy", "SR": "SR Document", "US": "Ultrasound",
	"XA": "X-Ray Angiography", "XC": "External-camera Photography",
}

// bodyParts maps Body Part Examined (0018,0015) defined terms to SNOMED CT
// (DICOM PS3.16 annex L, CID 4031).
var dicomBodyParts = map[string][2]string{
	"ABDOMEN":       {"818981001", "Abdomen"},
	"ABDOMENPELVIS": {"818982008", "Abdomen and Pelvis"},
	"ANKLE":         {"70258002", "Ankle joint"},
	"BRAIN":         {"12738006", "Brain"},
	"BREAST":        {"76752008", "Breast"},
	"CHEST":         {"816094009", "Chest"},
	"CHESTABDOMEN":  {"416550000", "Chest and Abdomen"},
	"CHESTABDPELV":  {"416775004", "Chest, Abdomen and Pelvis"},
	"CLAVICLE":      {"51299004", "Clavicle"},
	"CSPINE":        {"122494005", "Cervical spine"},
	"ELBOW":         {"16953009", "Elbow joint"},
	"EXTREMITY":     {"66019005", "Extremity"},
	"FOOT":          {"56459004", "Foot"},
	"HAND":          {"85562004", "Hand"},
	"HEAD":          {"69536005", "Head"},
	"HEADNECK":      {"774007", "Head and Neck"},
	"HEART":         {"80891009", "Heart"},
	"HIP":           {"29836001", "Hip"},
	"KNEE":          {"72696002", "Knee"},
	"LSPINE":        {"122496007", "Lumbar spine"},
	"NECK":          {"45048000", "Neck"},
	"PELVIS":        {"816092008", "Pelvis"},
	"SHOULDER":      {"16982005", "Shoulder"},
	"SKULL":         {"89546000", "Skull"},
	"SPINE":         {"421060004", "Spine"},
	"TSPINE":        {"122495006", "Thoracic spine"},
	"WHOLEBODY":     {"38266002", "Entire body"},
	"WRIST":         {"74670003", "Wrist joint"},
}

func dicomModalityCoding(m string) map[string]any {
	if m == "" {
		return map[string]any{"display": "Unknown"}
	}
	c := map[string]any{"system": studySystemDCM, "code": m}
	if d := dicomModalityNames[m]; d != "" {
		c["display"] = d
	}
	return c
}

func studyBodySite(part string) map[string]any {
	if b, ok := dicomBodyParts[part]; ok {
		return map[string]any{"system": studySystemSNOMED, "code": b[0], "display": b[1]}
	}
	return map[string]any{"display": part}
}

// MaxListedInstances bounds the instances an ImagingStudy lists. A larger
// study (perfusion, fMRI: 50,000 instances and more) lists its series with
// their numberOfInstances but no instance element, and carries
// InstancesOmittedExtension, so that every event and read model stays far
// below the store's and the transports' message limits whatever the study's
// size. A consumer gets the instances from the archive (QIDO-RS
// /studies/{uid}/series/{uid}/instances at the ImagingStudy's endpoint).
const MaxListedInstances = 1000

// InstancesOmittedExtension marks an ImagingStudy whose series list no
// instances; its valueUnsignedInt is the study's numberOfInstances.
const InstancesOmittedExtension = "https://radbridge.dev/fhir/StructureDefinition/instances-omitted"

// CompletionExtension says why an ImagingStudy counts as complete, as of
// the moment it first did (docs/fhir-completion-reason.md). A complex
// extension: reason (valueCode: ian, mpps-completed, stow-rs,
// quiet-period), instancesReceived (valueUnsignedInt), instancesExpected
// (valueUnsignedInt, only when an IAN or MPPS named the instances) and
// expectedFrom (valueCode ian or mpps, one per source).
const CompletionExtension = "https://radbridge.dev/fhir/StructureDefinition/completion-reason"

func completionExtension(cm *Completion) map[string]any {
	sub := []any{
		map[string]any{"url": "reason", "valueCode": cm.Reason},
		map[string]any{"url": "instancesReceived", "valueUnsignedInt": cm.Received},
	}
	if cm.Expected > 0 {
		sub = append(sub, map[string]any{"url": "instancesExpected", "valueUnsignedInt": cm.Expected})
	}
	for _, f := range cm.ExpectedFrom {
		sub = append(sub, map[string]any{"url": "expectedFrom", "valueCode": f})
	}
	return map[string]any{"url": CompletionExtension, "extension": sub}
}

// imagingStudy returns the FHIR R4 ImagingStudy of st with status
// (registered, available, cancelled). Series are sorted by number then UID,
// instances likewise; no element is empty.
func imagingStudy(st *StudyState, status string, o Options) map[string]any {
	ids := []any{map[string]any{"system": studySystemUID, "value": "urn:oid:" + st.UID}}
	if st.AccessionNumber != "" {
		ids = append(ids, map[string]any{
			"type": map[string]any{"coding": []any{map[string]any{
				"system": studySystemV2_0203, "code": "ACSN",
			}}},
			"value": st.AccessionNumber,
		})
	}
	res := map[string]any{
		"resourceType": "ImagingStudy",
		"id":           StudyResourceID(st.UID),
		"identifier":   ids,
		"status":       status,
		"subject":      studySubject(st, o),
	}
	if s := DICOMDateTime(st.Date, st.Time, st.zone(o.zone())); s != "" {
		res["started"] = s
	}
	if st.Description != "" {
		res["description"] = st.Description
	}
	if r := dicomPersonName(st.Referrer); r != "" {
		res["referrer"] = map[string]any{"display": r}
	}
	var mods []any
	for _, m := range st.modalities() {
		mods = append(mods, dicomModalityCoding(m))
	}
	if len(mods) > 0 {
		res["modality"] = mods
	}

	series := make([]*SeriesState, 0, len(st.Series))
	for _, se := range st.Series {
		if len(se.Instances) > 0 {
			series = append(series, se)
		}
	}
	sort.Slice(series, func(i, j int) bool {
		if series[i].Number != series[j].Number {
			return series[i].Number < series[j].Number
		}
		return series[i].UID < series[j].UID
	})
	total := 0
	for _, se := range series {
		total += len(se.Instances)
	}
	list := total <= MaxListedInstances
	if !list {
		res["extension"] = []any{map[string]any{"url": InstancesOmittedExtension, "valueUnsignedInt": total}}
	}
	if cm := st.Completion; cm != nil {
		ext, _ := res["extension"].([]any)
		res["extension"] = append(ext, completionExtension(cm))
	}
	var out []any
	for _, se := range series {
		s := map[string]any{
			"uid":               se.UID,
			"modality":          dicomModalityCoding(se.Modality),
			"numberOfInstances": len(se.Instances),
		}
		if se.Number != 0 {
			s["number"] = se.Number
		}
		if se.Description != "" {
			s["description"] = se.Description
		}
		if se.BodyPart != "" {
			s["bodySite"] = studyBodySite(se.BodyPart)
		}
		out = append(out, s)
		if !list {
			continue
		}
		uids := make([]string, 0, len(se.Instances))
		for uid := range se.Instances {
			uids = append(uids, uid)
		}
		sort.Slice(uids, func(i, j int) bool {
			a, b := se.Instances[uids[i]], se.Instances[uids[j]]
			if a.Number != b.Number {
				return a.Number < b.Number
			}
			return uids[i] < uids[j]
		})
		var insts []any
		for _, uid := range uids {
			in := se.Instances[uid]
			i := map[string]any{"uid": uid}
			if in.SOPClassUID != "" {
				i["sopClass"] = map[string]any{"system": studySystemURI, "code": "urn:oid:" + in.SOPClassUID}
			} else {
				// Required (1..1) in R4: say it is unknown.
				i["sopClass"] = map[string]any{"extension": []any{map[string]any{
					"url": dataAbsentReason, "valueCode": "unknown",
				}}}
			}
			if in.Number != 0 {
				i["number"] = in.Number
			}
			if in.Availability != "" {
				i["extension"] = []any{map[string]any{"url": InstanceAvailabilityExtension, "valueCode": in.Availability}}
			}
			insts = append(insts, i)
		}
		s["instance"] = insts
	}
	if len(out) > 0 {
		res["numberOfSeries"] = len(out)
		res["numberOfInstances"] = total
		res["series"] = out
	}
	return res
}

// studySubject references the patient by identifier (see patientSubject).
// The patient's name stays out: subscribers already know whose room they
// are in, and the less patient data travels the better.
func studySubject(st *StudyState, o Options) map[string]any {
	if st.PatientOverride != "" { // moved by an operator: the patient key it was moved to
		id, issuer, _ := strings.Cut(st.PatientOverride, "^")
		return patientSubject(o, st.PatientOverride, id, issuer)
	}
	key := PatientKey(st.PatientID, st.IssuerOfPatientID, o.DICOMPatientIssuer)
	return patientSubject(o, key, st.PatientID, st.IssuerOfPatientID)
}

func isDICOMOID(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return strings.Contains(s, ".")
}

// personName renders a DICOM PN (family^given^middle^prefix^suffix, first
// component group) as "prefix given middle family suffix".
func dicomPersonName(pn string) string {
	pn, _, _ = strings.Cut(pn, "=")
	c := strings.Split(pn, "^")
	for len(c) < 5 {
		c = append(c, "")
	}
	var parts []string
	for _, p := range []string{c[3], c[1], c[2], c[0], c[4]} {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

// DICOMDateTime converts a DICOM date (DA, YYYYMMDD) and time (TM,
// HH[MM[SS[.F{1,6}]]]) read in loc to a FHIR dateTime: the date alone when
// the time is missing or malformed, "" when the date is. The legacy forms
// YYYY.MM.DD and HH:MM:SS are accepted.
func DICOMDateTime(da, tm string, loc *time.Location) string {
	da = strings.ReplaceAll(strings.TrimSpace(da), ".", "")
	if len(da) != 8 || !dicomDigits(da) {
		return ""
	}
	y, _ := strconv.Atoi(da[0:4])
	mo, _ := strconv.Atoi(da[4:6])
	d, _ := strconv.Atoi(da[6:8])
	day := time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC)
	if day.Year() != y || int(day.Month()) != mo || day.Day() != d {
		return ""
	}
	date := day.Format("2006-01-02")
	tm = strings.ReplaceAll(strings.TrimSpace(tm), ":", "")
	whole, frac, hasFrac := strings.Cut(tm, ".")
	if whole == "" || len(whole)%2 != 0 || len(whole) > 6 || !dicomDigits(whole) ||
		(hasFrac && (frac == "" || len(frac) > 6 || !dicomDigits(frac))) {
		return date
	}
	for len(whole) < 6 {
		whole += "00"
	}
	h, _ := strconv.Atoi(whole[0:2])
	mi, _ := strconv.Atoi(whole[2:4])
	s, _ := strconv.Atoi(whole[4:6])
	if h > 23 || mi > 59 || s > 60 {
		return date
	}
	if s == 60 {
		s = 59 // FHIR time has no leap second
	}
	if loc == nil {
		loc = time.UTC
	}
	t := time.Date(y, time.Month(mo), d, h, mi, s, 0, loc)
	out := fmt.Sprintf("%sT%02d:%02d:%02d", date, h, mi, s)
	if hasFrac {
		out += "." + frac
	}
	return out + t.Format("Z07:00")
}

func dicomDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
