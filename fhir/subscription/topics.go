package subscription

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"

	rbv1 "radbridge/proto/radbridge/v1"
)

// TopicBase is the canonical base of radbridge's SubscriptionTopics.
const TopicBase = "https://radbridge.dev/fhir/SubscriptionTopic/"

// Filter parameters a topic may declare.
const (
	ParamPatient    = "patient"
	ParamModality   = "modality"
	ParamIdentifier = "identifier"
	ParamStatus     = "status"
	ParamPriority   = "priority"
)

// Topic is one SubscriptionTopic: the radbridge event types that trigger
// it and the filters a subscription may set.
type Topic struct {
	// Name is the last path segment of URL.
	Name string
	// URL is the canonical (Subscription.criteria).
	URL string
	// Title says what it is about.
	Title string
	// Types are the radbridge event types that trigger a notification.
	Types []rbv1.EventType
	// Resources are the FHIR resource types of the focus.
	Resources []string
	// Filters are the filter parameters accepted, all optional unless
	// PatientRequired.
	Filters []string
	// PatientRequired: the topic needs a patient filter (the feed).
	PatientRequired bool
}

var allFilters = []string{ParamPatient, ParamModality, ParamIdentifier, ParamStatus, ParamPriority}

var catalogue = []Topic{
	{Name: "imaging-study-available", Title: "An imaging study became available (complete)",
		Types: []rbv1.EventType{rbv1.EventType_IMAGING_STUDY_AVAILABLE}, Resources: []string{"ImagingStudy"}},
	{Name: "imaging-study-updated", Title: "An imaging study changed, or its instances are arriving (progress)",
		Types: []rbv1.EventType{rbv1.EventType_IMAGING_STUDY_UPDATED, rbv1.EventType_IMAGING_STUDY_PROGRESS}, Resources: []string{"ImagingStudy"}},
	{Name: "imaging-report-ready", Title: "An imaging report is ready: preliminary, final or corrected",
		Types: []rbv1.EventType{rbv1.EventType_RESULT_RECEIVED, rbv1.EventType_IMAGING_REPORT_READY}, Resources: []string{"DiagnosticReport"}},
	{Name: "imaging-order-placed", Title: "An imaging order was placed",
		Types: []rbv1.EventType{rbv1.EventType_ORDER_PLACED}, Resources: []string{"ServiceRequest"}},
	{Name: "imaging-order-updated", Title: "An imaging order changed",
		Types: []rbv1.EventType{rbv1.EventType_ORDER_UPDATED}, Resources: []string{"ServiceRequest"}},
	{Name: "imaging-order-cancelled", Title: "An imaging order was cancelled or discontinued",
		Types: []rbv1.EventType{rbv1.EventType_ORDER_CANCELLED}, Resources: []string{"ServiceRequest"}},
	{Name: "patient-imaging-feed", Title: "Every imaging event of one patient (the topics above)", PatientRequired: true,
		Types: []rbv1.EventType{
			rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.EventType_IMAGING_STUDY_UPDATED, rbv1.EventType_IMAGING_STUDY_PROGRESS,
			rbv1.EventType_RESULT_RECEIVED, rbv1.EventType_IMAGING_REPORT_READY, rbv1.EventType_IMAGING_REPORT_UPDATED,
			rbv1.EventType_ORDER_PLACED, rbv1.EventType_ORDER_UPDATED, rbv1.EventType_ORDER_CANCELLED,
		},
		Resources: []string{"ImagingStudy", "DiagnosticReport", "ServiceRequest"}},
}

func init() {
	for i := range catalogue {
		catalogue[i].URL = TopicBase + catalogue[i].Name
		catalogue[i].Filters = allFilters
	}
}

// Topics returns the canonical URLs of every topic, for the
// CapabilityStatement (the backport's capabilitystatement-subscriptiontopic-canonical
// extension).
func Topics() []string {
	out := make([]string, len(catalogue))
	for i, t := range catalogue {
		out[i] = t.URL
	}
	return out
}

// Catalogue returns the topics.
func Catalogue() []Topic { return slices.Clone(catalogue) }

