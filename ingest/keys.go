package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// One rule decides what is a resend on every front: a resend is the same
// sender's same identifier with the same content. Only a resend may be
// acknowledged without a new record; the same identifier with other content
// is new data, mapped as such and reported (see SeenKey and ContentKey).
//
//   - HL7 (MLLP): the identifier is MSH-3, MSH-4 and MSH-10; the content is
//     the message as received except MSH-7 (engines stamp a resend with the
//     time it was sent again), the segment terminators (\r, \n or \r\n) and
//     empty trailing fields. See HL7Digest.
//   - DICOM (C-STORE, STOW-RS, JSON notifications): the identifier is the
//     SOP Instance UID (globally unique, so the sender is not part of it);
//     the content is every recorded attribute except the peer and the
//     receive time. The same UID with other attributes is a correction.
//   - IAN and MPPS: their SOP Instance UID and their content, the same way.
//   - API (IMAGING_STUDY_VIEWED): the client_event_id and the body.
//
// Keys are built here and only here. A digest is computed over a named list
// of fields (the *V1 types below), so adding a field to an observation type
// never changes what counts as a resend of data recorded before.

// Key prefixes, one per identifier space.
const (
	hl7Prefix      = "hl7:"
	instancePrefix = "dicom:"
	ianPrefix      = "ian:"
	mppsPrefix     = "mpps:"
	viewedPrefix   = "api:"
	// contentSep joins an identifier and its content digest in the keys
	// written since content digests were added to HL7 and API keys.
	contentSep = "#"
)

// NewHL7 builds the observation of an HL7 v2 message as received, with
// the sender and control id read from its MSH segment.
func NewHL7(raw []byte, sendingApp, sendingFacility, controlID string, at time.Time) (Observation, error) {
	body, err := json.Marshal(HL7Body{Raw: raw})
	if err != nil {
		return Observation{}, fmt.Errorf("encode hl7 body: %w", err)
	}
	return Observation{
		Kind: KindHL7,
		Key:  HL7ControlKey(sendingApp, sendingFacility, controlID) + contentSep + HL7Digest(raw),
		Time: at.UTC(),
		Source: Source{
			Protocol:           "hl7",
			SendingApplication: sendingApp,
			SendingFacility:    sendingFacility,
			MessageControlID:   controlID,
		},
		Body: body,
	}, nil
}

// HL7ControlKey is an HL7 message's identifier: sending application
// (MSH-3), sending facility (MSH-4) and message control id (MSH-10). It was
// the whole key of the records written before content digests.
func HL7ControlKey(sendingApp, sendingFacility, controlID string) string {
	return hl7Prefix + sendingApp + "|" + sendingFacility + "|" + controlID
}

