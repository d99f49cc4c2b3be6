// Package notify serves POST /v1/dicom/notifications: an archive (an
// Orthanc Lua callback, a PACS script) tells radbridge about stored
// instances in DICOM JSON (DICOM PS3.18 annex F.2) instead of forwarding
// them over DICOM. Each instance is recorded like a C-STORE header; a
// notification marked complete is also recorded like an Instance
// Availability Notification (PS3.4 annex R), so the study is available at
// once.
package notify

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"

	"radbridge/dicom/part10"
	"radbridge/ingest"
)

// Limits of one notification.
const (
	MaxBody      = 16 << 20
	MaxInstances = 100000
)

// ErrInvalid is wrapped by every Parse error: the notification is malformed
// and nothing of it may be recorded.
var ErrInvalid = errors.New("invalid notification")

// Notification is a parsed, validated notification.
type Notification struct {
	Instances []*ingest.Instance
	// Complete: the sender says the study holds exactly Instances.
	Complete bool
}

// StudyUIDs returns the distinct Study Instance UIDs, sorted.
func (n *Notification) StudyUIDs() []string {
	seen := map[string]bool{}
	var out []string
	for _, i := range n.Instances {
		if !seen[i.StudyInstanceUID] {
			seen[i.StudyInstanceUID] = true
			out = append(out, i.StudyInstanceUID)
		}
	}
	sort.Strings(out)
	return out
}

