package testkit

// STOWInstance is one instance of a STOW-RS response (DICOM PS3.18 Store
// Instances Response): its SOP Instance UID ("?" when the response does
// not name it), its Failure Reason (0 when it was stored) and its
// Retrieve URL.
type STOWInstance struct {
	SOPInstanceUID string
	FailureReason  int
	RetrieveURL    string
}

// STOWInstances lists the instances of a STOW-RS response decoded from
// DICOM JSON: the Referenced SOP Sequence (stored), then the Failed SOP
// Sequence.
func STOWInstances(resp map[string]any) []STOWInstance {
	var out []STOWInstance
	for _, key := range []string{"00081199", "00081198"} {
		seq, _ := resp[key].(map[string]any)
		items, _ := seq["Value"].([]any)
		for _, it := range items {
			m, _ := it.(map[string]any)
			in := STOWInstance{SOPInstanceUID: "?"}
			if s, ok := first(m["00081155"]).(string); ok {
				in.SOPInstanceUID = s
			}
			if r, ok := first(m["00081197"]).(float64); ok {
				in.FailureReason = int(r)
			}
			in.RetrieveURL, _ = first(m["00081190"]).(string)
			out = append(out, in)
		}
	}
	return out
}

// first returns the first value of a DICOM JSON attribute, or nil.
func first(attr any) any {
	a, _ := attr.(map[string]any)
	v, _ := a["Value"].([]any)
	if len(v) == 0 {
		return nil
	}
	return v[0]
}
