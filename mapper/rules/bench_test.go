package rules_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/mapper/rules"
)

// BenchmarkMapFinalReport is the rules' share of hl7load's steady state:
// the same patient's final ORU^R01 for an ordered accession, again and
// again (each one is a new DiagnosticReport version and event, linked to
// the order).
func BenchmarkMapFinalReport(b *testing.B) {
	byKind := rules.New(rules.Options{HL7PatientAuthority: "HOSP", DICOMPatientIssuer: "HOSP", QuietPeriod: 10 * time.Second, Zone: time.UTC})
	st := rules.NewState()
	now := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	seq := uint64(0)
	feed := func(o specObservation) {
		seq++
		body, err := json.Marshal(o.body)
		if err != nil {
			b.Fatal(err)
		}
		obs := ingest.Observation{Kind: o.kind, Key: fmt.Sprintf("%s:%d", o.kind, seq), Time: now.Add(time.Duration(seq) * time.Second), Body: body}
		if _, err := rules.Map(byKind, st, ingest.Record{Seq: seq, Observation: obs}, map[string]bool{}); err != nil {
			b.Fatal(err)
		}
	}
	feed(order("NW", "SC"))
	report := result("F", "")
	for b.Loop() {
		feed(report)
	}
}
