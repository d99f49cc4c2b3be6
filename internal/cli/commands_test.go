package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
	"radbridge/internal/testkit/inproc"
	rbv1 "radbridge/proto/radbridge/v1"
)

func TestEchoCommand(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	code, out, errOut := runApp(t, "echo", "--addr", d.DICOMAddr())
	if code != 0 || !strings.Contains(out, "C-ECHO to RADBRIDGE at "+d.DICOMAddr()+" succeeded in ") {
		t.Errorf("echo: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	code, out, errOut = runApp(t, "echo", "--addr", d.DICOMAddr(), "--aet", "MODALITY", "--aec", "SOMEONE")
	if code != 1 || !strings.Contains(errOut, "rejected: result 1 (permanent), source 1 (service user), reason 7 (called AE title not recognized)") {
		t.Errorf("echo to a wrong AE: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if code, _, _ := runApp(t, "echo", "--bogus"); code != 2 {
		t.Errorf("echo --bogus: exit %d, want 2", code)
	}
}

func TestStoreCommand(t *testing.T) {
	storeDir := t.TempDir()
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s", "--store-dir", storeDir)
	src := t.TempDir()
	testkit.MakeStudy(t, filepath.Join(src, "nested"), studyUID, 2, 3, 1)
	if err := os.WriteFile(filepath.Join(src, "README.txt"), []byte("not DICOM"), 0o644); err != nil {
		t.Fatal(err)
	}
	client, _ := inproc.EventClient(t, d.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{ResourceType: []string{"ImagingStudy"}})
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runApp(t, "store", "--addr", d.DICOMAddr(), "--aet", "MODALITY", src)
	if code != 0 || !strings.Contains(out, "stored 6, failed 0, skipped 1 not DICOM") {
		t.Fatalf("store: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if n := strings.Count(errOut, "stored "); n != 6 {
		t.Errorf("stderr has %d per-file lines, want 6 (not a terminal):\n%s", n, errOut)
	}
	for {
		ev, err := sub.Recv()
		if err != nil {
			t.Fatalf("waiting for IMAGING_STUDY_AVAILABLE: %v", err)
		}
		if ev.Type == rbv1.EventType_IMAGING_STUDY_AVAILABLE {
			r := ev.Resource.AsMap()
			if ev.StudyInstanceUid != studyUID || r["numberOfInstances"] != 6.0 || r["numberOfSeries"] != 2.0 {
				t.Errorf("AVAILABLE: study %s resource %v", ev.StudyInstanceUid, r)
			}
			break
		}
	}
	var files int
	_ = filepath.Walk(storeDir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && strings.HasSuffix(fi.Name(), ".dcm") {
			files++
		}
		return nil
	})
	if files != 6 {
		t.Errorf("%d files in the store dir, want 6", files)
	}

	// Nothing listening: every file fails, exit 1.
	code, out, _ = runApp(t, "store", "--addr", freeAddr(t), "--timeout", "2s", src)
	if code != 1 || !strings.Contains(out, "stored 0, failed 6") {
		t.Errorf("store to nobody: exit %d, %s", code, out)
	}
	if code, _, _ := runApp(t, "store", "--addr", d.DICOMAddr()); code != 2 {
		t.Errorf("store without files: exit %d, want 2", code)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
}

// TestStoreToDCMTK sends a study to DCMTK's storescp, kept on loopback by
// the LD_PRELOAD shim.
func TestStoreToDCMTK(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the loopback shim is Linux-only")
	}
	bin := testkit.Peer(t, "storescp")
	shim := testkit.LoopbackShim(t)
	src, outDir := t.TempDir(), t.TempDir()
	testkit.MakeStudy(t, src, studyUID, 1, 4, 1)
	port := testkit.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "+B", "+xa", "-aet", "STORESCP", "--output-directory", outDir, fmt.Sprint(port))
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+shim)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var errOut string
	if !testkit.Poll(20*time.Second, func() bool {
		var code int
		code, _, errOut = runApp(t, "echo", "--addr", addr, "--aec", "STORESCP", "--timeout", "2s")
		return code == 0
	}) {
		t.Fatalf("storescp not answering C-ECHO: %s\nstorescp: %s", errOut, log.String())
	}
	code, out, errOut := runApp(t, "store", "--addr", addr, "--aec", "STORESCP", src)
	if code != 0 || !strings.Contains(out, "stored 4, failed 0") {
		t.Fatalf("store to storescp: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	entries, err := os.ReadDir(outDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		t.Errorf("storescp wrote %d files, want 4", len(entries))
	}
}

func TestSendHL7ToDaemon(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	good := testkit.WriteHL7(t, "order", strings.ReplaceAll(testkit.RISOrder, "{{ctl}}", "CLI-1"))
	code, out, errOut := runApp(t, "send-hl7", "--addr", d.MLLPAddr(), good)
	if code != 0 || !strings.Contains(out, "MSA|AA|CLI-1") {
		t.Errorf("send-hl7: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	// \n-separated segments, missing PID-3: AE with an ERR segment.
	bad := filepath.Join(t.TempDir(), "bad.hl7")
	if err := os.WriteFile(bad, []byte("MSH|^~\\&|RADRIS|NW|RADBRIDGE|IMG|20260310||ORM^O01|CLI-2|P|2.3\nPID|1||||X^Y\nORC|NW|P1|F1\nOBR|1|P1|F1|71250^CT CHEST\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runApp(t, "send-hl7", "--addr", d.MLLPAddr(), bad)
	if code != 1 || !strings.Contains(out, "MSA|AE|CLI-2") || !strings.Contains(out, "ERR|") {
		t.Errorf("send-hl7 bad: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}
