package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// StudyPatient and StudyAccession are the patient and accession of the
// studies MakeStudy writes.
const (
	StudyPatient   = "MRN4711"
	StudyAccession = "ACC1001"
)

// MakeStudy writes synthetic instances of patient StudyPatient, accession
// StudyAccession, into dir with scripts/dicom/study.py: series series of
// instances instances each; first numbers the first instance.
func MakeStudy(tb testing.TB, dir, study string, series, instances, first int) {
	tb.Helper()
	StudyScript(tb, dir, study, StudyPatient, StudyAccession, fmt.Sprint(series), fmt.Sprint(instances), fmt.Sprint(first))
}

// StudyScript runs scripts/dicom/study.py (with pydicom, see Python) with
// args (dir, study, patient, accession, series, instances[, first]).
func StudyScript(tb testing.TB, args ...string) {
	tb.Helper()
	py := Python(tb, "pydicom")
	script := filepath.Join(root(tb), "scripts", "dicom", "study.py")
	if out, err := exec.Command(py, append([]string{script}, args...)...).CombinedOutput(); err != nil {
		tb.Fatalf("study.py: %v\n%s", err, out)
	}
}

// LoopbackShim compiles scripts/orthanc/loopback_bind.c with gcc (a peer)
// and returns the path of the LD_PRELOAD shim that turns a peer's wildcard
// listens (Orthanc's, storescp's) into loopback ones. It is Linux-only.
func LoopbackShim(tb testing.TB) string {
	tb.Helper()
	gcc := Peer(tb, "gcc")
	so := filepath.Join(tb.TempDir(), "libloopback.so")
	src := filepath.Join(root(tb), "scripts", "orthanc", "loopback_bind.c")
	if out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", so, src, "-ldl").CombinedOutput(); err != nil {
		tb.Fatalf("building the loopback shim: %v\n%s", err, out)
	}
	return so
}

// root returns the module's root directory: the nearest one above the
// test's working directory (its package) that holds go.mod.
func root(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
