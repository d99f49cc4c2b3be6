package ingest

import (
	"log/slog"
	"time"
)

// The DICOM observation bodies. Their JSON names are pinned by explicit
// tags: they are the names the first releases wrote (Go field names, the
// Peer fields flattened), and the golden files in testdata hold records in
// that form. Renaming a Go field must never rename its JSON.

// Peer identifies the sender of a DICOM message (or a DICOMweb request).
type Peer struct {
	CallingAE  string `json:"CallingAE"`
	CalledAE   string `json:"CalledAE"`
	RemoteAddr string `json:"RemoteAddr"`
}

// Instance is what a C-STORE (or a STOW-RS part, or a JSON notification)
// told us: the header attributes needed downstream, never the pixel data.
// String values are UTF-8, decoded per Specific Character Set (0008,0005);
// absent attributes are "" (or 0). The body of a KindDICOMInstance
// observation.
type Instance struct {
	Peer
	SOPClassUID       string `json:"SOPClassUID"`
	SOPInstanceUID    string `json:"SOPInstanceUID"`
	StudyInstanceUID  string `json:"StudyInstanceUID"`
	SeriesInstanceUID string `json:"SeriesInstanceUID"`
	TransferSyntaxUID string `json:"TransferSyntaxUID"`

	PatientID         string `json:"PatientID"`
	IssuerOfPatientID string `json:"IssuerOfPatientID"`
	PatientName       string `json:"PatientName"`
	PatientBirthDate  string `json:"PatientBirthDate"`
	PatientSex        string `json:"PatientSex"`

	AccessionNumber        string `json:"AccessionNumber"`
	Modality               string `json:"Modality"`
	BodyPartExamined       string `json:"BodyPartExamined"`
	StudyDescription       string `json:"StudyDescription"`
	SeriesDescription      string `json:"SeriesDescription"`
	StudyDate              string `json:"StudyDate"`
	StudyTime              string `json:"StudyTime"`
	StudyID                string `json:"StudyID"`
	ReferringPhysicianName string `json:"ReferringPhysicianName"`
	SeriesNumber           int    `json:"SeriesNumber"`
	InstanceNumber         int    `json:"InstanceNumber"`
	NumberOfFrames         int    `json:"NumberOfFrames"`
	SpecificCharacterSet   string `json:"SpecificCharacterSet"`

	// TimezoneOffsetFromUTC is (0008,0201), &ZZXX (e.g. +0100): the
	// offset of the data set's dates and times that carry none. Not part
	// of the content digests (a field added after the first release).
	TimezoneOffsetFromUTC string `json:"TimezoneOffsetFromUTC,omitempty"`

	// Size is the number of data set bytes received (as sent, after the
	// command; compressed when the transfer syntax is deflated).
	Size int64 `json:"Size"`
	// Path is the Part-10 file written under the store directory, or "".
	Path       string    `json:"Path"`
	ReceivedAt time.Time `json:"ReceivedAt"`
}

// LogValue implements slog.LogValuer: UIDs and technical fields only, no
// patient data.
func (i *Instance) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("sop_class_uid", i.SOPClassUID),
		slog.String("sop_instance_uid", i.SOPInstanceUID),
		slog.String("study_uid", i.StudyInstanceUID),
		slog.String("series_uid", i.SeriesInstanceUID),
		slog.String("transfer_syntax", i.TransferSyntaxUID),
		slog.String("modality", i.Modality),
		slog.Int64("bytes", i.Size),
		slog.String("calling_ae", i.CallingAE),
	)
}

// IAN is an Instance Availability Notification (PS3.3 section C.4.23,
// PS3.4 annex R); the body of a KindDICOMIAN observation.
type IAN struct {
	Peer
	// SOPInstanceUID identifies the notification itself.
	SOPInstanceUID   string `json:"SOPInstanceUID"`
	StudyInstanceUID string `json:"StudyInstanceUID"`
	// PerformedProcedureSteps are Referenced Performed Procedure Step
	// SOP Instance UIDs (0008,1111).
	PerformedProcedureSteps []string    `json:"PerformedProcedureSteps"`
	Series                  []IANSeries `json:"Series"`
	ReceivedAt              time.Time   `json:"ReceivedAt"`
	// Part and Parts number the records of an IAN too large for one
	// (NewIANs); both 0 for an IAN recorded whole.
	Part  int `json:"Part,omitempty"`
	Parts int `json:"Parts,omitempty"`
}

