package mapper_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"radbridge/ingest"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
)

// TestRecordedZone: times without an offset are read in the zone recorded
// with the observation, whatever the mapper's default zone; an explicit
// offset (HL7 DTM +/-ZZZZ, DICOM Timezone Offset From UTC) wins; a record
// without a zone (written before zones were recorded) is read in
// Options.Zone.
func TestRecordedZone(t *testing.T) {
	tokyo, _ := time.LoadLocation("Asia/Tokyo")
	byKind := rules.New(rules.Options{Zone: tokyo, QuietPeriod: time.Second})
	apply := func(kind, zone string, body any) map[string]any {
		t.Helper()
		b, _ := json.Marshal(body)
		c := rules.NewContext(rules.NewState(), ingest.Record{Seq: 1, Observation: ingest.Observation{
			Kind: kind, Key: "k", Time: time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC), Zone: zone, Body: b,
		}}, map[string]bool{})
		if err := byKind[kind].Apply(c); err != nil {
			t.Fatal(err)
		}
		var ev *rbv1.Event
		for _, e := range c.Events() {
			if e.Resource != nil {
				ev = e
			}
		}
		if ev == nil {
			t.Fatalf("%s: no event with a resource", kind)
		}
		return ev.Resource.AsMap()
	}
	order := func(orc9, tq17 string) ingest.HL7Body {
		msg := "MSH|^~\\&|RIS|H|RB|H|20260115083000||ORM^O01|C1|P|2.5.1\r" +
			"PID|1||MRN1^^^H^MR||DOE^JO\r" +
			"ORC|NW|P1|F1||SC||||" + orc9 + "\r" +
			"TQ1|1||||||" + tq17 + "\r" +
			"OBR|1|P1|F1|71250^CT CHEST^C4||||||||||||||ACC1||||||CT\r"
		return ingest.HL7Body{Raw: []byte(msg)}
	}
	tests := []struct {
		name, zone string
		body       ingest.HL7Body
		authored   string
		occurrence string
	}{
		{"zone recorded", "America/New_York", order("20260115083000", "20260716090000"), "2026-01-15T08:30:00-05:00", "2026-07-16T09:00:00-04:00"},
		{"explicit offset wins", "America/New_York", order("20260115083000+0100", "20260716090000-0230"), "2026-01-15T08:30:00+01:00", "2026-07-16T09:00:00-02:30"},
		{"no zone recorded: Options.Zone", "", order("20260115083000", "20260716090000"), "2026-01-15T08:30:00+09:00", "2026-07-16T09:00:00+09:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sr := apply(ingest.KindHL7, tt.zone, tt.body)
			if got := sr["authoredOn"]; got != tt.authored {
				t.Errorf("authoredOn %v, want %s", got, tt.authored)
			}
			if got := sr["occurrenceDateTime"]; got != tt.occurrence {
				t.Errorf("occurrenceDateTime %v, want %s", got, tt.occurrence)
			}
		})
	}

	inst := ingest.Instance{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: "1.2.3.1.1", StudyInstanceUID: "1.2.3",
		SeriesInstanceUID: "1.2.3.1", PatientID: "MRN1", StudyDate: "20260715", StudyTime: "101500", Modality: "CT"}
	for _, tt := range []struct{ name, zone, offset, want string }{
		{"zone recorded", "Europe/Berlin", "", "2026-07-15T10:15:00+02:00"},
		{"Timezone Offset From UTC wins", "Europe/Berlin", "-0500", "2026-07-15T10:15:00-05:00"},
		{"no zone recorded: Options.Zone", "", "", "2026-07-15T10:15:00+09:00"},
		{"malformed offset: the recorded zone", "Europe/Berlin", "+2500", "2026-07-15T10:15:00+02:00"},
	} {
		t.Run("DICOM "+tt.name, func(t *testing.T) {
			in := inst
			in.TimezoneOffsetFromUTC = tt.offset
			is := apply(ingest.KindDICOMInstance, tt.zone, in)
			if got := is["started"]; got != tt.want {
				t.Errorf("ImagingStudy.started %v, want %s", got, tt.want)
			}
		})
	}
	// The digest and key content of an instance without the offset are as
	// before the field existed.
	b, _ := json.Marshal(inst)
	if strings.Contains(string(b), "TimezoneOffsetFromUTC") {
		t.Errorf("an instance without (0008,0201) marshals the field: %s", b)
	}
}