// TopicByURL returns the topic with canonical u (a "|version" suffix is
// ignored).
func TopicByURL(u string) (Topic, bool) {
	u, _, _ = strings.Cut(u, "|")
	for _, t := range catalogue {
		if t.URL == u {
			return t, true
		}
	}
	return Topic{}, false
}

// Filter is one filter of a subscription: parameter = value (a value list
// separated by commas matches any of them).
type Filter struct {
	// Resource is the resource type the criterion named ("" for any).
	Resource string   `json:"resource,omitempty"`
	Param    string   `json:"param"`
	Values   []string `json:"values"`
}

var (
	modalityRe = regexp.MustCompile(`^[A-Z0-9]{1,16}$`)
	statusRe   = regexp.MustCompile(`^[a-z][a-z-]{0,31}$`)
)

// statuses a status filter may name, by resource type (FHIR R4 value sets).
var statuses = map[string][]string{
	"ImagingStudy":     {"registered", "available", "cancelled", "entered-in-error", "unknown"},
	"DiagnosticReport": {"registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled", "entered-in-error", "unknown"},
	"ServiceRequest":   {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
}

// parseCriteria parses one backport-filter-criteria value of topic t:
// "[ResourceType]?param=value[&param=value…]" (the resource type may be
// left out: "?param=value" or "param=value").
func parseCriteria(t Topic, s string) ([]Filter, error) {
	if len(s) > 2048 {
		return nil, fmt.Errorf("filter criteria longer than 2048 characters")
	}
	if !fhirString(s) {
		return nil, fmt.Errorf("filter criteria %q: not a FHIR string (invalid UTF-8 or a control character)", s)
	}
	res, q, ok := strings.Cut(s, "?")
	if !ok {
		res, q = "", s
	}
	if res != "" && !slices.Contains(t.Resources, res) {
		return nil, fmt.Errorf("filter criteria %q: topic %s is about %s, not %s", s, t.Name, strings.Join(t.Resources, ", "), res)
	}
	if q == "" {
		return nil, fmt.Errorf("filter criteria %q: no parameter", s)
	}
	var out []Filter
	for _, part := range strings.Split(q, "&") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("filter criteria %q: %q is not param=value", s, part)
		}
		k, err1 := unescape(k)
		v, err2 := unescape(v)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("filter criteria %q: bad %%-escape", s)
		}
		if !fhirString(k) || !fhirString(v) {
			return nil, fmt.Errorf("filter criteria %q: a %%-escape makes a control character or invalid UTF-8", s)
		}
		if !slices.Contains(t.Filters, k) {
			return nil, fmt.Errorf("filter criteria %q: topic %s has no filter %q (filters: %s)", s, t.Name, k, strings.Join(t.Filters, ", "))
		}
		f := Filter{Resource: res, Param: k}
		for _, val := range strings.Split(v, ",") {
			if err := checkValue(t, res, k, val); err != nil {
				return nil, fmt.Errorf("filter criteria %q: %w", s, err)
			}
			f.Values = append(f.Values, val)
		}
		out = append(out, f)
	}
	return out, nil
}

// fhirString reports whether s may be a FHIR string: valid UTF-8 without
// control characters other than tab, carriage return and line feed (R4
// datatypes, string: [ \r\n\t\S]+). A value that is not would make the
// Subscription resource it is stored in invalid when rendered.
func fhirString(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 && r != '\t' && r != '\r' && r != '\n' {
			return false
		}
	}
	return true
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("bad escape")
		}
		var c byte
		for _, h := range s[i+1 : i+3] {
			c <<= 4
			switch {
			case h >= '0' && h <= '9':
				c |= byte(h - '0')
			case h >= 'a' && h <= 'f':
				c |= byte(h - 'a' + 10)
			case h >= 'A' && h <= 'F':
				c |= byte(h - 'A' + 10)
			default:
				return "", fmt.Errorf("bad escape")
			}
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String(), nil
}

