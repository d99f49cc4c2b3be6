package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"radbridge/eventlog"
	"radbridge/internal/natstest"
	"radbridge/readmodel"
	"radbridge/store"
)

// imagingStudy is an ImagingStudy shaped as the mapper writes it: one
// series per 100 instances, each instance with its UID, SOP class and
// number (about 190 bytes an instance). rev changes the study's content.
func imagingStudy(uid string, instances, rev int) json.RawMessage {
	var series []any
	for s := 0; s*100 < instances; s++ {
		var insts []any
		for i := s * 100; i < min(instances, (s+1)*100); i++ {
			insts = append(insts, map[string]any{
				"uid":      fmt.Sprintf("%s.%d.%d", uid, s+1, i+1),
				"sopClass": map[string]any{"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"},
				"number":   i + 1,
			})
		}
		series = append(series, map[string]any{
			"uid": fmt.Sprintf("%s.%d", uid, s+1), "number": s + 1, "numberOfInstances": len(insts),
			"modality": map[string]any{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
			"bodySite": map[string]any{"system": "http://snomed.info/sct", "code": "51185008", "display": "Thorax"},
			"instance": insts,
		})
	}
	b, err := json.Marshal(map[string]any{
		"resourceType": "ImagingStudy", "id": uid, "status": "available",
		"identifier":  []any{map[string]any{"system": "urn:dicom:uid", "value": "urn:oid:" + uid}},
		"subject":     map[string]any{"reference": "Patient/MRN-1"},
		"started":     fmt.Sprintf("2026-%02d-01T10:00:00Z", 1+rev%12),
		"description": fmt.Sprintf("CT THORAX rev %d", rev), "numberOfSeries": len(series),
		"numberOfInstances": instances, "series": series,
	})
	if err != nil {
		panic(err)
	}
	return b
}

// bigPatient is a patient with n studies of instances each, an order and a
// report per study, body regions and views.
func bigPatient(id string, n, instances int) *readmodel.Patient {
	p := &readmodel.Patient{ID: id, LastSequence: 10, Studies: map[string]json.RawMessage{}, Orders: map[string]json.RawMessage{},
		Reports: map[string]json.RawMessage{}, BodyRegions: map[string]uint32{"CHEST": uint32(n)}, Views: map[string]uint32{}}
	for i := range n {
		uid := fmt.Sprintf("1.2.826.0.1.3680043.10.1447.%d", i)
		p.Studies[uid] = imagingStudy(uid, instances, 0)
		p.Orders[fmt.Sprintf("ACC-%d", i)] = json.RawMessage(fmt.Sprintf(`{"resourceType":"ServiceRequest","id":"ACC-%d","status":"active","authoredOn":"2026-01-01"}`, i))
		p.Reports[fmt.Sprintf("R-%d", i)] = json.RawMessage(fmt.Sprintf(`{"resourceType":"DiagnosticReport","id":"R-%d","status":"final","issued":"2026-01-02T00:00:00Z"}`, i))
		if i%3 == 0 {
			p.Views[uid] = uint32(i)
		}
	}
	return p
}

func readPatient(t *testing.T, s *store.Store, id string) *readmodel.Patient {
	t.Helper()
	p, err := s.Patients().Patient(context.Background(), id)
	if err != nil || p == nil {
		t.Fatalf("read model of %s: %v %v", id, p, err)
	}
	return p
}

// resourceKeys lists the keys under a patient's manifest key.
func resourceKeys(t *testing.T, s *store.Store, id string) []string {
	t.Helper()
	return stateKeys(t, s, "patient."+eventlog.PatientToken(id)+".>")
}

// stateKeys lists, sorted, the keys of the state bucket matching filters.
func stateKeys(t *testing.T, s *store.Store, filters ...string) []string {
	t.Helper()
	l, err := s.State().ListKeysFiltered(context.Background(), filters...)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestReadModelRoundTrip: what is written is what is read, for a patient
// with studies, orders, reports, body regions and views, and again after
// some of it changed.
func TestReadModelRoundTrip(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "data"))
	ctx := context.Background()
	p := bigPatient("MRN-1", 12, 250)
	if err := s.Patients().PutPatientAt(ctx, p, 100); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(p, readPatient(t, s, "MRN-1")); d != "" {
		t.Fatalf("read model differs from the one written (-written +read):\n%s", d)
	}
	if keys := resourceKeys(t, s, "MRN-1"); len(keys) != 36 {
		t.Errorf("%d resource keys for 36 resources", len(keys))
	}
	p.LastSequence = 11
	p.Studies["1.2.826.0.1.3680043.10.1447.3"] = imagingStudy("1.2.826.0.1.3680043.10.1447.3", 260, 1)
	delete(p.Orders, "ACC-4")
	p.Reports["R-new"] = json.RawMessage(`{"resourceType":"DiagnosticReport","id":"R-new","status":"preliminary"}`)
	p.Views["1.2.826.0.1.3680043.10.1447.1"] = 7
	if err := s.Patients().PutPatientAt(ctx, p, 110); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(p, readPatient(t, s, "MRN-1")); d != "" {
		t.Fatalf("read model differs after a change (-written +read):\n%s", d)
	}
	// The replaced study version and the removed order are gone.
	if keys := resourceKeys(t, s, "MRN-1"); len(keys) != 36 {
		t.Errorf("%d resource keys for 36 resources after the change:\n%s", len(keys), strings.Join(keys, "\n"))
	}
	if p, err := s.Patients().Patient(ctx, "MRN-unknown"); p != nil || err != nil {
		t.Errorf("unknown patient: %v %v", p, err)
	}
	// radbridge replay writes a patient never stored before.
	q := bigPatient("MRN-2", 2, 10)
	if err := s.Patients().Overwrite().PutPatientAt(ctx, q, 100); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(q, readPatient(t, s, "MRN-2")); d != "" {
		t.Errorf("read model written by replay (-written +read):\n%s", d)
	}
}