// IAN returns the availability notification of a complete notification:
// every instance ONLINE, under a SOP Instance UID derived from the study
// and its SOP Instance UIDs (a resent notification gets the same UID).
func (n *Notification) IAN() *ingest.IAN {
	if !n.Complete || len(n.Instances) == 0 {
		return nil
	}
	ian := &ingest.IAN{StudyInstanceUID: n.Instances[0].StudyInstanceUID}
	idx := map[string]int{}
	sops := make([]string, 0, len(n.Instances))
	for _, i := range n.Instances {
		k, ok := idx[i.SeriesInstanceUID]
		if !ok {
			k = len(ian.Series)
			idx[i.SeriesInstanceUID] = k
			ian.Series = append(ian.Series, ingest.IANSeries{SeriesInstanceUID: i.SeriesInstanceUID})
		}
		ian.Series[k].Instances = append(ian.Series[k].Instances, ingest.IANInstance{
			SOPClassUID: i.SOPClassUID, SOPInstanceUID: i.SOPInstanceUID, InstanceAvailability: "ONLINE",
		})
		sops = append(sops, i.SOPInstanceUID)
	}
	sort.Strings(sops)
	h := sha256.New()
	h.Write([]byte(ian.StudyInstanceUID))
	for _, s := range sops {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	// PS3.5 B.2: a UUID-derived UID under 2.25.
	sum := h.Sum(nil)
	ian.SOPInstanceUID = "2.25." + new(big.Int).SetBytes(sum[:16]).String()
	return ian
}

// element is one attribute of a DICOM JSON data set.
type element struct {
	VR           string            `json:"vr"`
	Value        []json.RawMessage `json:"Value"`
	InlineBinary json.RawMessage   `json:"InlineBinary"`
	BulkDataURI  json.RawMessage   `json:"BulkDataURI"`
}

type dataset map[string]element

type wrapper struct {
	Study             dataset   `json:"study"`
	Instances         []dataset `json:"instances"`
	NumberOfInstances *int      `json:"number_of_instances"`
	Complete          bool      `json:"complete"`
}

// attr is an attribute we read: its tag, keyword, the VRs we accept and
// where it goes.
type attr struct {
	tag, name string
	vrs       []string
	set       func(i *ingest.Instance, v string)
	num       func(i *ingest.Instance, n int)
	required  bool
}

var attrs = []attr{
	{tag: "00080016", name: "SOPClassUID", vrs: []string{"UI"}, required: true, set: func(i *ingest.Instance, v string) { i.SOPClassUID = v }},
	{tag: "00080018", name: "SOPInstanceUID", vrs: []string{"UI"}, required: true, set: func(i *ingest.Instance, v string) { i.SOPInstanceUID = v }},
	{tag: "0020000D", name: "StudyInstanceUID", vrs: []string{"UI"}, required: true, set: func(i *ingest.Instance, v string) { i.StudyInstanceUID = v }},
	{tag: "0020000E", name: "SeriesInstanceUID", vrs: []string{"UI"}, required: true, set: func(i *ingest.Instance, v string) { i.SeriesInstanceUID = v }},
	{tag: "00020010", name: "TransferSyntaxUID", vrs: []string{"UI"}, set: func(i *ingest.Instance, v string) { i.TransferSyntaxUID = v }},
	{tag: "00080005", name: "SpecificCharacterSet", vrs: []string{"CS"}, set: func(i *ingest.Instance, v string) { i.SpecificCharacterSet = v }},
	{tag: "00100020", name: "PatientID", vrs: []string{"LO"}, set: func(i *ingest.Instance, v string) { i.PatientID = v }},
	{tag: "00100021", name: "IssuerOfPatientID", vrs: []string{"LO"}, set: func(i *ingest.Instance, v string) { i.IssuerOfPatientID = v }},
	{tag: "00100010", name: "PatientName", vrs: []string{"PN"}, set: func(i *ingest.Instance, v string) { i.PatientName = v }},
	{tag: "00100030", name: "PatientBirthDate", vrs: []string{"DA"}, set: func(i *ingest.Instance, v string) { i.PatientBirthDate = v }},
	{tag: "00100040", name: "PatientSex", vrs: []string{"CS"}, set: func(i *ingest.Instance, v string) { i.PatientSex = v }},
	{tag: "00080050", name: "AccessionNumber", vrs: []string{"SH"}, set: func(i *ingest.Instance, v string) { i.AccessionNumber = v }},
	{tag: "00080060", name: "Modality", vrs: []string{"CS"}, set: func(i *ingest.Instance, v string) { i.Modality = v }},
	{tag: "00180015", name: "BodyPartExamined", vrs: []string{"CS"}, set: func(i *ingest.Instance, v string) { i.BodyPartExamined = v }},
	{tag: "00081030", name: "StudyDescription", vrs: []string{"LO"}, set: func(i *ingest.Instance, v string) { i.StudyDescription = v }},
	{tag: "0008103E", name: "SeriesDescription", vrs: []string{"LO"}, set: func(i *ingest.Instance, v string) { i.SeriesDescription = v }},
	{tag: "00080020", name: "StudyDate", vrs: []string{"DA"}, set: func(i *ingest.Instance, v string) { i.StudyDate = v }},
	{tag: "00080030", name: "StudyTime", vrs: []string{"TM"}, set: func(i *ingest.Instance, v string) { i.StudyTime = v }},
	{tag: "00080201", name: "TimezoneOffsetFromUTC", vrs: []string{"SH"}, set: func(i *ingest.Instance, v string) { i.TimezoneOffsetFromUTC = v }},
	{tag: "00200010", name: "StudyID", vrs: []string{"SH"}, set: func(i *ingest.Instance, v string) { i.StudyID = v }},
	{tag: "00080090", name: "ReferringPhysicianName", vrs: []string{"PN"}, set: func(i *ingest.Instance, v string) { i.ReferringPhysicianName = v }},
	{tag: "00200011", name: "SeriesNumber", vrs: []string{"IS"}, num: func(i *ingest.Instance, n int) { i.SeriesNumber = n }},
	{tag: "00200013", name: "InstanceNumber", vrs: []string{"IS"}, num: func(i *ingest.Instance, n int) { i.InstanceNumber = n }},
	{tag: "00280008", name: "NumberOfFrames", vrs: []string{"IS"}, num: func(i *ingest.Instance, n int) { i.NumberOfFrames = n }},
}

// Parse decodes and validates a notification: a DICOM JSON array of
// instance data sets, or {"study": {…}, "instances": […],
// "number_of_instances": n, "complete": bool} whose study attributes apply
// to every instance that lacks them. Errors wrap ErrInvalid and say where.
func Parse(body []byte) (*Notification, error) {
	if len(body) > MaxBody {
		return nil, invalid("body of %d bytes is larger than %d", len(body), MaxBody)
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, invalid("empty body: want a DICOM JSON array of instances or a {\"study\",\"instances\"} object")
	}
	var w wrapper
	switch trimmed[0] {
	case '[':
		if err := decode(body, &w.Instances); err != nil {
			return nil, err
		}
	case '{':
		if err := decode(body, &w); err != nil {
			return nil, err
		}
	default:
		return nil, invalid("body is not a JSON array or object")
	}
	if len(w.Instances) == 0 {
		return nil, invalid("no instances")
	}
	if len(w.Instances) > MaxInstances {
		return nil, invalid("%d instances, more than %d", len(w.Instances), MaxInstances)
	}
	if w.NumberOfInstances != nil && *w.NumberOfInstances != len(w.Instances) {
		return nil, invalid("number_of_instances is %d but %d instances are listed", *w.NumberOfInstances, len(w.Instances))
	}
	n := &Notification{Complete: w.Complete, Instances: make([]*ingest.Instance, 0, len(w.Instances))}
	var study ingest.Instance
	if w.Study != nil {
		if err := fill(&study, w.Study); err != nil {
			return nil, invalid("study: %v", err)
		}
	}
	seen := make(map[string]int, len(w.Instances))
	for k, ds := range w.Instances {
		i := study
		if err := fill(&i, ds); err != nil {
			return nil, invalid("instance %d: %v", k, err)
		}
		for _, a := range attrs {
			if a.required && get(&i, a) == "" {
				return nil, invalid("instance %d: (%s,%s) %s missing", k, a.tag[:4], a.tag[4:], a.name)
			}
		}
		if w.Study != nil && study.StudyInstanceUID != "" && i.StudyInstanceUID != study.StudyInstanceUID {
			return nil, invalid("instance %d: StudyInstanceUID %s is not the study's %s", k, i.StudyInstanceUID, study.StudyInstanceUID)
		}
		if j, dup := seen[i.SOPInstanceUID]; dup {
			return nil, invalid("instance %d: SOPInstanceUID %s already given by instance %d", k, i.SOPInstanceUID, j)
		}
		seen[i.SOPInstanceUID] = k
		if n.Complete && len(n.Instances) > 0 && i.StudyInstanceUID != n.Instances[0].StudyInstanceUID {
			return nil, invalid("instance %d: complete covers one study, but it is in %s, not %s", k, i.StudyInstanceUID, n.Instances[0].StudyInstanceUID)
		}
		p := i
		n.Instances = append(n.Instances, &p)
	}
	return n, nil
}

func decode(body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return invalid("JSON syntax at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return invalid("JSON %s at byte %d is a %s, want %s", te.Field, te.Offset, te.Value, te.Type)
		}
		return invalid("JSON: %v", err)
	}
	if d.More() {
		return invalid("trailing data after the JSON value")
	}
	return nil
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

func get(i *ingest.Instance, a attr) string {
	switch a.tag {
	case "00080016":
		return i.SOPClassUID
	case "00080018":
		return i.SOPInstanceUID
	case "0020000D":
		return i.StudyInstanceUID
	case "0020000E":
		return i.SeriesInstanceUID
	}
	return ""
}

// fill sets i's fields from ds, checking tag syntax and the VR and value of
// every attribute we read.
func fill(i *ingest.Instance, ds dataset) error {
	for tag := range ds {
		if !isTag(tag) {
			return fmt.Errorf("key %q is not a tag of 8 hex digits", tag)
		}
	}
	for _, a := range attrs {
		e, ok := lookup(ds, a.tag)
		if !ok {
			continue
		}
		where := fmt.Sprintf("(%s,%s) %s", a.tag[:4], a.tag[4:], a.name)
		if !contains(a.vrs, e.VR) {
			return fmt.Errorf("%s has VR %q, want %s", where, e.VR, strings.Join(a.vrs, " or "))
		}
		if len(e.Value) == 0 {
			continue // present but empty: absent
		}
		if len(e.Value) > 1 && a.required {
			return fmt.Errorf("%s has %d values, want 1", where, len(e.Value))
		}
		v := e.Value[0]
		switch {
		case a.num != nil:
			n, err := number(v)
			if err != nil {
				return fmt.Errorf("%s: %v", where, err)
			}
			a.num(i, n)
		case e.VR == "PN":
			var pn struct {
				Alphabetic string `json:"Alphabetic"`
			}
			if err := json.Unmarshal(v, &pn); err != nil {
				return fmt.Errorf("%s: want {\"Alphabetic\": …}", where)
			}
			a.set(i, pn.Alphabetic)
		default:
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("%s: value is not a string", where)
			}
			if e.VR == "UI" {
				if err := part10.CheckUID(s); err != nil {
					return fmt.Errorf("%s %q: %v", where, s, err)
				}
			} else if len(s) > 1024 {
				return fmt.Errorf("%s: value of %d bytes is too long", where, len(s))
			}
			a.set(i, strings.TrimSpace(s))
		}
	}
	return nil
}

// lookup finds tag in either hex case.
func lookup(ds dataset, tag string) (element, bool) {
	if e, ok := ds[tag]; ok {
		return e, true
	}
	e, ok := ds[strings.ToLower(tag)]
	return e, ok
}

func isTag(s string) bool {
	if len(s) != 8 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// number reads an IS value: a JSON number or a decimal string (F.2.3.1).
func number(v json.RawMessage) (int, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		var f json.Number
		if err := json.Unmarshal(v, &f); err != nil {
			return 0, fmt.Errorf("value %s is not a number", v)
		}
		s = f.String()
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("value %s is not an integer string", v)
	}
	return int(n), nil
}
