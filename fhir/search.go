package fhir

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Paging: _count defaults to DefaultCount and is capped at MaxCount.
const (
	DefaultCount = 20
	MaxCount     = 100
)

// Bounds on a query's values.
const (
	maxValueLen = 256
	maxOrValues = 32
)

// query is a parsed search.
type query struct {
	typ         string
	ids         []string // _id
	patient     string   // radbridge patient id
	subject     *ident   // patient:identifier / subject:identifier
	identifiers []identQuery
	statuses    []string
	modalities  []string
	basedOn     []string
	lastUpdated []dateCond
	count       int
	capped      bool // _count was above MaxCount
	ascending   bool
	cursor      *cursor
	// ignored lists the unknown parameters a lenient search ignored.
	ignored []string
	// params are the search parameters as given (for the links), without
	// _cursor.
	params url.Values
}

// identQuery is one identifier alternative: system|value, |value (no
// system) or value (any system).
type identQuery struct {
	anySystem bool
	system    string
	value     string
}

func (w identQuery) matches(id ident) bool {
	return id.value == w.value && (w.anySystem || id.system == w.system)
}

// dateCond is one _lastUpdated comparison.
type dateCond struct {
	prefix   string // eq, ne, gt, lt, ge, le
	from, to time.Time
}

// matches reports whether t satisfies the comparison with the range
// [from, to) the parameter's precision denotes.
func (c dateCond) matches(t time.Time) bool {
	switch c.prefix {
	case "gt":
		return !t.Before(c.to)
	case "ge":
		return !t.Before(c.from)
	case "lt":
		return t.Before(c.from)
	case "le":
		return t.Before(c.to)
	case "ne":
		return t.Before(c.from) || !t.Before(c.to)
	default: // eq
		return !t.Before(c.from) && t.Before(c.to)
	}
}