// TestReadModelOfPreviousLayout: a store whose state bucket was created
// by the previous version and holds read models as one value (with and
// without the write fence) is opened; they read as they were written, and
// the next write converts them.
func TestReadModelOfPreviousLayout(t *testing.T) {
	url := runNATS(t)
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// The bucket as the previous version created it.
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: store.StateBucket, Storage: jetstream.FileStorage, History: 1,
		Description: "radbridge mapper state (a projection of the ingest log)"})
	if err != nil {
		t.Fatal(err)
	}
	fenced, plain := bigPatient("MRN-1", 5, 120), bigPatient("MRN-2", 3, 80)
	b, _ := json.Marshal(struct {
		Fence map[string]uint64 `json:"fence"`
		*readmodel.Patient
	}{map[string]uint64{"last_sequence": 10, "applied": 90}, fenced})
	if _, err := kv.Put(ctx, "patient."+eventlog.PatientToken("MRN-1"), b); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(plain)
	if _, err := kv.Put(ctx, "patient."+eventlog.PatientToken("MRN-2"), b); err != nil {
		t.Fatal(err)
	}

	s := openURL(t, url)
	for _, want := range []*readmodel.Patient{fenced, plain} {
		if d := cmp.Diff(want, readPatient(t, s, want.ID)); d != "" {
			t.Errorf("read model of the previous layout (-written +read):\n%s", d)
		}
	}
	// Its fence holds: an older write is refused.
	older := bigPatient("MRN-1", 1, 1)
	older.LastSequence = 9
	if err := s.Patients().PutPatientAt(ctx, older, 80); !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("older write over a read model of the previous layout: %v, want ErrSuperseded", err)
	}
	// Converted by the next write; its resources are keys of their own.
	fenced.LastSequence = 12
	fenced.Studies["1.2.9"] = imagingStudy("1.2.9", 40, 0)
	if err := s.Patients().PutPatientAt(ctx, fenced, 120); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(fenced, readPatient(t, s, "MRN-1")); d != "" {
		t.Errorf("converted read model (-written +read):\n%s", d)
	}
	if keys := resourceKeys(t, s, "MRN-1"); len(keys) != 16 {
		t.Errorf("converted read model has %d resource keys, want 16", len(keys))
	}
	e, err := kv.Get(ctx, "patient."+eventlog.PatientToken("MRN-1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Value()) > 4096 {
		t.Errorf("the converted manifest is %d bytes: resources are still in it?", len(e.Value()))
	}
	// A small one (3 studies of 80 instances, about 36 KB) converts to a
	// manifest holding its resources: still one key.
	plain.LastSequence = 11
	plain.Views["1.2.826.0.1.3680043.10.1447.2"] = 5
	if err := s.Patients().PutPatientAt(ctx, plain, 110); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(plain, readPatient(t, s, "MRN-2")); d != "" {
		t.Errorf("converted small read model (-written +read):\n%s", d)
	}
	if keys := patientKeys(t, s, "MRN-2"); len(keys) != 1 {
		t.Errorf("converted small read model has %d keys, want 1: %v", len(keys), keys)
	}
}

