package fhir

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

// FuzzSearchQuery: any query string on any search gets a searchset Bundle
// or a 4xx OperationOutcome, never a panic; a parsed query keeps _count
// within MaxCount and its cursor round-trips.
func FuzzSearchQuery(f *testing.F) {
	for _, s := range []string{
		"patient=P1", "patient=Patient/P1&_count=1&_sort=_lastUpdated", "patient:identifier=urn:x|1",
		"identifier=urn:dicom:uid|urn:oid:1.2.3,ACC1&status=available,registered", "modality=CT&based-on=ServiceRequest/o1",
		"_lastUpdated=ge2026-03-10&_lastUpdated=lt2026-03-10T08:03:00.5+01:00", "_count=100000", "_cursor=eyJhIjoxLCJvIjowfQ",
		"foo=1", "patient=a,b", "identifier=|x", "identifier=a|", "_format=xml", "subject:identifier=|", "%zz", "_count=-1",
	} {
		f.Add("ImagingStudy", s)
	}
	log := eventlog.NewMemory()
	res, _ := structpb.NewStruct(map[string]any{"resourceType": "ImagingStudy", "id": "1.2.3", "status": "available",
		"subject": map[string]any{"identifier": map[string]any{"system": "urn:x", "value": "1"}}})
	if _, err := log.Append(context.Background(), eventlog.Key{IngestSeq: 1}, &rbv1.Event{Type: rbv1.EventType_IMAGING_STUDY_AVAILABLE,
		PatientId: "P1", Time: timestamppb.New(time.Unix(1e9, 0)), ResourceType: "ImagingStudy", ResourceId: "1.2.3", Resource: res}); err != nil {
		f.Fatal(err)
	}
	h := New(Config{Events: log, Wait: time.Millisecond})
	evs, _ := log.Read(context.Background(), 1, eventlog.Filter{}, 10)
	for _, ev := range evs {
		h.idx.add(ev)
	}
	f.Fuzz(func(t *testing.T, typ, raw string) {
		vs, err := url.ParseQuery(raw)
		if err == nil && served(typ) {
			for _, lenient := range []bool{false, true} {
				q, err := parseQuery(typ, vs, lenient)
				if err != nil {
					if _, ok := err.(*badRequest); !ok {
						t.Fatalf("%q: error %T %v", raw, err, err)
					}
					continue
				}
				if q.count < 0 || q.count > MaxCount {
					t.Fatalf("%q: _count %d", raw, q.count)
				}
				if q.cursor != nil {
					if c, err := decodeCursor(q.cursor.encode()); err != nil || *c != *q.cursor {
						t.Fatalf("%q: cursor %v does not round-trip: %v %v", raw, q.cursor, c, err)
					}
				}
			}
		}
		req := httptest.NewRequest(http.MethodGet, "/fhir/ImagingStudy", nil)
		req.URL.Path, req.URL.RawQuery = "/fhir/"+typ, raw
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s?%s: %d, body not JSON: %q", typ, raw, rec.Code, rec.Body.Bytes())
		}
		switch {
		case rec.Code == 200 && (body["resourceType"] == "Bundle" || body["resourceType"] == "ImagingStudy" || body["resourceType"] == "CapabilityStatement"):
		case rec.Code >= 400 && rec.Code < 500 && body["resourceType"] == "OperationOutcome":
		default:
			t.Fatalf("%s?%s: %d %v", typ, raw, rec.Code, body)
		}
	})
}