// HL7Digest hashes what an HL7 message says, so that a resend has the
// same digest and a different message under a reused control id does not.
// Ignored: MSH-7 (date/time of message, restamped by engines that resend),
// how segments are terminated (\r, \n, \r\n), empty segments, and empty
// fields at the end of a segment. Everything else, MSH-1 and MSH-2 (the
// delimiters) included, counts byte for byte.
func HL7Digest(raw []byte) string {
	h := sha256.New()
	fieldSep := byte('|')
	if len(raw) > 3 && bytes.HasPrefix(raw, []byte("MSH")) {
		fieldSep = raw[3]
	}
	first := true
	for len(raw) > 0 {
		i := bytes.IndexAny(raw, "\r\n")
		seg := raw
		if i >= 0 {
			seg, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		seg = bytes.TrimRight(seg, string(fieldSep))
		if len(seg) == 0 {
			continue
		}
		if bytes.HasPrefix(seg, []byte("MSH")) && len(seg) > 3 {
			seg = withoutField(seg, fieldSep, 6) // MSH-7: MSH-1 is the separator itself
		}
		if !first {
			h.Write([]byte{'\r'})
		}
		first = false
		h.Write(seg)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// withoutField returns seg with the content of its n-th sep-separated part
// (0: the segment id) emptied.
func withoutField(seg []byte, sep byte, n int) []byte {
	start := 0
	for k := 0; k < n; k++ {
		i := bytes.IndexByte(seg[start:], sep)
		if i < 0 {
			return seg
		}
		start += i + 1
	}
	end := len(seg)
	if i := bytes.IndexByte(seg[start:], sep); i >= 0 {
		end = start + i
	}
	out := make([]byte, 0, len(seg)-(end-start))
	return append(append(out, seg[:start]...), seg[end:]...)
}

// NewInstance builds the observation of a received DICOM instance header.
func NewInstance(in *Instance) (Observation, error) {
	return newDICOM(KindDICOMInstance, instancePrefix+in.SOPInstanceUID, in.Peer, in.ReceivedAt, in, instanceKeyContent(in))
}

// NewIAN builds the observation of an Instance Availability Notification.
func NewIAN(n *IAN) (Observation, error) {
	return newDICOM(KindDICOMIAN, ianPrefix+n.SOPInstanceUID, n.Peer, n.ReceivedAt, n, ianKeyContent(n))
}

// MaxIANInstances bounds the instances one IAN record lists (about 2 MB of
// JSON), far below the ingest log's message limit.
const MaxIANInstances = 10000

// NewIANs builds the observations of an Instance Availability
// Notification: one, or for an IAN listing more than MaxIANInstances
// instances (a 100,000-instance study), one per part of at most that many,
// numbered Part 1..Parts in order, so that no IAN is refused forever for
// its size. The mapper treats the study as complete once every part is in.
func NewIANs(n *IAN) ([]Observation, error) {
	total := 0
	for _, s := range n.Series {
		total += len(s.Instances)
	}
	if total <= MaxIANInstances {
		o, err := NewIAN(n)
		return []Observation{o}, err
	}
	var parts []*IAN
	cur := &IAN{}
	size := 0
	for _, s := range n.Series {
		insts := s.Instances
		for len(insts) > 0 {
			if size == MaxIANInstances {
				parts, cur, size = append(parts, cur), &IAN{}, 0
			}
			k := min(len(insts), MaxIANInstances-size)
			cur.Series = append(cur.Series, IANSeries{SeriesInstanceUID: s.SeriesInstanceUID, Instances: insts[:k]})
			insts, size = insts[k:], size+k
		}
	}
	parts = append(parts, cur)
	out := make([]Observation, len(parts))
	for i, p := range parts {
		p.Peer, p.SOPInstanceUID, p.StudyInstanceUID, p.ReceivedAt = n.Peer, n.SOPInstanceUID, n.StudyInstanceUID, n.ReceivedAt
		p.PerformedProcedureSteps = n.PerformedProcedureSteps
		p.Part, p.Parts = i+1, len(parts)
		o, err := NewIAN(p)
		if err != nil {
			return nil, err
		}
		o.Key += "/" + strconv.Itoa(p.Part) // parts may list the same series
		out[i] = o
	}
	return out, nil
}

// NewMPPS builds the observation of an MPPS N-CREATE or N-SET.
func NewMPPS(u *MPPSUpdate) (Observation, error) {
	return newDICOM(KindDICOMMPPS, mppsPrefix+u.SOPInstanceUID, u.Peer, u.ReceivedAt, u, mppsKeyContent(u))
}

// MPPSKey is the key of u's observation (NewMPPS): the step's SOP Instance
// UID and the digest of what the message says, not of its peer nor its
// receive time. Equal keys mean the same message resent.
func MPPSKey(u *MPPSUpdate) string {
	return mppsPrefix + u.SOPInstanceUID + ":" + digest(mppsKeyContent(u), 8)
}

func newDICOM(kind, id string, p Peer, at time.Time, body, content any) (Observation, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return Observation{}, fmt.Errorf("encode %s: %w", kind, err)
	}
	if at.IsZero() {
		at = time.Now()
	}
	return Observation{
		Kind:   kind,
		Key:    id + ":" + digest(content, 8),
		Time:   at.UTC(),
		Source: Source{Protocol: "dicom", Remote: p.RemoteAddr, CallingAETitle: p.CallingAE, CalledAETitle: p.CalledAE},
		Body:   b,
	}, nil
}

// ScopedClientEventID is the idempotency key of a viewed event published by
// subject for patient with the client's clientEventID: a client's ids are
// its own, so a client reusing another's id (by mistake or on purpose)
// neither gets the other's event back nor goes unrecorded. Each part is
// path-escaped, so the parts cannot run into each other. Records written
// before were keyed by the client's id alone and keep that identity.
func ScopedClientEventID(subject, patient, clientEventID string) string {
	return "s/" + url.PathEscape(subject) + "/" + url.PathEscape(patient) + "/" + url.PathEscape(clientEventID)
}

// NewViewed builds the observation of an IMAGING_STUDY_VIEWED published
// through the API; clientEventID is the client's idempotency key.
func NewViewed(v Viewed, clientEventID, client string, at time.Time) (Observation, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Observation{}, fmt.Errorf("encode viewed: %w", err)
	}
	return Observation{
		Kind: KindViewed, Key: viewedPrefix + clientEventID + contentSep + digestBytes(b, 8), Time: at.UTC(),
		Source: Source{Protocol: "api", Client: client}, Body: b,
	}, nil
}

// The mapper tells a resend from new data by two keys. Records of every
// release get the same keys: HL7 and API records written before content
// digests (keyed by the identifier alone) too.

// SeenKey is the sender's identifier of o: HL7 sender and control id, the
// API's client_event_id, a DICOM SOP Instance UID with its content digest.
// An observation whose SeenKey was not mapped before (within the dedup
// horizon) is new. Cheap: it is computed for every record.
func SeenKey(o Observation) string {
	switch o.Kind {
	case KindHL7:
		return HL7ControlKey(o.Source.SendingApplication, o.Source.SendingFacility, o.Source.MessageControlID)
	case KindViewed:
		return strings.TrimSuffix(o.Key, contentSep+digestBytes(o.Body, 8))
	}
	return o.Key
}

// ContentKey is SeenKey with what o says. When SeenKey was mapped before,
// the earlier observation is a resend's original only if its ContentKey is
// the same; otherwise the identifier was reused for new data. Equal to
// SeenKey when that already covers the content (DICOM keys).
func ContentKey(o Observation) string {
	switch o.Kind {
	case KindHL7:
		var b HL7Body
		_ = json.Unmarshal(o.Body, &b) // a body that does not decode fails in the mapping rule
		return SeenKey(o) + contentSep + HL7Digest(b.Raw)
	case KindViewed:
		return SeenKey(o) + contentSep + digestBytes(o.Body, 8)
	}
	return o.Key
}

func digest(v any, n int) string {
	b, _ := json.Marshal(v) // the *V1 types hold strings, numbers and slices of them
	return digestBytes(b, n)
}

func digestBytes(b []byte, n int) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:n])
}

