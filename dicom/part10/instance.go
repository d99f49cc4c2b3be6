package part10

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/ingest"
)

// Attribute tags read from a received instance's header (PS3.6).
var (
	tSpecificCharacterSet = dataset.Tag(0x0008, 0x0005)
	tSOPClassUID          = dataset.Tag(0x0008, 0x0016)
	tSOPInstanceUID       = dataset.Tag(0x0008, 0x0018)
	tStudyDate            = dataset.Tag(0x0008, 0x0020)
	tStudyTime            = dataset.Tag(0x0008, 0x0030)
	tTimezoneOffset       = dataset.Tag(0x0008, 0x0201)
	tAccessionNumber      = dataset.Tag(0x0008, 0x0050)
	tModality             = dataset.Tag(0x0008, 0x0060)
	tReferringPhysician   = dataset.Tag(0x0008, 0x0090)
	tStudyDescription     = dataset.Tag(0x0008, 0x1030)
	tSeriesDescription    = dataset.Tag(0x0008, 0x103E)
	tPatientName          = dataset.Tag(0x0010, 0x0010)
	tPatientID            = dataset.Tag(0x0010, 0x0020)
	tIssuerOfPatientID    = dataset.Tag(0x0010, 0x0021)
	tPatientBirthDate     = dataset.Tag(0x0010, 0x0030)
	tPatientSex           = dataset.Tag(0x0010, 0x0040)
	tBodyPartExamined     = dataset.Tag(0x0018, 0x0015)
	tStudyInstanceUID     = dataset.Tag(0x0020, 0x000D)
	tSeriesInstanceUID    = dataset.Tag(0x0020, 0x000E)
	tStudyID              = dataset.Tag(0x0020, 0x0010)
	tSeriesNumber         = dataset.Tag(0x0020, 0x0011)
	tInstanceNumber       = dataset.Tag(0x0020, 0x0013)
	tNumberOfFrames       = dataset.Tag(0x0028, 0x0008)
)

// InstanceFromDataset builds the Instance a parsed data set header
// describes. The caller sets Peer, Size, Path and checks the UIDs
// (ValidUID); the C-STORE SCP and STOW-RS build instances the same way.
func InstanceFromDataset(ds *dataset.Dataset, transferSyntax string, receivedAt time.Time) *ingest.Instance {
	inst := &ingest.Instance{
		SOPClassUID:            ds.String(tSOPClassUID),
		SOPInstanceUID:         ds.String(tSOPInstanceUID),
		StudyInstanceUID:       ds.String(tStudyInstanceUID),
		SeriesInstanceUID:      ds.String(tSeriesInstanceUID),
		TransferSyntaxUID:      transferSyntax,
		PatientID:              ds.String(tPatientID),
		IssuerOfPatientID:      ds.String(tIssuerOfPatientID),
		PatientName:            PersonName(ds.Joined(tPatientName)),
		PatientBirthDate:       ds.String(tPatientBirthDate),
		PatientSex:             ds.String(tPatientSex),
		AccessionNumber:        ds.String(tAccessionNumber),
		Modality:               ds.String(tModality),
		BodyPartExamined:       ds.String(tBodyPartExamined),
		StudyDescription:       ds.String(tStudyDescription),
		SeriesDescription:      ds.String(tSeriesDescription),
		StudyDate:              ds.String(tStudyDate),
		StudyTime:              ds.String(tStudyTime),
		TimezoneOffsetFromUTC:  ds.String(tTimezoneOffset),
		StudyID:                ds.String(tStudyID),
		ReferringPhysicianName: PersonName(ds.Joined(tReferringPhysician)),
		SpecificCharacterSet:   ds.Joined(tSpecificCharacterSet),
		ReceivedAt:             receivedAt,
	}
	inst.SeriesNumber, _ = ds.Int(tSeriesNumber)
	inst.InstanceNumber, _ = ds.Int(tInstanceNumber)
	inst.NumberOfFrames, _ = ds.Int(tNumberOfFrames)
	return inst
}

// parses bounds the data set headers parsed at once in this process, over
// C-STORE and STOW-RS together (GOMAXPROCS, at least 2): a parse takes heap
// per element, so 32 associations at the element limit would otherwise
// hold 32 parses' worth at once.
var parses = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

// ParseInstance parses a data set header into the Instance it describes
// (see InstanceFromDataset), at most cap(parses) at a time in the process:
// the parsed data set is dropped before the slot is given back.
func ParseInstance(header []byte, syntax dataset.Syntax, transferSyntax string, receivedAt time.Time) (*ingest.Instance, error) {
	parses <- struct{}{}
	defer func() { <-parses }()
	ds, err := dataset.Parse(header, syntax)
	if err != nil {
		return nil, err
	}
	return InstanceFromDataset(ds, transferSyntax, receivedAt), nil
}

// PersonName drops trailing empty components and component groups of a PN
// value, which PS3.5 section 6.2.1 makes insignificant ("A^B^^=" is "A^B").
func PersonName(v string) string {
	vals := strings.Split(v, `\`)
	for i, val := range vals {
		groups := strings.Split(val, "=")
		for j, g := range groups {
			groups[j] = strings.TrimRight(g, "^ ")
		}
		for len(groups) > 0 && groups[len(groups)-1] == "" {
			groups = groups[:len(groups)-1]
		}
		vals[i] = strings.Join(groups, "=")
	}
	return strings.Join(vals, `\`)
}

// ValidUID reports whether u is a PS3.5 section 9.1 UID: digits and dots,
// at most 64 characters, no empty component. A valid UID is also a safe
// path component.
func ValidUID(u string) bool { return CheckUID(u) == nil }

// CheckUID says why u is not a PS3.5 section 9.1 UID, or nil if it is
// one.
func CheckUID(u string) error {
	if u == "" {
		return errors.New("empty UID")
	}
	if len(u) > 64 {
		return fmt.Errorf("UID of %d characters, more than 64", len(u))
	}
	for k, c := range []byte(u) {
		if c != '.' && (c < '0' || c > '9') {
			return fmt.Errorf("character %q at %d is not a digit or '.'", c, k)
		}
	}
	if u[0] == '.' || u[len(u)-1] == '.' || strings.Contains(u, "..") {
		return errors.New("empty component")
	}
	return nil
}
