package demo

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
)

// ExplicitVRLittleEndian is the transfer syntax Encode writes.
const ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"

// Storage SOP classes of the instances the simulation makes.
var sopClasses = map[string]string{
	"CT": "1.2.840.10008.5.1.4.1.1.2",
	"MR": "1.2.840.10008.5.1.4.1.1.4",
	"CR": "1.2.840.10008.5.1.4.1.1.1",
	"US": "1.2.840.10008.5.1.4.1.1.6.1",
}

// SOPClass is the storage SOP class UID of a modality ("" when unknown).
func SOPClass(modality string) string { return sopClasses[modality] }

// Instance is one synthetic image.
type Instance struct {
	SOPClassUID, SOPInstanceUID    string
	StudyUID, SeriesUID            string
	PatientID, Issuer, PatientName string
	BirthDate, Sex                 string
	Accession, StudyDate           string
	StudyTime, StudyID             string
	Modality, BodyPart             string
	StudyDescription               string
	SeriesDescription              string
	SeriesNumber, InstanceNumber   int
	Rows, Columns                  int
}

// String describes the instance without patient data.
func (in Instance) String() string {
	return fmt.Sprintf("%s %s series %d instance %d", in.Modality, in.SOPInstanceUID, in.SeriesNumber, in.InstanceNumber)
}

type element struct {
	tag   uint32
	vr    string
	value []byte
}

// Encode writes the instance as an explicit VR little endian dataset with a
// 16-bit monochrome gradient as pixel data.
func (in Instance) Encode() []byte {
	rows, cols := in.Rows, in.Columns
	if rows <= 0 {
		rows = 64
	}
	if cols <= 0 {
		cols = 64
	}
	var els []element
	str := func(tag uint32, vr, v string) {
		b := []byte(v)
		if len(b)%2 == 1 {
			if vr == "UI" {
				b = append(b, 0)
			} else {
				b = append(b, ' ')
			}
		}
		els = append(els, element{tag, vr, b})
	}
	us := func(tag uint32, v int) {
		els = append(els, element{tag, "US", binary.LittleEndian.AppendUint16(nil, uint16(v))})
	}
	str(0x00080005, "CS", "ISO_IR 192")
	str(0x00080016, "UI", in.SOPClassUID)
	str(0x00080018, "UI", in.SOPInstanceUID)
	str(0x00080020, "DA", in.StudyDate)
	str(0x00080030, "TM", in.StudyTime)
	str(0x00080050, "SH", in.Accession)
	str(0x00080060, "CS", in.Modality)
	str(0x00080090, "PN", "")
	str(0x00081030, "LO", in.StudyDescription)
	str(0x0008103E, "LO", in.SeriesDescription)
	str(0x00100010, "PN", in.PatientName)
	str(0x00100020, "LO", in.PatientID)
	str(0x00100021, "LO", in.Issuer)
	str(0x00100030, "DA", in.BirthDate)
	str(0x00100040, "CS", in.Sex)
	str(0x00180015, "CS", in.BodyPart)
	str(0x0020000D, "UI", in.StudyUID)
	str(0x0020000E, "UI", in.SeriesUID)
	str(0x00200010, "SH", in.StudyID)
	str(0x00200011, "IS", strconv.Itoa(in.SeriesNumber))
	str(0x00200013, "IS", strconv.Itoa(in.InstanceNumber))
	us(0x00280002, 1)
	str(0x00280004, "CS", "MONOCHROME2")
	us(0x00280010, rows)
	us(0x00280011, cols)
	us(0x00280100, 16)
	us(0x00280101, 12)
	us(0x00280102, 11)
	us(0x00280103, 0)
	px := make([]byte, 0, rows*cols*2)
	for y := range rows {
		for x := range cols {
			v := (x*4095/max(cols-1, 1) + y*4095/max(rows-1, 1) + in.InstanceNumber*97) / 2 % 4096
			px = binary.LittleEndian.AppendUint16(px, uint16(v))
		}
	}
	els = append(els, element{0x7FE00010, "OW", px})
	sort.Slice(els, func(i, j int) bool { return els[i].tag < els[j].tag })

	var out []byte
	for _, e := range els {
		out = binary.LittleEndian.AppendUint16(out, uint16(e.tag>>16))
		out = binary.LittleEndian.AppendUint16(out, uint16(e.tag))
		out = append(out, e.vr...)
		switch e.vr {
		case "OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR":
			out = append(out, 0, 0)
			out = binary.LittleEndian.AppendUint32(out, uint32(len(e.value)))
		default:
			out = binary.LittleEndian.AppendUint16(out, uint16(len(e.value)))
		}
		out = append(out, e.value...)
	}
	return out
}