// TestReadModelChangeWritesOneResource: an event about one study of a
// patient with 300 studies writes that study and the manifest; the
// study's previous version is purged. Watched on the bucket.
func TestReadModelChangeWritesOneResource(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "data"))
	ctx := context.Background()
	p := bigPatient("MRN-1", 300, 20)
	p.Orders, p.Reports = nil, nil
	if err := s.Patients().PutPatientAt(ctx, p, 100); err != nil {
		t.Fatal(err)
	}
	w, err := s.State().WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	p.LastSequence = 11
	p.Studies["1.2.826.0.1.3680043.10.1447.17"] = imagingStudy("1.2.826.0.1.3680043.10.1447.17", 21, 1)
	if err := s.Patients().PutPatientAt(ctx, p, 110); err != nil {
		t.Fatal(err)
	}
	if _, err := s.State().Put(ctx, "test.end", nil); err != nil {
		t.Fatal(err)
	}
	manifest := "patient." + eventlog.PatientToken("MRN-1")
	var puts, purges []string
	timeout := time.After(time.Minute)
	for done := false; !done; {
		select {
		case e := <-w.Updates():
			switch {
			case e == nil:
			case e.Key() == "test.end":
				done = true
			case e.Operation() == jetstream.KeyValuePut:
				puts = append(puts, e.Key())
			default:
				purges = append(purges, e.Key())
			}
		case <-timeout:
			t.Fatal("the watch did not deliver the end marker in a minute")
		}
	}
	if len(puts) != 2 || puts[1] != manifest || !strings.HasPrefix(puts[0], manifest+".study.") {
		t.Errorf("one study changed; the write put %d keys, want the study and then the manifest:\n%s", len(puts), strings.Join(puts, "\n"))
	}
	if len(purges) != 1 || !strings.HasPrefix(purges[0], manifest+".study.") || len(puts) > 0 && purges[0] == puts[0] {
		t.Errorf("the write purged %v, want the study's previous version", purges)
	}
	if d := cmp.Diff(p, readPatient(t, s, "MRN-1")); d != "" {
		t.Errorf("read model (-written +read):\n%s", d)
	}
}

// TestReadModelMovedStudyKeysGone: a study moved to another patient (a
// Patient ID correction) leaves no key under its former patient. Both
// patients are big enough (studies of 500 instances, about 73 KB) for the
// split layout before and after.
func TestReadModelMovedStudyKeysGone(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "data"))
	ctx := context.Background()
	a, b := bigPatient("MRN-A", 2, 500), bigPatient("MRN-B", 1, 500)
	for _, p := range []*readmodel.Patient{a, b} {
		p.Orders, p.Reports = nil, nil
		if err := s.Patients().PutPatientAt(ctx, p, 100); err != nil {
			t.Fatal(err)
		}
	}
	before := resourceKeys(t, s, "MRN-A")
	moved := "1.2.826.0.1.3680043.10.1447.1"
	b.Studies[moved] = a.Studies[moved]
	delete(a.Studies, moved)
	a.LastSequence, b.LastSequence = 11, 11
	for _, p := range []*readmodel.Patient{a, b} {
		if err := s.Patients().PutPatientAt(ctx, p, 110); err != nil {
			t.Fatal(err)
		}
	}
	after := resourceKeys(t, s, "MRN-A")
	if len(before) != 2 || len(after) != 1 || after[0] != before[0] && after[0] != before[1] {
		t.Errorf("keys of the former patient: before %v, after %v; want the moved study's key gone", before, after)
	}
	if n := len(resourceKeys(t, s, "MRN-B")); n != 2 {
		t.Errorf("the new patient has %d resource keys, want 2", n)
	}
	for _, p := range []*readmodel.Patient{a, b} {
		if d := cmp.Diff(p, readPatient(t, s, p.ID)); d != "" {
			t.Errorf("read model of %s (-written +read):\n%s", p.ID, d)
		}
	}
}