// IANSeries is one item of the Referenced Series Sequence (0008,1115).
type IANSeries struct {
	SeriesInstanceUID string        `json:"SeriesInstanceUID"`
	Instances         []IANInstance `json:"Instances"`
}

// IANInstance is one item of the Referenced SOP Sequence (0008,1199).
type IANInstance struct {
	SOPClassUID          string `json:"SOPClassUID"`
	SOPInstanceUID       string `json:"SOPInstanceUID"`
	InstanceAvailability string `json:"InstanceAvailability"` // ONLINE, NEARLINE, OFFLINE, UNAVAILABLE
	RetrieveAETitle      string `json:"RetrieveAETitle"`
}

// LogValue implements slog.LogValuer.
func (n *IAN) LogValue() slog.Value {
	count := 0
	for _, s := range n.Series {
		count += len(s.Instances)
	}
	return slog.GroupValue(
		slog.String("sop_instance_uid", n.SOPInstanceUID),
		slog.String("study_uid", n.StudyInstanceUID),
		slog.Int("series", len(n.Series)),
		slog.Int("instances", count),
	)
}

// MPPS status values of Performed Procedure Step Status (0040,0252).
const (
	MPPSInProgress   = "IN PROGRESS"
	MPPSCompleted    = "COMPLETED"
	MPPSDiscontinued = "DISCONTINUED"
)

// MPPSUpdate is one N-CREATE or N-SET of a Modality Performed Procedure
// Step (PS3.3 section C.4.13-C.4.15, PS3.4 annex F.7); the body of a
// KindDICOMMPPS observation. N-SET carries only the attributes being
// changed; absent ones are empty.
type MPPSUpdate struct {
	Peer
	SOPInstanceUID string `json:"SOPInstanceUID"`
	// Create is true for N-CREATE, false for N-SET.
	Create bool `json:"Create"`
	// Status is (0040,0252): IN PROGRESS, COMPLETED or DISCONTINUED.
	Status            string       `json:"Status"`
	StudyInstanceUIDs []string     `json:"StudyInstanceUIDs"`
	AccessionNumbers  []string     `json:"AccessionNumbers"`
	PatientID         string       `json:"PatientID"`
	PatientName       string       `json:"PatientName"`
	Modality          string       `json:"Modality"`
	ProcedureStepID   string       `json:"ProcedureStepID"`
	StartDate         string       `json:"StartDate"`
	StartTime         string       `json:"StartTime"`
	EndDate           string       `json:"EndDate"`
	EndTime           string       `json:"EndTime"`
	Series            []MPPSSeries `json:"Series"`
	ReceivedAt        time.Time    `json:"ReceivedAt"`
}

// MPPSSeries is one item of the Performed Series Sequence (0040,0340).
type MPPSSeries struct {
	SeriesInstanceUID string `json:"SeriesInstanceUID"`
	// SOPInstanceUIDs come from the Referenced Image Sequence (0008,1140)
	// and Referenced Non-Image Composite SOP Instance Sequence (0040,0220).
	SOPInstanceUIDs []string `json:"SOPInstanceUIDs"`
}

// LogValue implements slog.LogValuer: no patient data.
func (u *MPPSUpdate) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("sop_instance_uid", u.SOPInstanceUID),
		slog.Bool("create", u.Create),
		slog.String("status", u.Status),
		slog.Any("study_uids", u.StudyInstanceUIDs),
		slog.Int("series", len(u.Series)),
	)
}

// Viewed is the body of a KindViewed observation: a viewer published
// IMAGING_STUDY_VIEWED through the API.
type Viewed struct {
	PatientID        string `json:"patient_id"`
	StudyInstanceUID string `json:"study_instance_uid"`
	AccessionNumber  string `json:"accession_number,omitempty"`
	ViewerID         string `json:"viewer_id,omitempty"`
	ViewerName       string `json:"viewer_name,omitempty"`
	// Agent is the authenticated subject that published it (the token's
	// subject, JWT sub); ViewerID and ViewerName are what the client said.
	// Empty in records written before it existed.
	Agent string `json:"agent,omitempty"`
}
