package hl7

import (
	"bytes"
	"testing"

	lenaten "github.com/lenaten/hl7"
)

// BenchmarkParseORU parses the ~2 KB ORU^R01 and reads the fields a mapper
// reads. The lenaten sub-benchmark parses the same bytes (with \r
// endings, no final terminator, as that library needs) and reads the
// same fields through its query API, for comparison.
func BenchmarkParseORU(b *testing.B) {
	in := readTestdata(b, "oru_r01.hl7")
	b.Run("radbridge", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		for b.Loop() {
			m, err := Parse(in)
			if err != nil {
				b.Fatal(err)
			}
			_ = m.ControlID()
			_ = m.Get("PID-3-1")
			_ = m.Get("OBR-25")
		}
	})
	b.Run("parse-only", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Parse(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lenaten", func(b *testing.B) {
		trimmed := bytes.TrimRight(in, "\r")
		buf := make([]byte, len(trimmed), len(trimmed)+8)
		copy(buf, trimmed)
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		for b.Loop() {
			m := lenaten.NewMessage(buf)
			if err := m.Parse(); err != nil {
				b.Fatal(err)
			}
			_, _ = m.Find("MSH.10")
			_, _ = m.Find("PID.3.0")
			_, _ = m.Find("OBR.25")
		}
	})
}