// TestStaleWriteLeavesNewerReadModel: a paused leader wakes up and writes
// a read model whose studies differ from its successor's newer one. The
// newer one stays readable and unchanged; radbridge replay then removes
// the keys the refused write left.
func TestStaleWriteLeavesNewerReadModel(t *testing.T) {
	url := runNATS(t)
	old, successor := openURL(t, url), openURL(t, url)
	ctx := context.Background()
	// Studies of 200 instances (about 29 KB): the split layout.
	p := bigPatient("MRN-1", 4, 200)
	if err := old.Patients().PutPatientAt(ctx, p, 100); err != nil {
		t.Fatal(err)
	}
	newer := bigPatient("MRN-1", 5, 200)
	newer.LastSequence = 20
	newer.Studies["1.2.826.0.1.3680043.10.1447.0"] = imagingStudy("1.2.826.0.1.3680043.10.1447.0", 270, 2)
	if err := successor.Patients().PutPatientAt(ctx, newer, 200); err != nil {
		t.Fatal(err)
	}
	// The old leader's state at 15: study 0 and 1 changed otherwise, a
	// study the successor does not have.
	stale := bigPatient("MRN-1", 4, 200)
	stale.LastSequence = 15
	stale.Studies["1.2.826.0.1.3680043.10.1447.0"] = imagingStudy("1.2.826.0.1.3680043.10.1447.0", 260, 1)
	stale.Studies["1.2.826.0.1.3680043.10.1447.1"] = imagingStudy("1.2.826.0.1.3680043.10.1447.1", 255, 1)
	stale.Studies["9.9"] = imagingStudy("9.9", 5, 0)
	if err := old.Patients().PutPatientAt(ctx, stale, 150); !errors.Is(err, store.ErrSuperseded) {
		t.Fatalf("stale write: %v, want ErrSuperseded", err)
	}
	for _, s := range []*store.Store{old, successor} {
		if d := cmp.Diff(newer, readPatient(t, s, "MRN-1")); d != "" {
			t.Errorf("after the stale write the read model differs from the newer one (-newer +read):\n%s", d)
		}
	}
	resources := len(newer.Studies) + len(newer.Orders) + len(newer.Reports)
	if n := len(resourceKeys(t, old, "MRN-1")); n < resources {
		t.Errorf("%d resource keys for %d resources", n, resources)
	}
	// radbridge replay rewrites it and removes what no manifest references.
	if err := old.Patients().Overwrite().PutPatientAt(ctx, newer, 200); err != nil {
		t.Fatal(err)
	}
	if n := len(resourceKeys(t, old, "MRN-1")); n != resources {
		t.Errorf("after replay: %d resource keys for %d resources", n, resources)
	}
	if d := cmp.Diff(newer, readPatient(t, successor, "MRN-1")); d != "" {
		t.Errorf("after replay (-newer +read):\n%s", d)
	}
}

// TestReadModelAboveDefaultMaxPayload: against a NATS server with the
// default max_payload (1 MB), a patient whose resources total more than 2 MB
// (one value under the previous layout) is written and read back.
func TestReadModelAboveDefaultMaxPayload(t *testing.T) {
	ns := natstest.Server(t, 0)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	mp := nc.MaxPayload()
	nc.Close()
	if mp != 1<<20 {
		t.Fatalf("the server's max_payload is %d, want the default 1 MB", mp)
	}
	s := openURL(t, ns.ClientURL())
	ctx := context.Background()
	p := bigPatient("MRN-1", 60, 300)
	if b, _ := json.Marshal(p); len(b) < 2*int(mp) {
		t.Fatalf("the patient is %d bytes; the test wants more than 2 MB", len(b))
	}
	if err := s.Patients().PutPatientAt(ctx, p, 100); err != nil {
		t.Fatal(err)
	}
	p.LastSequence = 11
	p.Studies["1.2.826.0.1.3680043.10.1447.5"] = imagingStudy("1.2.826.0.1.3680043.10.1447.5", 301, 1)
	if err := s.Patients().PutPatientAt(ctx, p, 110); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(p, readPatient(t, s, "MRN-1")); d != "" {
		t.Errorf("read model (-written +read):\n%s", d)
	}
}

// BenchmarkReadModelLayout: the write after an event about one study, and
// the read (GetPatientImaging's), of a patient with n studies of 100
// instances (~15 KB an ImagingStudy), one value holding every resource
// (the previous layout: the whole value rewritten with a compare-and-set
// at the remembered revision, read and decoded whole) against the
// manifest and a key per resource. At n=3 (about 45 KB) the patient is
// below inlineMax: its manifest holds the resources (one key), which
// should cost what the single value did. Embedded store, fsync on (the
// daemon's default) and off (like an external cluster's default sync
// interval).
func BenchmarkReadModelLayout(b *testing.B) { benchFsync(b, benchReadModelLayout) }