// cursor is a page position: the search as of event sequence AsOf, from
// result Offset on. The results as of a sequence never change, so paging
// with it neither skips nor repeats under concurrent writes.
type cursor struct {
	AsOf   uint64 `json:"a"`
	Offset int    `json:"o"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 64 {
		return nil, fmt.Errorf("_cursor %q is not one this server issued", trunc(s))
	}
	var c cursor
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil || c.AsOf == 0 || c.Offset < 0 || c.Offset > 1<<30 {
		return nil, fmt.Errorf("_cursor %q is not one this server issued", trunc(s))
	}
	return &c, nil
}

// searchParams are the parameters each resource type accepts, besides
// the common ones (_count, _sort, _lastUpdated, _cursor, _format).
var searchParams = map[string][]string{
	typeStudy:   {"_id", "patient", "subject", "identifier", "status", "modality", "based-on"},
	typeReport:  {"_id", "patient", "subject", "identifier", "status", "based-on"},
	typeRequest: {"_id", "patient", "subject", "identifier", "status"},
}

var commonParams = []string{"_count", "_sort", "_lastUpdated", "_cursor", "_format"}

// badRequest is a search the server refuses (400 OperationOutcome).
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func bad(format string, args ...any) error { return &badRequest{fmt.Sprintf(format, args...)} }

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// parseQuery parses the search parameters of typ. lenient ignores unknown
// parameters (Prefer: handling=lenient) instead of refusing them.
func parseQuery(typ string, vs url.Values, lenient bool) (*query, error) {
	q := &query{typ: typ, count: DefaultCount, params: url.Values{}}
	known := searchParams[typ]
	names := make([]string, 0, len(vs))
	for k := range vs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		name, modifier, _ := strings.Cut(k, ":")
		if !slices.Contains(known, name) && !slices.Contains(commonParams, name) {
			if lenient {
				q.ignored = append(q.ignored, trunc(k))
				continue
			}
			return nil, bad("unknown search parameter %q for %s (supported: %s)", trunc(k), typ, strings.Join(append(slices.Clone(known), commonParams...), ", "))
		}
		all := vs[k]
		if name != "_lastUpdated" && len(all) > 1 {
			return nil, bad("search parameter %q repeated: give alternatives comma-separated in one", trunc(k))
		}
		if len(all) > 2 {
			return nil, bad("_lastUpdated repeated more than twice")
		}
		for _, v := range all {
			if len(v) > maxValueLen*maxOrValues {
				return nil, bad("search parameter %q: value longer than %d bytes", trunc(k), maxValueLen*maxOrValues)
			}
			if err := q.set(name, modifier, v); err != nil {
				return nil, err
			}
			if name != "_cursor" && name != "_format" {
				q.params.Add(k, v)
			}
		}
	}
	return q, nil
}

// set applies one parameter.
func (q *query) set(name, modifier, v string) error {
	if modifier != "" && !(modifier == "identifier" && (name == "patient" || name == "subject")) {
		return bad("modifier :%s is not supported on %q", trunc(modifier), name)
	}
	if v == "" {
		return bad("search parameter %q has no value", name)
	}
	alts := strings.Split(v, ",")
	if len(alts) > maxOrValues {
		return bad("search parameter %q: more than %d alternatives", name, maxOrValues)
	}
	for _, a := range alts {
		if a == "" || len(a) > maxValueLen {
			return bad("search parameter %q: an empty value or one longer than %d bytes", name, maxValueLen)
		}
	}
	switch name {
	case "_count":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return bad("_count %q: want a number from 0", trunc(v))
		}
		if n > MaxCount {
			n, q.capped = MaxCount, true
		}
		q.count = n
	case "_sort":
		switch v {
		case "_lastUpdated":
			q.ascending = true
		case "-_lastUpdated":
		default:
			return bad("_sort %q: supported are _lastUpdated and -_lastUpdated", trunc(v))
		}
	case "_cursor":
		c, err := decodeCursor(v)
		if err != nil {
			return &badRequest{err.Error()}
		}
		q.cursor = c
	case "_format":
		if _, ok := formatOf(v); !ok {
			return bad("_format %q: supported are json, application/json and application/fhir+json", trunc(v))
		}
	case "_lastUpdated":
		c, err := parseDateCond(v)
		if err != nil {
			return err
		}
		q.lastUpdated = append(q.lastUpdated, c)
	case "patient", "subject":
		if len(alts) > 1 {
			return bad("%s: one patient per search", name)
		}
		if modifier == "identifier" {
			id, err := parseIdent(v)
			if err != nil {
				return err
			}
			if id.value == "" {
				return bad("%s:identifier %q has no value", name, trunc(v))
			}
			s := ident{id.system, id.value}
			if q.subject != nil && *q.subject != s {
				return bad("patient and subject name different patients")
			}
			q.subject = &s
			return nil
		}
		id := strings.TrimPrefix(v, "Patient/")
		if strings.Contains(id, "/") {
			return bad("%s %q: want Patient/<id> or <id>", name, trunc(v))
		}
		if q.patient != "" && q.patient != id {
			return bad("patient and subject name different patients")
		}
		q.patient = id
	case "identifier":
		for _, a := range alts {
			id, err := parseIdent(a)
			if err != nil {
				return err
			}
			q.identifiers = append(q.identifiers, id)
		}
	case "_id":
		for _, a := range alts {
			if !fhirID.MatchString(a) {
				return bad("_id %q is not a FHIR id", trunc(a))
			}
		}
		q.ids = alts
	case "status":
		q.statuses = alts
	case "modality":
		for _, a := range alts {
			if sys, code, ok := strings.Cut(a, "|"); ok {
				if sys != "" && sys != dicomDCM {
					return bad("modality system %q: want %s", trunc(sys), dicomDCM)
				}
				a = code
			}
			q.modalities = append(q.modalities, a)
		}
	case "based-on":
		for _, a := range alts {
			id := strings.TrimPrefix(a, typeRequest+"/")
			if strings.Contains(id, "/") {
				return bad("based-on %q: want ServiceRequest/<id> or <id>", trunc(a))
			}
			q.basedOn = append(q.basedOn, id)
		}
	}
	return nil
}

// dicomDCM is the code system of DICOM modality codes.
const dicomDCM = "http://dicom.nema.org/resources/ontology/DCM"

// parseIdent parses system|value, |value or value.
func parseIdent(s string) (identQuery, error) {
	sys, val, ok := strings.Cut(s, "|")
	if !ok {
		return identQuery{anySystem: true, value: s}, nil
	}
	if strings.Contains(val, "|") {
		return identQuery{}, bad("identifier %q: want system|value", trunc(s))
	}
	if val == "" {
		return identQuery{}, bad("identifier %q: a search by system alone is not supported", trunc(s))
	}
	return identQuery{system: sys, value: val}, nil
}

// parseDateCond parses [prefix]date with FHIR's precisions: YYYY, YYYY-MM,
// YYYY-MM-DD, or a dateTime to the minute, second or fraction, with a
// zone (a time without one is refused: it would be ambiguous).
func parseDateCond(s string) (dateCond, error) {
	c := dateCond{prefix: "eq"}
	if len(s) > 2 && s[0] >= 'a' && s[0] <= 'z' {
		c.prefix, s = s[:2], s[2:]
		switch c.prefix {
		case "eq", "ne", "gt", "lt", "ge", "le":
		default:
			return c, bad("_lastUpdated prefix %q: supported are eq, ne, gt, lt, ge, le", c.prefix)
		}
	}
	for _, l := range []struct {
		layout string
		next   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
		{"2006-01-02T15:04Z07:00", func(t time.Time) time.Time { return t.Add(time.Minute) }},
		{"2006-01-02T15:04:05Z07:00", func(t time.Time) time.Time { return t.Add(time.Second) }},
	} {
		if len(s) != len(l.layout) && !(strings.Contains(l.layout, "T") && strings.HasSuffix(s, "Z") && len(s) == len(l.layout)-5) {
			continue
		}
		if t, err := time.Parse(l.layout, s); err == nil {
			c.from, c.to = t, l.next(t)
			return c, nil
		}
	}
	if strings.Contains(s, ".") {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			c.from, c.to = t, t.Add(time.Nanosecond)
			return c, nil
		}
	}
	return c, bad("_lastUpdated %q: want [prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]]zone]]]", trunc(s))
}

// formatOf returns the media type a _format value or an Accept entry
// names, if JSON.
func formatOf(v string) (string, bool) {
	switch strings.TrimSpace(v) {
	case "json", "application/json", "application/fhir+json", "application/json+fhir":
		return contentType, true
	}
	return "", false
}
