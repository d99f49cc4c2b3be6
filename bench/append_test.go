package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/store"
)

// benchEvent is a typical event: a study became available, with a small
// FHIR ImagingStudy (about 1 KB encoded).
func benchEvent(tb testing.TB) *rbv1.Event {
	tb.Helper()
	res, err := structpb.NewStruct(map[string]any{
		"resourceType": "ImagingStudy",
		"id":           "1.2.826.0.1.3680043.8.498.1",
		"status":       "available",
		"subject":      map[string]any{"reference": "Patient/" + patient},
		"started":      "2026-01-01T10:00:00Z",
		"identifier": []any{
			map[string]any{"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.8.498.1"},
			map[string]any{"type": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}}}, "value": "ACC0001"},
		},
		"modality":          []any{map[string]any{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}},
		"description":       "CT CHEST WITH CONTRAST",
		"numberOfSeries":    3,
		"numberOfInstances": 412,
		"series": []any{
			map[string]any{"uid": "1.2.826.0.1.3680043.8.498.1.1", "number": 1, "modality": map[string]any{"code": "CT"}, "numberOfInstances": 2, "bodySite": map[string]any{"code": "51185008", "display": "Chest"}},
			map[string]any{"uid": "1.2.826.0.1.3680043.8.498.1.2", "number": 2, "modality": map[string]any{"code": "CT"}, "numberOfInstances": 205, "bodySite": map[string]any{"code": "51185008", "display": "Chest"}},
			map[string]any{"uid": "1.2.826.0.1.3680043.8.498.1.3", "number": 3, "modality": map[string]any{"code": "CT"}, "numberOfInstances": 205, "bodySite": map[string]any{"code": "51185008", "display": "Chest"}},
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &rbv1.Event{
		Id: "ev-bench", Type: rbv1.EventType_IMAGING_STUDY_AVAILABLE, Time: timestamppb.Now(),
		PatientId: patient, AccessionNumber: "ACC0001", StudyInstanceUid: "1.2.826.0.1.3680043.8.498.1",
		Severity: rbv1.Severity_SEVERITY_SUCCESS, Message: "New imaging study available: CT CHEST WITH CONTRAST",
		Priority:     rbv1.Priority_PRIORITY_ROUTINE,
		Source:       &rbv1.Source{Protocol: "dicom", CallingAeTitle: "ORTHANC", CalledAeTitle: "RADBRIDGE"},
		ResourceType: "ImagingStudy", ResourceId: "1.2.826.0.1.3680043.8.498.1", Resource: res,
	}
}

// recordSize approximates the bytes JetStream's file store writes for one
// appended event: the protobuf, the subject, the NATS headers the event log
// sets (ingest sequence and index, message id) and the record framing.
func recordSize(ev *rbv1.Event) int {
	hdr := len("NATS/1.0\r\nRb-Ingest-Seq: 100000\r\nRb-Ingest-Idx: 0\r\nNats-Msg-Id: ev-100000-0\r\n\r\n")
	return proto.Size(ev) + len(eventlog.Subject(ev)) + hdr + 22 + 8 // record header and hash
}

func benchAppend(b *testing.B, sync bool) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{DataDir: filepath.Join(b.TempDir(), "data"), SyncAlways: sync})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l := s.Events()
	ev := benchEvent(b)
	if _, err := l.Append(ctx, eventlog.Key{IngestSeq: 1}, ev); err != nil { // opens the block file
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, max(b.N, 1024))
	k := uint64(2)
	for b.Loop() {
		t := time.Now()
		if _, err := l.Append(ctx, eventlog.Key{IngestSeq: k}, ev); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
		k++
	}
	report(b, lat, recordSize(ev))
}

func report(b *testing.B, lat []time.Duration, size int) {
	b.ReportMetric(us(percentile(lat, 50)), "p50-us")
	b.ReportMetric(us(percentile(lat, 99)), "p99-us")
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(size), "B/write")
}

// BenchmarkEventAppendFsync appends events to the embedded JetStream event
// log with an fsync per write (radbridge's default, --fsync).
func BenchmarkEventAppendFsync(b *testing.B) { benchAppend(b, true) }

// BenchmarkEventAppendNoFsync is the same without fsync (--fsync=false).
func BenchmarkEventAppendNoFsync(b *testing.B) { benchAppend(b, false) }

// BenchmarkRawFileWriteFsync writes a record of the same size to a plain
// file and fsyncs it: the floor any durable log pays on this disk.
func BenchmarkRawFileWriteFsync(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, recordSize(benchEvent(b)))
	for i := range buf {
		buf[i] = byte(i)
	}
	lat := make([]time.Duration, 0, max(b.N, 1024))
	for b.Loop() {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	report(b, lat, len(buf))
}
