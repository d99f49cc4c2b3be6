package mapper_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"radbridge/mapper"
	"radbridge/mapper/rules"
)

// bigState is a synthetic state shaped like 4,000 accessions of 2,000
// patients (orders, studies, reports as FHIR JSON).
func bigState() *rules.State {
	st := rules.NewState()
	res := json.RawMessage(`{"resourceType":"ImagingStudy","id":"x","status":"available","subject":{"reference":"Patient/P"},"description":"` + strings.Repeat("CT CHEST ", 100) + `"}`)
	for i := range 4000 {
		p := st.Patient(fmt.Sprintf("MRN%05d", i%2000))
		if p.Studies == nil {
			p.Studies, p.Orders, p.Reports = map[string]json.RawMessage{}, map[string]json.RawMessage{}, map[string]json.RawMessage{}
		}
		uid := fmt.Sprintf("1.2.826.0.1.3680043.10.1447.%d", i)
		p.Studies[uid], p.Orders[uid], p.Reports[uid] = res, res, res
		st.Studies[uid] = &rules.StudyState{UID: uid, PatientID: p.ID, Series: map[string]*rules.SeriesState{uid + ".1": {UID: uid + ".1", Instances: map[string]*rules.InstanceState{uid + ".1.1": {Number: 1}, uid + ".1.2": {Number: 2}, uid + ".1.3": {Number: 3}}}}}
	}
	return st
}

// BenchmarkSnapshotEncode is the pause a snapshot costs the mapper (the
// state's encoding; checksum and write happen in the background), against
// plain json.Marshal of the same state as the baseline.
func BenchmarkSnapshotEncode(b *testing.B) {
	st := bigState()
	for name, enc := range map[string]func(any) ([]byte, error){
		"json.Marshal": json.Marshal,
		"encodeState":  func(v any) ([]byte, error) { return mapper.EncodeState(v.(*rules.State)) },
	} {
		b.Run(name, func(b *testing.B) {
			var n int
			for range b.N {
				data, err := enc(st)
				if err != nil {
					b.Fatal(err)
				}
				n = len(data)
			}
			b.ReportMetric(float64(n)/(1<<20), "MB")
		})
	}
}
