package operator

import (
	"bytes"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzDecodeReconcile: a request body decodes or is refused, never a
// panic; a retry always names its dead letter and a reason.
func FuzzDecodeReconcile(f *testing.F) {
	f.Add([]byte(`{"action":"move","study":"1.2","patient":"MRN1","reason":"wrong MRN"}`))
	f.Add([]byte(`{"action":"retry","seq":7,"reason":"fixed"}`))
	f.Add([]byte(`{"action":"retry","seq":0}`))
	f.Add([]byte(`{"action":"link","unknown":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeReconcile(bytes.NewReader(b))
		if err == nil && req.Action == "retry" && (req.Seq == 0 || strings.TrimSpace(req.Reason) == "") {
			t.Fatalf("retry accepted without seq or reason: %+v", req)
		}
	})
}

// FuzzExplainQuery: a query string gives exactly one selector or an
// error.
func FuzzExplainQuery(f *testing.F) {
	f.Add("study=1.2.3")
	f.Add("accession=A&patient=P")
	f.Add("patient=")
	f.Add("order=%zz")
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/v1/explain", nil)
		r.URL.RawQuery = raw
		q, err := explainQuery(r)
		if err != nil {
			return
		}
		n := 0
		for _, v := range []string{q.Study, q.Accession, q.Order, q.Patient} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%q: %d selectors %+v", raw, n, q)
		}
		if _, err := url.ParseQuery(raw); err != nil {
			t.Fatalf("%q: accepted a query that does not parse: %v", raw, err)
		}
	})
}

// FuzzHL7HasValue: hl7HasValue agrees with splitting the message at
// every delimiter.
func FuzzHL7HasValue(f *testing.F) {
	f.Add([]byte("MSH|^~\\&|RIS\rOBR|1|P1|F1|||ACC1^X\r"), "ACC1")
	f.Add([]byte("PID|1||MRN4711^^^H^MR"), "MRN4711")
	f.Add([]byte("ACC10|ACC1"), "ACC1")
	f.Fuzz(func(t *testing.T, raw []byte, v string) {
		got := hl7HasValue(raw, v)
		want := false
		if v != "" {
			for _, p := range bytes.FieldsFunc(raw, func(r rune) bool { return strings.ContainsRune("|^~&\r\n", r) }) {
				want = want || string(p) == v
			}
		}
		if strings.ContainsAny(v, "|^~&\r\n") {
			return // a value holding a delimiter is never one field; the reference cannot tell
		}
		if got != want {
			t.Fatalf("hl7HasValue(%q, %q) = %v, want %v", raw, v, got, want)
		}
	})
}
