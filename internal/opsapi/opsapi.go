// Package opsapi holds the JSON bodies of the daemon's operator endpoints,
// GET /v1/status and GET /v1/explain, and of radbridge version --json:
// the daemon serves them, the radbridge status, explain and version
// commands read or print them. The field names are the wire format.
package opsapi

import (
	"fmt"
	"strings"
	"time"

	"radbridge/mapper"
	"radbridge/mapper/rules"
	"radbridge/store"
)

// BuildInfo describes the running binary.
type BuildInfo struct {
	Version     string `json:"version"`
	GoVersion   string `json:"go_version"`
	VCSRevision string `json:"vcs_revision,omitempty"`
	VCSTime     string `json:"vcs_time,omitempty"`
	VCSModified bool   `json:"vcs_modified,omitempty"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
}

// String is the one-line form printed by radbridge version.
func (b BuildInfo) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "radbridge %s %s %s/%s", b.Version, b.GoVersion, b.OS, b.Arch)
	if b.VCSRevision != "" {
		fmt.Fprintf(&sb, " revision %s", b.VCSRevision)
		if b.VCSTime != "" {
			fmt.Fprintf(&sb, " (%s)", b.VCSTime)
		}
		if b.VCSModified {
			sb.WriteString(" modified")
		}
	}
	return sb.String()
}

// Status is the daemon's state as GET /v1/status and radbridge status
// report it. It holds no patient data: counts, sequences, addresses.
type Status struct {
	Version       string           `json:"version"`
	Build         BuildInfo        `json:"build"`
	Started       time.Time        `json:"started"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	Ready         bool             `json:"ready"`
	State         string           `json:"state"` // ready, or why not
	Listeners     []Listener       `json:"listeners"`
	Store         StoreStatus      `json:"store"`
	Mapper        MapperStatus     `json:"mapper"`
	Subscribers   map[string]int64 `json:"subscribers"`
	// DeadLetters are the ingest records the mapper passed over (the
	// oldest of them, as many as the daemon lists, and how many there are).
	DeadLetters DeadLetterStatus `json:"dead_letters"`
	HL7         *HL7Status       `json:"hl7,omitempty"`
	DICOM       *DICOMStatus     `json:"dicom,omitempty"`
}

// Listener is one bound address.
type Listener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	TLS     bool   `json:"tls"`
}

// StoreStatus says where the store is and how big its streams are.
type StoreStatus struct {
	Embedded  bool                `json:"embedded"`
	Location  string              `json:"location"` // data dir, or NATS URLs without credentials
	Connected bool                `json:"connected"`
	Streams   []store.StreamState `json:"streams,omitempty"`
	Error     string              `json:"error,omitempty"`
}

// MapperStatus is the mapper's position. Role is "leader" when this
// process maps (always, when it is alone) and "follower" when another
// process of a cluster holds the mapper lease.
type MapperStatus struct {
	Role               string `json:"role"`
	Clustered          bool   `json:"clustered"`
	Leader             string `json:"leader,omitempty"` // the lease holder's node id, in a cluster
	Running            bool   `json:"running"`
	Ready              bool   `json:"ready"`
	AppliedSequence    uint64 `json:"applied_sequence"`
	IngestHead         uint64 `json:"ingest_head"`
	Lag                uint64 `json:"lag"`
	QuietPeriodStudies int    `json:"quiet_period_studies"`
	EventsLastSequence uint64 `json:"events_last_sequence"`
}

// DeadLetterStatus lists dead-lettered records: sequence, kind, reason.
type DeadLetterStatus struct {
	Count   int                 `json:"count"`
	Records []mapper.DeadLetter `json:"records"`
	Error   string              `json:"error,omitempty"`
}

// HL7Status are the MLLP receiver's counters since start.
type HL7Status struct {
	Messages        int64            `json:"messages"`
	Acks            map[string]int64 `json:"acks"`
	ConnectionsOpen int64            `json:"connections_open"`
	Connections     int64            `json:"connections"`
	RejectedFrames  int64            `json:"rejected_frames"`
	StoreFailures   int64            `json:"store_failures"`
}

// DICOMStatus are the DICOM SCP's counters since start.
type DICOMStatus struct {
	AssociationsOpen     int64  `json:"associations_open"`
	AssociationsAccepted uint64 `json:"associations_accepted"`
	AssociationsRejected uint64 `json:"associations_rejected"`
	AssociationsAborted  uint64 `json:"associations_aborted"`
	InstancesStored      uint64 `json:"instances_stored"`
	StoreFailures        uint64 `json:"store_failures"`
	Echoes               uint64 `json:"echoes"`
	IANs                 uint64 `json:"ians"`
	MPPS                 uint64 `json:"mpps"`
}

// ExplainResponse is GET /v1/explain's answer: the mapper's explanation,
// the events about what it explains, and the dead letters concerning it.
type ExplainResponse struct {
	*rules.Explanation
	Events      []ExplainEvent      `json:"events"`
	DeadLetters []mapper.DeadLetter `json:"dead_letters"`
}

// ExplainEvent is one event about an explained resource.
type ExplainEvent struct {
	Sequence         uint64 `json:"sequence"`
	Type             string `json:"type"`
	Time             string `json:"time"`
	ResourceType     string `json:"resource_type"`
	ResourceID       string `json:"resource_id"`
	StudyInstanceUID string `json:"study_instance_uid,omitempty"`
	AccessionNumber  string `json:"accession_number,omitempty"`
	Message          string `json:"message"`
}
