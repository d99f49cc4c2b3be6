package scp

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"radbridge/dicom/dimse"
)

// Handler records what the SCP receives. The SCP answers success only after
// the handler returned nil, so a handler must have durably recorded the
// observation by then. A resent SOP Instance UID is the handler's business
// (it should count as success). An error is answered with a failure status:
// a *StatusError chooses it, any other error gives A700 (out of resources,
// the sender may retry) with the error text as Error Comment.
type Handler interface {
	// StoreInstance is called once per C-STORE whose data set header parsed.
	StoreInstance(ctx context.Context, inst *Instance) error
	// InstanceAvailability is called per N-CREATE of an Instance
	// Availability Notification (PS3.4 annex R, IHE RAD-49).
	InstanceAvailability(ctx context.Context, ian *IAN) error
	// MPPS is called per N-CREATE or N-SET of a Modality Performed
	// Procedure Step (PS3.4 annex F.7).
	MPPS(ctx context.Context, u *MPPSUpdate) error
}

// StatusError lets a Handler choose the DIMSE status of its failure.
type StatusError struct {
	Status  dimse.Status
	Comment string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("DIMSE status %v: %s", e.Status, e.Comment)
}

// Peer identifies the sender of a message.
type Peer struct {
	CallingAE  string
	CalledAE   string
	RemoteAddr string
}

// Instance is what a C-STORE told us: the header attributes needed
// downstream, never the pixel data. String values are UTF-8, decoded per
// Specific Character Set (0008,0005); absent attributes are "" (or 0).
type Instance struct {
	Peer
	SOPClassUID       string
	SOPInstanceUID    string
	StudyInstanceUID  string
	SeriesInstanceUID string
	TransferSyntaxUID string

	PatientID         string
	IssuerOfPatientID string
	PatientName       string
	PatientBirthDate  string
	PatientSex        string

	AccessionNumber        string
	Modality               string
	BodyPartExamined       string
	StudyDescription       string
	SeriesDescription      string
	StudyDate              string
	StudyTime              string
	StudyID                string
	ReferringPhysicianName string
	SeriesNumber           int
	InstanceNumber         int
	NumberOfFrames         int
	SpecificCharacterSet   string

	// TimezoneOffsetFromUTC is (0008,0201), &ZZXX (e.g. +0100): the
	// offset of the data set's dates and times that carry none. Omitted
	// from JSON when absent, so records and digests of instances without
	// it are as before.
	TimezoneOffsetFromUTC string `json:"TimezoneOffsetFromUTC,omitempty"`

	// Size is the number of data set bytes received (as sent, after the
	// command; compressed when the transfer syntax is deflated).
	Size int64
	// Path is the Part-10 file written under Config.StoreDir, or "".
	Path       string
	ReceivedAt time.Time
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
// PS3.4 annex R).
type IAN struct {
	Peer
	// SOPInstanceUID identifies the notification itself.
	SOPInstanceUID   string
	StudyInstanceUID string
	// PerformedProcedureSteps are Referenced Performed Procedure Step
	// SOP Instance UIDs (0008,1111).
	PerformedProcedureSteps []string
	Series                  []IANSeries
	ReceivedAt              time.Time
}

// IANSeries is one item of the Referenced Series Sequence (0008,1115).
type IANSeries struct {
	SeriesInstanceUID string
	Instances         []IANInstance
}

// IANInstance is one item of the Referenced SOP Sequence (0008,1199).
type IANInstance struct {
	SOPClassUID          string
	SOPInstanceUID       string
	InstanceAvailability string // ONLINE, NEARLINE, OFFLINE, UNAVAILABLE
	RetrieveAETitle      string
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
// Step (PS3.3 section C.4.13-C.4.15, PS3.4 annex F.7). N-SET carries only
// the attributes being changed; absent ones are empty.
type MPPSUpdate struct {
	Peer
	SOPInstanceUID string
	// Create is true for N-CREATE, false for N-SET.
	Create bool
	// Status is (0040,0252): IN PROGRESS, COMPLETED or DISCONTINUED.
	Status            string
	StudyInstanceUIDs []string
	AccessionNumbers  []string
	PatientID         string
	PatientName       string
	Modality          string
	ProcedureStepID   string
	StartDate         string
	StartTime         string
	EndDate           string
	EndTime           string
	Series            []MPPSSeries
	ReceivedAt        time.Time
}

// MPPSSeries is one item of the Performed Series Sequence (0040,0340).
type MPPSSeries struct {
	SeriesInstanceUID string
	// SOPInstanceUIDs come from the Referenced Image Sequence (0008,1140)
	// and Referenced Non-Image Composite SOP Instance Sequence (0040,0220).
	SOPInstanceUIDs []string
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
