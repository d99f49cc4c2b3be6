package demo

import (
	"encoding/binary"
	"strings"
	"testing"

	"radbridge/dicom/dataset"
)

func TestEncodeParses(t *testing.T) {
	for _, e := range Plan(4, 0) {
		c := Config{Authority: DefaultAuthority}
		st := c.study(&e)
		if len(st.Instances) != e.Instances() {
			t.Fatalf("%s: %d instances, want %d", e.Modality, len(st.Instances), e.Instances())
		}
		in := st.Instances[len(st.Instances)-1]
		b := in.Encode()
		ds, err := dataset.Parse(b, dataset.Syntax{})
		if err != nil {
			t.Fatalf("%s: %v", e.Modality, err)
		}
		for _, c := range []struct {
			group, element uint16
			want           string
		}{
			{0x0008, 0x0016, SOPClass(e.Modality)},
			{0x0008, 0x0018, in.SOPInstanceUID},
			{0x0008, 0x0050, e.Accession},
			{0x0008, 0x0060, e.Modality},
			{0x0008, 0x1030, e.Name},
			{0x0010, 0x0010, e.Patient.Name},
			{0x0010, 0x0020, e.Patient.ID},
			{0x0010, 0x0021, DefaultAuthority},
			{0x0018, 0x0015, e.BodyPart},
			{0x0020, 0x000D, st.UID},
			{0x0020, 0x000E, in.SeriesUID},
		} {
			if got := ds.String(dataset.Tag(c.group, c.element)); got != c.want {
				t.Errorf("%s (%04X,%04X) = %q, want %q", e.Modality, c.group, c.element, got, c.want)
			}
		}
		// Pixel data is the last element: 64x64 16-bit.
		px := b[len(b)-64*64*2-12:]
		if got := binary.LittleEndian.Uint32(px[:4]); got != 0x00107FE0 || string(px[4:6]) != "OW" || binary.LittleEndian.Uint32(px[8:12]) != 64*64*2 {
			t.Errorf("%s: pixel data header % x", e.Modality, px[:12])
		}
		if len(in.SOPInstanceUID) > 64 {
			t.Errorf("SOP Instance UID %d characters", len(in.SOPInstanceUID))
		}
	}
}

func TestMessagesParse(t *testing.T) {
	c := Config{Authority: DefaultAuthority}
	e := Plan(2, 3)[1]
	for _, m := range []string{c.order(&e, "C1", "NW", "SC"), c.report(&e, "C2", "F")} {
		if strings.ContainsAny(m, "\n") || !strings.HasPrefix(m, "MSH|") {
			t.Errorf("bad message %q", m)
		}
	}
	if r := c.report(&e, "C2", "F"); !strings.Contains(r, "|||HH|||F") {
		t.Errorf("critical final report without HH: %q", r)
	}
}
