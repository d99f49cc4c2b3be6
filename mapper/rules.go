package mapper

import (
	"strings"
	"time"
)

// Options configure the mapping rules.
type Options struct {
	// HL7PatientAuthority is the PID-3 assigning authority (CX-4, first
	// component) whose identifier is the patient id; empty takes the first
	// repetition.
	HL7PatientAuthority string
	// HL7Accession lists where the accession number is found, in order:
	// "OBR-18", "IPC-1", "ORC-3", "OBR-3".
	HL7Accession []string
	// HL7ImagingSections are the OBR-24 values that are imaging; empty
	// treats every order and result as imaging.
	HL7ImagingSections []string
	// DICOMPatientIssuer is the Issuer of Patient ID whose PatientID is the
	// hospital MRN; empty takes PatientID whatever its issuer.
	DICOMPatientIssuer string
	// QuietPeriod: a study with no new instance for this long is complete.
	QuietPeriod time.Duration
	// ProgressInterval: at most one IMAGING_STUDY_PROGRESS per study per
	// interval.
	ProgressInterval time.Duration
	// ViewerURL is a template of a study's link in an image viewer; its
	// placeholders {{study}}, {{accession}} and {{patient}} are replaced by
	// the URL-escaped Study Instance UID, accession number and Patient ID.
	// Empty: no viewer link.
	ViewerURL string
	// WADORSBase is the DICOMweb (WADO-RS) base URL the studies can be
	// retrieved from, e.g. https://pacs.example/dicom-web. Empty: no
	// endpoint.
	WADORSBase string
	// Zone is the zone (--timezone) of times without an offset in records
	// that carry no zone of their own (ingest.Observation.Zone; records
	// written before zones were recorded). nil: the machine's, as then.
	// Not part of the options' fingerprint: it changes only how such old
	// records map.
	Zone *time.Location `json:"-"`
}

// Rules returns the mapping rules of every ingest kind.
func Rules(o Options) map[string]Rule {
	if o.QuietPeriod <= 0 {
		o.QuietPeriod = 10 * time.Second
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = time.Second
	}
	rules := map[string]Rule{}
	for k, r := range hl7Rules(o) {
		rules[k] = r
	}
	for k, r := range dicomRules(o) {
		rules[k] = r
	}
	return rules
}

// PatientKey is the patient id events and read models use for an
// identifier id issued by issuer, when mrnIssuer names the hospital's MRN
// (DICOM Issuer of Patient ID, HL7 PID-3 assigning authority): the MRN is
// the bare id, so a patient's DICOM studies and HL7 orders meet; an id of
// another issuer is qualified as id^issuer so it never merges with an MRN
// that happens to have the same digits. Without a configured MRN issuer the
// bare id is the key.
func PatientKey(id, issuer, mrnIssuer string) string {
	if id == "" || mrnIssuer == "" || issuer == "" || strings.EqualFold(issuer, mrnIssuer) {
		return id
	}
	return id + "^" + issuer
}
