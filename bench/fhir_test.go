package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"radbridge/api"
	"radbridge/eventlog"
	"radbridge/fhir"
	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
	"radbridge/store"
)

// fhirStudy is an ImagingStudy of patient pid (about 900 bytes encoded).
func fhirStudy(uid, pid, acc string, minute int) map[string]any {
	return map[string]any{
		"resourceType": "ImagingStudy", "id": uid, "status": "available",
		"subject": map[string]any{"type": "Patient", "identifier": map[string]any{"system": "urn:bench", "value": pid}},
		"started": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(minute) * time.Minute).Format(time.RFC3339),
		"identifier": []any{
			map[string]any{"system": "urn:dicom:uid", "value": "urn:oid:" + uid},
			map[string]any{"type": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}}}, "value": acc},
		},
		"modality":          []any{map[string]any{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}},
		"description":       "CT CHEST WITH CONTRAST",
		"numberOfSeries":    1,
		"numberOfInstances": 200,
		"series": []any{
			map[string]any{"uid": uid + ".1", "number": 1, "modality": map[string]any{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}, "numberOfInstances": 200},
		},
	}
}

// BenchmarkFHIRSearchPatient10k: the embedded store holds 20,000 study
// events: 10,000 of patient BIG and 10 each of 1,000 other patients
// (interleaved), and BIG's read model (the split layout, a key per
// study). Sub-benchmarks, each one request answered in-process (no
// network):
//
//   - rest-listing/patient=10k: the baseline, GetPatientImaging (what GET
//     /v1/patients/{id}/imaging?page_size=20 runs) and its JSON encoding;
//   - fhir-search/patient=10k: GET /fhir/ImagingStudy?patient=BIG&_count=20;
//   - fhir-search/patient=10k/last-page: the same search's last page (its
//     cursor);
//   - fhir-search/patient=10: a patient with 10 studies in the same store
//     (the cost follows the patient, not the store);
//   - fhir-read: GET /fhir/ImagingStudy/<id>.
//
// Metric index-B/resource: heap held by the FHIR index per indexed version.
func BenchmarkFHIRSearchPatient10k(b *testing.B) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{DataDir: filepath.Join(b.TempDir(), "data")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const big, n, others = "BIG", 10000, 1000
	readModel := &readmodel.Patient{ID: big, Studies: map[string]json.RawMessage{}}
	seq := uint64(0)
	add := func(uid, pid, acc string) {
		seq++
		res := fhirStudy(uid, pid, acc, int(seq))
		pb, err := structpb.NewStruct(res)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Events().Append(ctx, eventlog.Key{IngestSeq: seq}, &rbv1.Event{
			Type: rbv1.EventType_IMAGING_STUDY_AVAILABLE, Time: timestamppb.New(time.Unix(1.8e9, 0).Add(time.Duration(seq) * time.Second)),
			PatientId: pid, AccessionNumber: acc, StudyInstanceUid: uid, ResourceType: "ImagingStudy", ResourceId: uid, Resource: pb,
		}); err != nil {
			b.Fatal(err)
		}
		if pid == big {
			raw, _ := json.Marshal(res)
			readModel.Studies[uid] = raw
			readModel.LastSequence = seq
		}
	}
	for i := range n {
		add(fmt.Sprintf("1.2.826.0.1.3680043.10.1447.9.%d", i), big, fmt.Sprintf("ACC%d", i))
		add(fmt.Sprintf("1.2.826.0.1.3680043.10.1447.8.%d", i), fmt.Sprintf("P%d", i%others), fmt.Sprintf("OACC%d", i))
	}
	if err := s.Patients().PutPatientAt(ctx, readModel, seq); err != nil {
		b.Fatal(err)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h := fhir.New(fhir.Config{Events: s.Events(), Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = h.Run(rctx); close(done) }()
	defer func() { cancel(); <-done }()
	if !testkit.Poll(2*time.Minute, func() bool { return h.Position() >= seq }) {
		b.Fatalf("index at %d of %d after 2 minutes", h.Position(), seq)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perResource := float64(after.HeapAlloc-before.HeapAlloc) / float64(seq)

	fhirGet := func(b *testing.B, path string) map[string]any {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body.Bytes())
		}
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			b.Fatal(err)
		}
		return m
	}
	lastPath := lastPage(b, fhirGet, "/fhir/ImagingStudy?patient="+big+"&_count=20")
	if entries, _ := fhirGet(b, lastPath)["entry"].([]any); len(entries) != 20 {
		b.Fatalf("last page: %d entries", len(entries))
	}

	svc := api.NewService(s.Events(), nil, nil, nil, s.Patients(), nil)
	b.Run("rest-listing/patient=10k", func(b *testing.B) {
		for range b.N {
			resp, err := svc.GetPatientImaging(ctx, &rbv1.GetPatientImagingRequest{PatientId: big, PageSize: 20})
			if err != nil {
				b.Fatal(err)
			}
			if len(resp.Studies) != 20 {
				b.Fatalf("%d studies", len(resp.Studies))
			}
			if _, err := protojson.Marshal(resp); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, c := range []struct{ name, path string }{
		{"fhir-search/patient=10k", "/fhir/ImagingStudy?patient=" + big + "&_count=20"},
		{"fhir-search/patient=10k/last-page", lastPath},
		{"fhir-search/patient=10", "/fhir/ImagingStudy?patient=P7&_count=20"},
		{"fhir-read", "/fhir/ImagingStudy/1.2.826.0.1.3680043.10.1447.9.4711"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				fhirGet(b, c.path)
			}
			b.ReportMetric(perResource, "index-B/resource")
		})
	}
}

// lastPage follows a search's next links from path to its last page and
// returns that page's path.
func lastPage(b *testing.B, get func(*testing.B, string) map[string]any, path string) string {
	for range 10000 {
		var next string
		for _, l := range get(b, path)["link"].([]any) {
			if l := l.(map[string]any); l["relation"] == "next" {
				next = l["url"].(string)
			}
		}
		if next == "" {
			return path
		}
		u, err := url.Parse(next)
		if err != nil {
			b.Fatal(err)
		}
		path = u.RequestURI()
	}
	b.Fatal("more than 10000 pages")
	return ""
}
