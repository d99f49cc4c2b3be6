package scp

import (
	"runtime"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/ingest"
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
		PatientName:            personName(ds.Joined(tPatientName)),
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
		ReferringPhysicianName: personName(ds.Joined(tReferringPhysician)),
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

// ValidUID reports whether u is a PS3.5 section 9.1 UID: digits and dots,
// at most 64 characters. A valid UID is also a safe path component.
func ValidUID(u string) bool { return validUID(u) }

// PartFile is a Part-10 file being written into a store directory: a
// temporary file, renamed to <dir>/<study>/<series>/<sop>.dcm by Commit
// (fsynced) or removed by Discard.
type PartFile struct{ p *partFile }

// CreatePartFile starts a Part-10 file in dir.
func CreatePartFile(dir string) (*PartFile, error) {
	p, err := createPartFile(dir)
	if err != nil {
		return nil, err
	}
	return &PartFile{p: p}, nil
}

// Write appends to the file. It never fails: the first write error is kept
// and returned by Commit, so a caller keeps reading its source to the end.
func (f *PartFile) Write(b []byte) (int, error) { return f.p.Write(b) }

// Commit fails with the first write error, else syncs the file and renames
// it into place; the UIDs must be valid.
func (f *PartFile) Commit(study, series, sop string) (string, error) {
	return f.p.commit(study, series, sop)
}

// Discard removes the file unless it was committed.
func (f *PartFile) Discard() { f.p.discard() }
