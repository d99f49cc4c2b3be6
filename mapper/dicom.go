package mapper

// dicomRules maps DICOM observations (placeholder until the DICOM mapping
// lands).
func dicomRules(o Options) map[string]Rule { return nil }

// StudyState is what the mapper knows of one study.
type StudyState struct{}
