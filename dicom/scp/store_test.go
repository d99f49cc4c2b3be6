package scp

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"radbridge/dicom/dataset"
	"radbridge/dicom/part10"
	"radbridge/internal/testkit"
)

// charsets whose decoding we assert exactly (the issue asks for at least
// ISO_IR 100 and ISO_IR 192); for the others (half-width katakana in ISO
// 2022 IR 13) we assert only that the instance is stored.
var exactCharsets = map[string]bool{
	"": true, "ISO_IR 100": true, "ISO_IR 192": true, "ISO_IR 144": true,
	"ISO_IR 126": true, "ISO_IR 127": true, "ISO_IR 138": true, "GB18030": true,
	`\ISO 2022 IR 87`: true, `ISO 2022 IR 6\ISO 2022 IR 87`: true, `\ISO 2022 IR 149`: true,
}

// notSendable are pydicom files storescu itself cannot read (truncated on
// purpose, or a header DCMTK refuses): they never reach us.
var notSendable = map[string]bool{
	"MR_truncated.dcm":      true,
	"rtplan_truncated.dcm":  true,
	"SC_rgb_jpeg.dcm":       true,
	"rtdose_rle.dcm":        true,
	"rtdose_rle_1frame.dcm": true,
}

func pydicomFiles(t *testing.T) []string {
	data := pydicomData(t)
	var files []string
	for _, dir := range []string{"test_files", "charset_files"} {
		m, _ := filepath.Glob(filepath.Join(data, dir, "*.dcm"))
		for _, f := range m {
			if !notSendable[filepath.Base(f)] {
				files = append(files, f)
			}
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no pydicom files found")
	}
	return files
}

// TestStoreSCUFiles sends every readable pydicom test and charset file
// with storescu, one association per file, and checks what a user checks:
// storescu exits 0, the handler saw the right UIDs and patient/accession/
// modality values, and the Part-10 file in StoreDir is readable by dcmdump
// and carries the very data set bytes that were sent.
func TestStoreSCUFiles(t *testing.T) {
	testkit.Peer(t, "storescu")
	files := pydicomFiles(t)
	want := expectedFields(t, files)
	dir := t.TempDir()
	s := startSCP(t, Config{StoreDir: dir})

	var sent []string
	for _, f := range files {
		if _, ok := want[f]; !ok {
			continue // pydicom cannot read it or it has no SOP UIDs
		}
		// -R proposes the file's own SOP class; the -x option its own
		// transfer syntax, so storescu sends the file without converting.
		out, err := run(t, "storescu", "-R", proposeFlag(want[f].TransferSyntax), "-aet", "MODALITY", "-aec", "RADBRIDGE", s.host, s.port, f)
		if err != nil {
			t.Errorf("storescu %s: %v\n%s", filepath.Base(f), err, out)
			continue
		}
		if strings.Contains(out, "E:") {
			t.Errorf("storescu %s reported an error:\n%s", filepath.Base(f), out)
		}
		sent = append(sent, f)
	}
	got := s.h.ByUID()
	identical := 0
	// Some pydicom files share a SOP Instance UID; the last one sent wins
	// (file and handler), so only unique ones are compared.
	count := map[string]int{}
	for _, f := range sent {
		count[want[f].SOPInstanceUID]++
	}
	unique := 0
	for _, f := range sent {
		w := want[f]
		name := filepath.Base(f)
		if count[w.SOPInstanceUID] > 1 {
			continue
		}
		unique++
		inst, ok := got[w.SOPInstanceUID]
		if !ok {
			t.Errorf("%s: handler never saw SOP instance %s", name, w.SOPInstanceUID)
			continue
		}
		checks := []struct{ field, got, want string }{
			{"SOPClassUID", inst.SOPClassUID, w.SOPClassUID},
			{"StudyInstanceUID", inst.StudyInstanceUID, w.StudyUID},
			{"SeriesInstanceUID", inst.SeriesInstanceUID, w.SeriesUID},
			{"PatientID", inst.PatientID, w.PatientID},
			{"AccessionNumber", inst.AccessionNumber, w.Accession},
			{"Modality", inst.Modality, w.Modality},
			{"CallingAE", inst.CallingAE, "MODALITY"},
			{"CalledAE", inst.CalledAE, "RADBRIDGE"},
		}
		if exactCharsets[w.Charset] {
			checks = append(checks, struct{ field, got, want string }{"PatientName", inst.PatientName, part10.PersonName(w.PatientName)})
		} else if inst.PatientName != w.PatientName {
			t.Logf("%s (%s): PatientName %q, pydicom %q (not asserted)", name, w.Charset, inst.PatientName, w.PatientName)
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: %s = %q, want %q", name, c.field, c.got, c.want)
			}
		}
		if inst.Size <= 0 {
			t.Errorf("%s: Size = %d", name, inst.Size)
		}
		wantPath := filepath.Join(dir, w.StudyUID, w.SeriesUID, w.SOPInstanceUID+".dcm")
		if inst.Path != wantPath {
			t.Errorf("%s: Path = %q, want %q", name, inst.Path, wantPath)
			continue
		}
		if out, err := run(t, "dcmdump", "-q", inst.Path); err != nil {
			t.Errorf("%s: dcmdump of the stored file: %v\n%s", name, err, out)
		}
		stored, err := os.ReadFile(inst.Path)
		if err != nil {
			t.Fatal(err)
		}
		ts, body, err := dataset.SplitPart10(stored)
		if err != nil {
			t.Errorf("%s: stored file: %v", name, err)
			continue
		}
		if ts != inst.TransferSyntaxUID {
			t.Errorf("%s: stored transfer syntax %s, negotiated %s", name, ts, inst.TransferSyntaxUID)
		}
		if inst.TransferSyntaxUID == w.TransferSyntax {
			// storescu re-encodes (drops group lengths and trailing padding),
			// so compare element by element with dcmdump.
			if d := diffDumps(t, f, inst.Path); d != "" {
				t.Errorf("%s: stored data set differs from the source:\n%s", name, d)
			} else {
				identical++
			}
		}
		if int64(len(body)) != inst.Size {
			t.Errorf("%s: stored data set %d bytes, received %d", name, len(body), inst.Size)
		}
	}
	t.Logf("%d files sent, %d with a unique SOP Instance UID, %d stored with the same elements and values as the source", len(sent), unique, identical)
	if identical < unique*3/4 {
		t.Errorf("only %d of %d stored data sets have the source's elements", identical, unique)
	}
	if st := s.srv.Stats(); st.InstancesStored != uint64(len(sent)) || st.StoreFailures != 0 {
		t.Errorf("stats = %+v, want %d stored and no failure", st, len(sent))
	}
	// No temporary file is left behind.
	left, _ := filepath.Glob(filepath.Join(dir, ".incoming-*"))
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// proposeFlag is the storescu option proposing transfer syntax ts.
func proposeFlag(ts string) string {
	switch ts {
	case "1.2.840.10008.1.2":
		return "-xi"
	case "1.2.840.10008.1.2.2":
		return "-xb"
	case "1.2.840.10008.1.2.1.99":
		return "-xd"
	case "1.2.840.10008.1.2.5":
		return "-xr"
	case "1.2.840.10008.1.2.4.50":
		return "-xy"
	case "1.2.840.10008.1.2.4.51":
		return "-xx"
	case "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70":
		return "-xs"
	case "1.2.840.10008.1.2.4.80":
		return "-xt"
	case "1.2.840.10008.1.2.4.81":
		return "-xu"
	case "1.2.840.10008.1.2.4.90":
		return "-xv"
	case "1.2.840.10008.1.2.4.91":
		return "-xw"
	}
	return "-xe"
}

// dump is dcmdump's listing of a file's data set without the File Meta
// group, group lengths and trailing padding, which storescu does not keep.
func dump(t testing.TB, path string) []string {
	t.Helper()
	out, err := run(t, "dcmdump", "-q", "+L", path)
	if err != nil {
		t.Fatalf("dcmdump %s: %v\n%s", path, err, out)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimLeft(l, " ")
		if i := strings.Index(l, "#"); i >= 0 {
			l = strings.TrimRight(l[:i], " ") // the comment holds the encoded length
		}
		l = strings.NewReplacer(" with undefined length", "", " with explicit length", "").Replace(l)
		if l == "" || strings.HasPrefix(l, "(0002,") || strings.HasPrefix(l, "(fffe,e00d)") || strings.HasPrefix(l, "(fffe,e0dd)") ||
			strings.HasPrefix(l, "(fffc,fffc)") || (len(l) > 11 && strings.HasPrefix(l[6:], "0000)")) {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

func diffDumps(t testing.TB, a, b string) string {
	da, db := dump(t, a), dump(t, b)
	for i := 0; i < len(da) || i < len(db); i++ {
		var la, lb string
		if i < len(da) {
			la = da[i]
		}
		if i < len(db) {
			lb = db[i]
		}
		if la != lb {
			return fmt.Sprintf("line %d:\n source: %s\n stored: %s", i, la, lb)
		}
	}
	return ""
}