func benchReadModelLayout(b *testing.B, s *store.Store, fsync bool) {
	ctx := context.Background()
	for _, n := range []int{3, 10, 100, 400} {
		p := bigPatient(fmt.Sprintf("MRN-%d", n), n, 100)
		p.Orders, p.Reports = nil, nil
		changed := "1.2.826.0.1.3680043.10.1447.0"
		versions := []json.RawMessage{imagingStudy(changed, 100, 1), imagingStudy(changed, 101, 2)}
		var seq uint64 = 10
		oldKey := "patient.old-layout-" + fmt.Sprint(n)
		var oldRev uint64
		putOld := func() {
			v, err := json.Marshal(struct {
				Fence map[string]uint64 `json:"fence"`
				*readmodel.Patient
			}{map[string]uint64{"last_sequence": seq, "applied": seq}, p})
			if err != nil {
				b.Fatal(err)
			}
			if oldRev == 0 {
				oldRev, err = s.State().Create(ctx, oldKey, v)
			} else {
				oldRev, err = s.State().Update(ctx, oldKey, v, oldRev)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		putNew := func() {
			if err := s.Patients().PutPatientAt(ctx, p, seq); err != nil {
				b.Fatal(err)
			}
		}
		putOld()
		putNew()
		for _, c := range []struct {
			name, key string // key: the value rewritten whole
			put       func()
		}{{"old", oldKey, putOld}, {"new", "patient." + eventlog.PatientToken(p.ID), putNew}} {
			b.Run(fmt.Sprintf("put/studies=%d/%s", n, c.name), func(b *testing.B) {
				for i := range b.N {
					seq++
					p.LastSequence = seq
					p.Studies[changed] = versions[i%2]
					c.put()
				}
				e, err := s.State().Get(ctx, c.key)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(len(e.Value())), "whole-value-B")
			})
		}
		if !fsync {
			continue // reads do not depend on it
		}
		b.Run(fmt.Sprintf("get/studies=%d/old", n), func(b *testing.B) {
			for range b.N {
				e, err := s.State().Get(ctx, oldKey)
				if err != nil {
					b.Fatal(err)
				}
				var pt readmodel.Patient
				if err := json.Unmarshal(e.Value(), &pt); err != nil || len(pt.Studies) != n {
					b.Fatal(len(pt.Studies), err)
				}
			}
		})
		b.Run(fmt.Sprintf("get/studies=%d/new", n), func(b *testing.B) {
			for range b.N {
				pt, err := s.Patients().Patient(ctx, p.ID)
				if err != nil || len(pt.Studies) != n {
					b.Fatal(err)
				}
			}
		})
	}
}

// patientKeys lists every key of a patient in the state bucket: its
// manifest (patient.<token>) and the keys below it.
func patientKeys(t *testing.T, s *store.Store, id string) []string {
	t.Helper()
	tok := "patient." + eventlog.PatientToken(id)
	return stateKeys(t, s, tok, tok+".>")
}

func resourcesIn(p *readmodel.Patient) int { return len(p.Studies) + len(p.Orders) + len(p.Reports) }

// TestReadModelSmallPatientOneKey: a patient whose resources are small is
// one key in the bucket; it grows past the threshold (64 KB) into the
// split layout, and a Patient ID correction moving its big studies away
// makes it one key again, the resource keys purged. The fence holds across
// layouts, and radbridge replay converts both ways.
func TestReadModelSmallPatientOneKey(t *testing.T) {
	url := runNATS(t)
	s, other := openURL(t, url), openURL(t, url)
	ctx := context.Background()
	check := func(step string, p *readmodel.Patient, wantKeys int) {
		t.Helper()
		if d := cmp.Diff(p, readPatient(t, s, p.ID)); d != "" {
			t.Errorf("%s: read model of %s (-written +read):\n%s", step, p.ID, d)
		}
		if d := cmp.Diff(p, readPatient(t, other, p.ID)); d != "" {
			t.Errorf("%s: read model of %s read by another process (-written +read):\n%s", step, p.ID, d)
		}
		if keys := patientKeys(t, s, p.ID); len(keys) != wantKeys {
			t.Errorf("%s: %s has %d keys, want %d:\n%s", step, p.ID, len(keys), wantKeys, strings.Join(keys, "\n"))
		}
	}

	// Small: 3 studies of 20 instances (about 3.4 KB each), 3 orders, 3 reports.
	a := bigPatient("MRN-A", 3, 20)
	if b, _ := json.Marshal(a); len(b) > 32<<10 {
		t.Fatalf("the small patient is %d bytes", len(b))
	}
	if err := s.Patients().PutPatientAt(ctx, a, 100); err != nil {
		t.Fatal(err)
	}
	check("small", a, 1)
	a.LastSequence = 11
	a.Studies["1.2.826.0.1.3680043.10.1447.1"] = imagingStudy("1.2.826.0.1.3680043.10.1447.1", 25, 1)
	a.Views["1.2.826.0.1.3680043.10.1447.1"] = 3
	if err := s.Patients().PutPatientAt(ctx, a, 110); err != nil {
		t.Fatal(err)
	}
	check("small, changed", a, 1)

	// Grows past the threshold: two studies of 500 instances (about 73 KB each).
	big := []string{"2.25.100", "2.25.101"}
	a.LastSequence = 12
	for i, uid := range big {
		a.Studies[uid] = imagingStudy(uid, 500, i)
	}
	if err := s.Patients().PutPatientAt(ctx, a, 120); err != nil {
		t.Fatal(err)
	}
	check("grown", a, 1+resourcesIn(a))
	if n := len(resourceKeys(t, s, "MRN-A")); n != resourcesIn(a) {
		t.Errorf("grown: %d resource keys for %d resources", n, resourcesIn(a))
	}
	e, err := s.State().Get(ctx, "patient."+eventlog.PatientToken("MRN-A"))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Value()) > 4096 {
		t.Errorf("grown: the manifest is %d bytes: resources are still in it?", len(e.Value()))
	}

	// A stale small write (a paused leader's state from before the
	// growth) is refused and leaves the split read model as it is.
	stale := bigPatient("MRN-A", 3, 20)
	stale.LastSequence = 11
	if err := other.Patients().PutPatientAt(ctx, stale, 110); !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("stale small write over a split read model: %v, want ErrSuperseded", err)
	}
	check("after a refused small write", a, 1+resourcesIn(a))

	// A correction moves the big studies to MRN-B: MRN-A is small again,
	// one key, its resource keys purged; MRN-B is split.
	b := bigPatient("MRN-B", 1, 20)
	b.Orders, b.Reports = nil, nil
	a.LastSequence, b.LastSequence = 13, 13
	for _, uid := range big {
		b.Studies[uid] = a.Studies[uid]
		delete(a.Studies, uid)
	}
	for _, p := range []*readmodel.Patient{a, b} {
		if err := s.Patients().PutPatientAt(ctx, p, 130); err != nil {
			t.Fatal(err)
		}
	}
	check("shrunk", a, 1)
	check("received the big studies", b, 1+resourcesIn(b))

	// A stale big write (the state before the correction) over the small
	// read model is refused; the keys it wrote first are orphans, never
	// read, and radbridge replay removes them.
	staleBig := bigPatient("MRN-A", 3, 20)
	staleBig.LastSequence = 12
	for i, uid := range big {
		staleBig.Studies[uid] = imagingStudy(uid, 501, i)
	}
	if err := other.Patients().PutPatientAt(ctx, staleBig, 120); !errors.Is(err, store.ErrSuperseded) {
		t.Errorf("stale big write over a small read model: %v, want ErrSuperseded", err)
	}
	if d := cmp.Diff(a, readPatient(t, s, "MRN-A")); d != "" {
		t.Errorf("after a refused big write (-newer +read):\n%s", d)
	}
	if err := s.Patients().Overwrite().PutPatientAt(ctx, a, 130); err != nil {
		t.Fatal(err)
	}
	check("replayed small", a, 1)

	// Replay converts both ways: MRN-B rebuilt small (one key), MRN-A
	// rebuilt big (split).
	b2 := bigPatient("MRN-B", 1, 20)
	b2.LastSequence = 9
	if err := s.Patients().Overwrite().PutPatientAt(ctx, b2, 90); err != nil {
		t.Fatal(err)
	}
	check("replayed from split to small", b2, 1)
	a2 := bigPatient("MRN-A", 3, 500)
	if err := s.Patients().Overwrite().PutPatientAt(ctx, a2, 90); err != nil {
		t.Fatal(err)
	}
	check("replayed from small to split", a2, 1+resourcesIn(a2))
}
