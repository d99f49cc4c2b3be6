package notify_test

import (
	"errors"
	"strings"
	"testing"

	"radbridge/dicomweb/notify"
)

const inst1 = `{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},
 "00080018":{"vr":"UI","Value":["1.2.3.4.1"]},
 "0020000D":{"vr":"UI","Value":["1.2.3"]},
 "0020000E":{"vr":"UI","Value":["1.2.3.4"]},
 "00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},
 "00100020":{"vr":"LO","Value":["MRN1"]},
 "00080060":{"vr":"CS","Value":["CT"]},
 "00200013":{"vr":"IS","Value":[7]},
 "00280008":{"vr":"IS","Value":["3"]}}`

const inst2 = `{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},
 "00080018":{"vr":"UI","Value":["1.2.3.5.1"]},
 "0020000e":{"vr":"UI","Value":["1.2.3.5"]}}`

func TestParse(t *testing.T) {
	huge := `[` + inst1 + strings.Repeat(" ", notify.MaxBody) + `]`
	tests := []struct {
		name      string
		body      string
		wantErr   string // substring; "" means valid
		instances int
		complete  bool
		studies   int
	}{
		{name: "instance list", body: `[` + inst1 + `]`, instances: 1, studies: 1},
		{name: "wrapper complete", body: `{"study":{"0020000D":{"vr":"UI","Value":["1.2.3"]},"00080050":{"vr":"SH","Value":["ACC1"]}},"instances":[` + inst1 + `,` + inst2 + `],"number_of_instances":2,"complete":true}`, instances: 2, complete: true, studies: 1},
		{name: "missing SOP instance UID", body: `[{"00080016":{"vr":"UI","Value":["1.2"]},"0020000D":{"vr":"UI","Value":["1.2.3"]},"0020000E":{"vr":"UI","Value":["1.2.3.4"]}}]`, wantErr: "instance 0: (0008,0018) SOPInstanceUID missing"},
		{name: "missing study UID", body: `[` + inst2 + `]`, wantErr: "(0020,000D) StudyInstanceUID missing"},
		{name: "wrong VR", body: `[{"00080018":{"vr":"LO","Value":["1.2"]}}]`, wantErr: `(0008,0018) SOPInstanceUID has VR "LO", want UI`},
		{name: "bad UID characters", body: strings.Replace(`[`+inst1+`]`, "1.2.3.4.1", "1.2.3.x.1", 1), wantErr: `character 'x' at 6`},
		{name: "UID too long", body: strings.Replace(`[`+inst1+`]`, "1.2.3.4.1", "1."+strings.Repeat("1", 70), 1), wantErr: "more than 64"},
		{name: "empty array", body: `[]`, wantErr: "no instances"},
		{name: "empty body", body: ``, wantErr: "empty body"},
		{name: "huge body", body: huge, wantErr: "larger than"},
		{name: "bad tag", body: `[{"0008001":{"vr":"UI","Value":["1"]}}]`, wantErr: "not a tag of 8 hex digits"},
		{name: "unknown wrapper field", body: `{"instances":[` + inst1 + `],"completed":true}`, wantErr: `unknown field "completed"`},
		{name: "count mismatch", body: `{"instances":[` + inst1 + `],"number_of_instances":3}`, wantErr: "number_of_instances is 3 but 1"},
		{name: "duplicate SOP", body: `[` + inst1 + `,` + inst1 + `]`, wantErr: "already given by instance 0"},
		{name: "not JSON", body: `[{`, wantErr: "JSON"},
		{name: "bad IS", body: strings.Replace(`[`+inst1+`]`, `[7]`, `["seven"]`, 1), wantErr: "InstanceNumber"},
		{name: "PN as string", body: strings.Replace(`[`+inst1+`]`, `{"Alphabetic":"Doe^Jane"}`, `"Doe^Jane"`, 1), wantErr: "Alphabetic"},
		{name: "complete across studies", body: `{"instances":[` + inst1 + `,` + strings.Replace(strings.Replace(inst1, `"1.2.3"`, `"1.2.9"`, 1), "1.2.3.4.1", "1.2.9.9", 1) + `],"complete":true}`, wantErr: "complete covers one study"},
		{name: "trailing data", body: `[` + inst1 + `] []`, wantErr: "trailing data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := notify.Parse([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, notify.ErrInvalid) {
					t.Fatalf("Parse error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(n.Instances); got != tc.instances {
				t.Errorf("instances %d, want %d", got, tc.instances)
			}
			if n.Complete != tc.complete {
				t.Errorf("complete %v, want %v", n.Complete, tc.complete)
			}
			if got := len(n.StudyUIDs()); got != tc.studies {
				t.Errorf("studies %d, want %d", got, tc.studies)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	n, err := notify.Parse([]byte(`{"study":{"0020000D":{"vr":"UI","Value":["1.2.3"]},"00080050":{"vr":"SH","Value":["ACC1"]}},"instances":[` + inst1 + `,` + inst2 + `],"complete":true}`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := n.Instances[0], n.Instances[1]
	if a.PatientName != "Doe^Jane" || a.PatientID != "MRN1" || a.Modality != "CT" || a.InstanceNumber != 7 || a.NumberOfFrames != 3 || a.AccessionNumber != "ACC1" {
		t.Errorf("instance 0 %+v", a)
	}
	if b.StudyInstanceUID != "1.2.3" || b.SeriesInstanceUID != "1.2.3.5" || b.AccessionNumber != "ACC1" {
		t.Errorf("instance 1 did not inherit the study: %+v", b)
	}
	ian := n.IAN()
	if ian == nil || ian.StudyInstanceUID != "1.2.3" || len(ian.Series) != 2 || !strings.HasPrefix(ian.SOPInstanceUID, "2.25.") || len(ian.SOPInstanceUID) > 64 {
		t.Fatalf("IAN %+v", ian)
	}
	again, err := notify.Parse([]byte(`{"instances":[` + strings.Replace(inst2, `"0020000e"`, `"0020000D":{"vr":"UI","Value":["1.2.3"]},"0020000e"`, 1) + `,` + inst1 + `],"complete":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := again.IAN().SOPInstanceUID; got != ian.SOPInstanceUID {
		t.Errorf("the same instances in another order gave IAN UID %s, want %s", got, ian.SOPInstanceUID)
	}
}

func FuzzNotification(f *testing.F) {
	f.Add([]byte(`[` + inst1 + `]`))
	f.Add([]byte(`{"study":{},"instances":[` + inst1 + `,` + inst2 + `],"complete":true}`))
	f.Add([]byte(`[{"00080018":{"vr":"UI","Value":[1]}}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := notify.Parse(b)
		if err != nil {
			if !errors.Is(err, notify.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		for _, i := range n.Instances {
			if i.SOPInstanceUID == "" || i.StudyInstanceUID == "" || i.SeriesInstanceUID == "" || i.SOPClassUID == "" {
				t.Fatalf("accepted an instance without UIDs: %+v", i)
			}
		}
		_ = n.IAN()
	})
}
