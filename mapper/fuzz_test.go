package mapper_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/mapper/rules"
)

// FuzzHL7Mapping maps arbitrary HL7 messages: a message the receiver let
// through must never panic the mapper (it would stop every event).
func FuzzHL7Mapping(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "hl7", "testdata", "*.hl7"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.5\rPID|1||X\rOBR|1|||C^D|||||||||||||||||||||F\rOBX|1|TX|||a\\.br\\b||AA"))
	byKind := rules.New(rules.Options{QuietPeriod: time.Hour})
	rule := byKind[ingest.KindHL7]
	f.Fuzz(func(t *testing.T, raw []byte) {
		body, _ := json.Marshal(ingest.HL7Body{Raw: raw})
		c := rules.NewContext(rules.NewState(), ingest.Record{Seq: 1, Observation: ingest.Observation{Kind: ingest.KindHL7, Time: time.Unix(0, 0), Body: body}}, map[string]bool{})
		_ = rule.Apply(c)
		for _, ev := range c.Events() {
			if ev.Resource == nil {
				t.Fatalf("event %v without resource", ev.Type)
			}
		}
	})
}