// TestOldVersionsLeaveThePagingWindow: superseded versions older than
// PagingWindow events are dropped, and a cursor that old is expired.
func TestOldVersionsLeaveThePagingWindow(t *testing.T) {
	x := newIndex()
	res, _ := structpb.NewStruct(map[string]any{"resourceType": "ImagingStudy", "id": "a", "status": "registered"})
	ev := func(seq uint64, r *structpb.Struct) *rbv1.Event {
		e := &rbv1.Event{Sequence: seq, PatientId: "P", Type: rbv1.EventType_IMAGING_STUDY_UPDATED}
		if r != nil {
			e.ResourceType, e.ResourceId, e.Resource = "ImagingStudy", "a", r
		}
		return e
	}
	x.add(ev(1, res))
	x.add(ev(2, res))
	x.add(ev(3, res))
	for seq := uint64(4); seq <= PagingWindow+10; seq++ {
		x.add(ev(seq, nil))
	}
	if got := len(x.byKey[resKey{"ImagingStudy", "a"}].versions); got != 3 {
		t.Fatalf("%d versions before the sweep, want 3", got)
	}
	x.add(ev(PagingWindow*5/4+1, res))
	e := x.byKey[resKey{"ImagingStudy", "a"}]
	if len(e.versions) != 2 || e.versions[0].seq != 3 {
		t.Errorf("after the sweep: versions %v, want 3 and the new one", e.versions)
	}
	if !x.expired(1) || x.expired(x.position()) {
		t.Errorf("expired(1) %v, expired(position) %v", x.expired(1), x.expired(x.position()))
	}
	if v, ok := x.lookup("ImagingStudy", "a", x.position()-1); !ok || v.seq != 3 {
		t.Errorf("as of before the last version: %v %v", v, ok)
	}
}

// TestSupersededVersionsBounded: however fast resources are superseded
// within the paging window, at most SupersededKept superseded versions are
// kept; the horizon rises past the dropped ones (their cursors expire)
// and every search as of a sequence at or after it answers as before.
func TestSupersededVersionsBounded(t *testing.T) {
	x := newIndex()
	ev := func(seq uint64, id, status string) *rbv1.Event {
		r, _ := structpb.NewStruct(map[string]any{"resourceType": "DiagnosticReport", "id": id, "status": status,
			"identifier": []any{map[string]any{"system": "urn:acc", "value": "ACC-" + id}}})
		return &rbv1.Event{Sequence: seq, PatientId: "P", Type: rbv1.EventType_IMAGING_REPORT_UPDATED,
			ResourceType: "DiagnosticReport", ResourceId: id, Resource: r}
	}
	// Two resources, superseded in turn, each version's status its
	// sequence: 3*SupersededKept events.
	n := uint64(3 * SupersededKept)
	for seq := uint64(1); seq <= n; seq++ {
		x.add(ev(seq, []string{"a", "b"}[seq%2], strconv.FormatUint(seq, 10)))
		if kept := len(x.superseded) - x.head; kept > SupersededKept {
			t.Fatalf("at %d: %d superseded versions kept", seq, kept)
		}
	}
	total := 0
	for _, e := range x.byKey {
		total += len(e.versions)
		if len(e.versions) > 1 && &e.versions[0].ids[0] != &e.versions[1].ids[0] {
			t.Errorf("%s: versions with the same identifiers do not share them", e.id)
		}
	}
	if total-2 > SupersededKept || x.horizon == 0 {
		t.Fatalf("%d versions kept for 2 resources, horizon %d", total, x.horizon)
	}
	if !x.expired(1) || !x.expired(x.horizon-1) || x.expired(x.horizon) {
		t.Errorf("horizon %d: expired(1) %v, expired(horizon-1) %v, expired(horizon) %v", x.horizon, x.expired(1), x.expired(x.horizon-1), x.expired(x.horizon))
	}
	for _, asOf := range []uint64{x.horizon, x.horizon + 1, (x.horizon + n) / 2, n} {
		for _, id := range []string{"a", "b"} {
			v, ok := x.lookup("DiagnosticReport", id, asOf)
			// The version current at asOf: the newest sequence ≤ asOf with
			// the resource's parity.
			want := asOf
			if []string{"a", "b"}[want%2] != id {
				want--
			}
			if !ok || v.seq != want || v.status != strconv.FormatUint(want, 10) {
				t.Errorf("%s as of %d: %d %q %v, want %d", id, asOf, v.seq, v.status, ok, want)
			}
		}
		q := &query{typ: "DiagnosticReport", patient: "P"}
		if hits, ok := x.search(q, asOf, func(string) bool { return true }); !ok || len(hits) != 2 {
			t.Errorf("search as of %d: %d hits %v, want 2", asOf, len(hits), ok)
		}
	}
	if _, ok := x.search(&query{typ: "DiagnosticReport", patient: "P"}, x.horizon-1, func(string) bool { return true }); ok {
		t.Errorf("search as of %d, before the horizon %d, answered", x.horizon-1, x.horizon)
	}
}