// AttributeDigest identifies the attributes the mapper keeps of an
// instance: not the peer, the receive time, nor the encoding (transfer
// syntax, size, file), so a re-encoded resend is not a correction. It is
// stored in the mapper's state, so it must never change for the same
// attributes.
func (in *Instance) AttributeDigest() string {
	c := instanceKeyContent(in)
	c.TransferSyntaxUID, c.Size, c.Path = "", 0, ""
	return digest(c, 12)
}

// instanceV1 is the field list of an instance's content digest, in the
// JSON form the first release hashed (the whole Instance with the peer and
// receive time zeroed). Fields added to Instance later are not part of it.
type instanceV1 struct {
	CallingAE, CalledAE, RemoteAddr string // always empty
	SOPClassUID                     string
	SOPInstanceUID                  string
	StudyInstanceUID                string
	SeriesInstanceUID               string
	TransferSyntaxUID               string
	PatientID                       string
	IssuerOfPatientID               string
	PatientName                     string
	PatientBirthDate                string
	PatientSex                      string
	AccessionNumber                 string
	Modality                        string
	BodyPartExamined                string
	StudyDescription                string
	SeriesDescription               string
	StudyDate                       string
	StudyTime                       string
	StudyID                         string
	ReferringPhysicianName          string
	SeriesNumber                    int
	InstanceNumber                  int
	NumberOfFrames                  int
	SpecificCharacterSet            string
	Size                            int64
	Path                            string
	ReceivedAt                      time.Time // always zero
}