func checkValue(t Topic, res, param, v string) error {
	if v == "" || len(v) > 256 || strings.ContainsAny(v, "\x00\r\n") {
		return fmt.Errorf("%s: empty, control characters or longer than 256 characters", param)
	}
	switch param {
	case ParamPatient:
		if id := patientValue(v); id == "" {
			return fmt.Errorf("patient %q: want Patient/<id>, <id> or system|value", v)
		}
	case ParamModality:
		if _, code, ok := strings.Cut(v, "|"); ok {
			v = code
		}
		if !modalityRe.MatchString(v) {
			return fmt.Errorf("modality %q: want a DICOM modality code (CT, MR …)", v)
		}
	case ParamStatus:
		if !statusRe.MatchString(v) {
			return fmt.Errorf("status %q: not a status code", v)
		}
		rs := t.Resources
		if res != "" {
			rs = []string{res}
		}
		for _, r := range rs {
			if slices.Contains(statuses[r], v) {
				return nil
			}
		}
		return fmt.Errorf("status %q: not a status of %s", v, strings.Join(rs, " or "))
	case ParamPriority:
		if v != "routine" && v != "stat" && v != "critical" {
			return fmt.Errorf("priority %q: want routine, stat or critical", v)
		}
	}
	return nil
}

// patientValue is the patient id a patient filter value names: the id of
// Patient/<id>, the value of system|value, or the value itself.
func patientValue(v string) string {
	if id, ok := strings.CutPrefix(v, "Patient/"); ok {
		v = id
	} else if _, val, ok := strings.Cut(v, "|"); ok {
		v = val
	}
	if v == "" || strings.ContainsAny(v, "/?&#") {
		return ""
	}
	return v
}

// Patients returns the patient ids the filters restrict to (nil: none).
func Patients(fs []Filter) []string {
	var out []string
	for _, f := range fs {
		if f.Param == ParamPatient {
			for _, v := range f.Values {
				out = append(out, patientValue(v))
			}
		}
	}
	return out
}

// Match reports whether ev triggers topic t under filters fs (all must
// match; within one filter any value).
func (t Topic) Match(ev *rbv1.Event, fs []Filter) bool {
	if !slices.Contains(t.Types, ev.GetType()) {
		return false
	}
	for _, f := range fs {
		if f.Resource != "" && f.Resource != ev.GetResourceType() {
			return false
		}
		if !slices.ContainsFunc(f.Values, func(v string) bool { return matchValue(ev, f.Param, v) }) {
			return false
		}
	}
	return true
}

func matchValue(ev *rbv1.Event, param, v string) bool {
	res := ev.GetResource().GetFields()
	switch param {
	case ParamPatient:
		if ev.GetPatientId() != patientValue(v) {
			return false
		}
		if sys, _, ok := strings.Cut(v, "|"); ok && sys != "" && !strings.HasPrefix(v, "Patient/") {
			got := res["subject"].GetStructValue().GetFields()["identifier"].GetStructValue().GetFields()["system"].GetStringValue()
			return got == sys
		}
		return true
	case ParamModality:
		sys, code, ok := strings.Cut(v, "|")
		if !ok {
			sys, code = "", v
		}
		match := func(c *structpb.Value) bool {
			f := c.GetStructValue().GetFields()
			return f["code"].GetStringValue() == code && (sys == "" || f["system"].GetStringValue() == sys)
		}
		for _, m := range res["modality"].GetListValue().GetValues() {
			if match(m) {
				return true
			}
		}
		for _, s := range res["series"].GetListValue().GetValues() {
			if match(s.GetStructValue().GetFields()["modality"]) {
				return true
			}
		}
		return false
	case ParamIdentifier:
		sys, val, ok := strings.Cut(v, "|")
		if !ok {
			sys, val = "", v
		}
		if sys == "" && (val == ev.GetAccessionNumber() || (ev.GetStudyInstanceUid() != "" && val == "urn:oid:"+ev.GetStudyInstanceUid())) {
			return true
		}
		for _, id := range res["identifier"].GetListValue().GetValues() {
			f := id.GetStructValue().GetFields()
			if f["value"].GetStringValue() == val && (sys == "" || f["system"].GetStringValue() == sys) {
				return true
			}
		}
		return false
	case ParamStatus:
		return res["status"].GetStringValue() == v
	case ParamPriority:
		switch ev.GetPriority() {
		case rbv1.Priority_PRIORITY_STAT:
			return v == "stat"
		case rbv1.Priority_PRIORITY_CRITICAL:
			return v == "critical"
		default:
			return v == "routine"
		}
	}
	return false
}
