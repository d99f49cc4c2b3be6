package scp

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"radbridge/dicom/part10"
	"radbridge/internal/testkit"
)

// synthFiles writes the synthetic instances of scripts/dicom/synth.py into
// a temporary directory and returns it with the expected fields.
func synthFiles(t *testing.T) (string, map[string]expected) {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command(python(t), filepath.Join(repoRoot(t), "scripts", "dicom", "synth.py"), dir).Output()
	if err != nil {
		t.Fatalf("synth.py: %v", err)
	}
	want := map[string]expected{}
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	return dir, want
}

// checkStored compares what the handler saw with the expected fields.
func checkStored(t *testing.T, s *testSCP, want map[string]expected, ts string) {
	t.Helper()
	got := s.h.ByUID()
	if len(got) != len(want) {
		t.Errorf("handler saw %d instances, want %d", len(got), len(want))
	}
	for path, w := range want {
		inst := got[w.SOPInstanceUID]
		if inst == nil {
			t.Errorf("%s: not stored", filepath.Base(path))
			continue
		}
		for _, c := range []struct{ field, got, want string }{
			{"TransferSyntaxUID", inst.TransferSyntaxUID, ts},
			{"StudyInstanceUID", inst.StudyInstanceUID, w.StudyUID},
			{"SeriesInstanceUID", inst.SeriesInstanceUID, w.SeriesUID},
			{"PatientID", inst.PatientID, w.PatientID},
			{"PatientName", inst.PatientName, part10.PersonName(w.PatientName)},
			{"AccessionNumber", inst.AccessionNumber, w.Accession},
			{"Modality", inst.Modality, w.Modality},
			{"CallingAE", inst.CallingAE, "SYNTH"},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s = %q, want %q", filepath.Base(path), c.field, c.got, c.want)
			}
		}
		if inst.Path != "" {
			if d := diffDumps(t, path, inst.Path); d != "" {
				t.Errorf("%s: stored file differs:\n%s", filepath.Base(path), d)
			}
		}
	}
}

// TestStoreSCUSyntheticRecursive sends a directory of synthetic files with
// storescu +sd +r, once proposing implicit VR only (-xi), once explicit VR
// little endian (-xe): storescu converts, we accept what it proposes.
func TestStoreSCUSyntheticRecursive(t *testing.T) {
	testkit.Peer(t, "storescu")
	dir, want := synthFiles(t)
	for _, tc := range []struct{ flag, ts string }{
		{"-xi", "1.2.840.10008.1.2"},
		{"-xe", "1.2.840.10008.1.2.1"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			s := startSCP(t, Config{})
			out, err := run(t, "storescu", tc.flag, "+sd", "+r", "-aet", "SYNTH", "-aec", "RADBRIDGE", s.host, s.port, dir)
			if err != nil {
				t.Fatalf("storescu: %v\n%s", err, out)
			}
			checkStored(t, s, want, tc.ts)
		})
	}
}

// TestStoreSCUCompressed makes compressed copies with dcmcjpeg and dcmcrle
// and sends each in its own transfer syntax: we never ask for transcoding,
// and the stored file holds the compressed data set as sent.
func TestStoreSCUCompressed(t *testing.T) {
	testkit.Peer(t, "storescu")
	dir, src := synthFiles(t)
	out := t.TempDir()
	for _, tc := range []struct {
		name, tool, opt, in, flag, ts string
	}{
		{"JPEG lossless", "dcmcjpeg", "", "synth1.dcm", "-xs", "1.2.840.10008.1.2.4.70"},
		{"JPEG baseline", "dcmcjpeg", "+eb", "synth3.dcm", "-xy", "1.2.840.10008.1.2.4.50"},
		{"RLE", "dcmcrle", "", "synth2.dcm", "-xr", "1.2.840.10008.1.2.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(out, tc.name+".dcm")
			args := []string{filepath.Join(dir, tc.in), dst}
			if tc.opt != "" {
				args = append([]string{tc.opt}, args...)
			}
			if o, err := run(t, tc.tool, args...); err != nil {
				t.Fatalf("%s: %v\n%s", tc.tool, err, o)
			}
			want := expectedFields(t, []string{dst})
			if want[dst].TransferSyntax != tc.ts {
				t.Fatalf("%s wrote %s, want %s", tc.tool, want[dst].TransferSyntax, tc.ts)
			}
			_ = src
			s := startSCP(t, Config{StoreDir: t.TempDir()})
			o, err := run(t, "storescu", "-R", tc.flag, "-aet", "SYNTH", "-aec", "RADBRIDGE", s.host, s.port, dst)
			if err != nil {
				t.Fatalf("storescu: %v\n%s", err, o)
			}
			checkStored(t, s, want, tc.ts)
		})
	}
}