func instanceKeyContent(in *Instance) instanceV1 {
	return instanceV1{
		SOPClassUID: in.SOPClassUID, SOPInstanceUID: in.SOPInstanceUID, StudyInstanceUID: in.StudyInstanceUID,
		SeriesInstanceUID: in.SeriesInstanceUID, TransferSyntaxUID: in.TransferSyntaxUID,
		PatientID: in.PatientID, IssuerOfPatientID: in.IssuerOfPatientID, PatientName: in.PatientName,
		PatientBirthDate: in.PatientBirthDate, PatientSex: in.PatientSex,
		AccessionNumber: in.AccessionNumber, Modality: in.Modality, BodyPartExamined: in.BodyPartExamined,
		StudyDescription: in.StudyDescription, SeriesDescription: in.SeriesDescription,
		StudyDate: in.StudyDate, StudyTime: in.StudyTime, StudyID: in.StudyID,
		ReferringPhysicianName: in.ReferringPhysicianName, SeriesNumber: in.SeriesNumber,
		InstanceNumber: in.InstanceNumber, NumberOfFrames: in.NumberOfFrames,
		SpecificCharacterSet: in.SpecificCharacterSet, Size: in.Size, Path: in.Path,
	}
}

// ianV1 is the field list of an IAN's content digest (see instanceV1).
type ianV1 struct {
	CallingAE, CalledAE, RemoteAddr string
	SOPInstanceUID                  string
	StudyInstanceUID                string
	PerformedProcedureSteps         []string
	Series                          []ianSeriesV1
	ReceivedAt                      time.Time
}

type ianSeriesV1 struct {
	SeriesInstanceUID string
	Instances         []ianInstanceV1
}

type ianInstanceV1 struct {
	SOPClassUID, SOPInstanceUID, InstanceAvailability, RetrieveAETitle string
}

func ianKeyContent(n *IAN) ianV1 {
	c := ianV1{SOPInstanceUID: n.SOPInstanceUID, StudyInstanceUID: n.StudyInstanceUID, PerformedProcedureSteps: n.PerformedProcedureSteps}
	if n.Series != nil {
		c.Series = make([]ianSeriesV1, len(n.Series))
	}
	for i, s := range n.Series {
		c.Series[i].SeriesInstanceUID = s.SeriesInstanceUID
		if s.Instances != nil {
			c.Series[i].Instances = make([]ianInstanceV1, len(s.Instances))
		}
		for j, in := range s.Instances {
			c.Series[i].Instances[j] = ianInstanceV1{in.SOPClassUID, in.SOPInstanceUID, in.InstanceAvailability, in.RetrieveAETitle}
		}
	}
	return c
}

// mppsV1 is the field list of an MPPS update's content digest (see
// instanceV1).
type mppsV1 struct {
	CallingAE, CalledAE, RemoteAddr string
	SOPInstanceUID                  string
	Create                          bool
	Status                          string
	StudyInstanceUIDs               []string
	AccessionNumbers                []string
	PatientID                       string
	PatientName                     string
	Modality                        string
	ProcedureStepID                 string
	StartDate                       string
	StartTime                       string
	EndDate                         string
	EndTime                         string
	Series                          []mppsSeriesV1
	ReceivedAt                      time.Time
}

type mppsSeriesV1 struct {
	SeriesInstanceUID string
	SOPInstanceUIDs   []string
}

func mppsKeyContent(u *MPPSUpdate) mppsV1 {
	c := mppsV1{
		SOPInstanceUID: u.SOPInstanceUID, Create: u.Create, Status: u.Status,
		StudyInstanceUIDs: u.StudyInstanceUIDs, AccessionNumbers: u.AccessionNumbers,
		PatientID: u.PatientID, PatientName: u.PatientName, Modality: u.Modality, ProcedureStepID: u.ProcedureStepID,
		StartDate: u.StartDate, StartTime: u.StartTime, EndDate: u.EndDate, EndTime: u.EndTime,
	}
	if u.Series != nil {
		c.Series = make([]mppsSeriesV1, len(u.Series))
	}
	for i, s := range u.Series {
		c.Series[i] = mppsSeriesV1{s.SeriesInstanceUID, s.SOPInstanceUIDs}
	}
	return c
}
