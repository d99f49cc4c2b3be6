package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

const orthancStudyUID = "1.2.826.0.1.3680043.10.1447.88"

// orthancPeer is a real Orthanc started by the test on loopback ports.
type orthancPeer struct {
	base      string // REST root, http://127.0.0.1:<port>
	dicomPort int
	httpPort  int
	log       *testkit.Buffer
	exited    chan struct{}
}

// buildLoopbackShim builds the LD_PRELOAD shim that turns Orthanc's
// wildcard listens into loopback ones (see testkit.LoopbackShim).
func buildLoopbackShim(t *testing.T) string {
	t.Helper()
	return testkit.LoopbackShim(t)
}

// startOrthanc runs Orthanc with its own configuration, storage and ports in
// a temp dir (never the system service's 4242/8042), with one modality
// "radbridge" pointing at radbridgeDICOM, and waits until REST answers.
// extra adds or overrides configuration options.
func startOrthanc(t *testing.T, radbridgeDICOM string, extra ...map[string]any) *orthancPeer {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the loopback shim is Linux-only")
	}
	bin := testkit.Peer(t, "Orthanc")
	shim := buildLoopbackShim(t)
	rhost, rport := hostPort(radbridgeDICOM)
	rp, err := strconv.Atoi(rport)
	if err != nil {
		t.Fatalf("radbridge DICOM address %q", radbridgeDICOM)
	}
	dir := t.TempDir()
	o := &orthancPeer{dicomPort: testkit.FreePort(t), httpPort: testkit.FreePort(t), log: &testkit.Buffer{}, exited: make(chan struct{})}
	o.base = fmt.Sprintf("http://127.0.0.1:%d", o.httpPort)
	cfg := map[string]any{
		"Name":                       "radbridge-test",
		"StorageDirectory":           filepath.Join(dir, "storage"),
		"IndexDirectory":             filepath.Join(dir, "index"),
		"DicomAet":                   "ORTHANC",
		"DicomPort":                  o.dicomPort,
		"HttpPort":                   o.httpPort,
		"RemoteAccessAllowed":        false,
		"AuthenticationEnabled":      false,
		"RegisteredUsers":            map[string]any{},
		"Plugins":                    []string{}, // no distro plugins
		"DicomCheckCalledAet":        false,
		"DicomModalities":            map[string]any{"radbridge": []any{"RADBRIDGE", rhost, rp}},
		"StableAge":                  1,     // 60 s as shipped
		"SyncStorageArea":            false, // fsyncs every file as shipped
		"SaveJobs":                   false,
		"StorageCompression":         false,
		"DicomAssociationCloseDelay": 0, // release Orthanc's SCU association right after a store
		"DicomScuTimeout":            30,
		"HttpTimeout":                60,
		"ConcurrentJobs":             1,
		"HttpThreadsCount":           4,
		"DicomThreadsCount":          2,
	}
	for _, e := range extra {
		for k, v := range e {
			cfg[k] = v
		}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "orthanc.json")
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1", "LD_PRELOAD="+shim)
	cmd.Stdout, cmd.Stderr = o.log, o.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting Orthanc: %v", err)
	}
	go func() { cmd.Wait(); close(o.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-o.exited
		if t.Failed() {
			t.Logf("Orthanc log:\n%s", o.log)
		}
	})

	if !testkit.Poll(60*time.Second, func() bool {
		select {
		case <-o.exited:
			t.Fatalf("Orthanc exited before answering REST:\n%s", o.log)
		default:
		}
		resp, err := http.Get(o.base + "/system")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}) {
		t.Fatalf("Orthanc REST %s/system not answering within 60s:\n%s", o.base, o.log)
	}
	o.checkLoopbackOnly(t)
	return o
}

// checkLoopbackOnly fails the test if Orthanc's ports listen anywhere but
// loopback (the shim did not take effect).
func (o *orthancPeer) checkLoopbackOnly(t *testing.T) {
	t.Helper()
	found := map[int]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" { // LISTEN
				continue
			}
			addr, port, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			p, err := strconv.ParseInt(port, 16, 32)
			if err != nil || (int(p) != o.dicomPort && int(p) != o.httpPort) {
				continue
			}
			found[int(p)] = true
			if addr != "0100007F" && addr != "00000000000000000000000001000000" {
				t.Errorf("Orthanc listens on %s port %d (%s), not loopback only", f, p, addr)
			}
		}
	}
	if !found[o.dicomPort] || !found[o.httpPort] {
		t.Errorf("Orthanc's DICOM port %d and HTTP port %d not both listening (%v)", o.dicomPort, o.httpPort, found)
	}
}

// rest calls Orthanc's REST API and decodes the JSON answer into out.
func (o *orthancPeer) rest(t *testing.T, method, path, body string, out any) {
	t.Helper()
	req, err := http.NewRequest(method, o.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("Orthanc %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("Orthanc %s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("Orthanc %s %s: %q is not the JSON expected: %v", method, path, b, err)
		}
	}
}

// orthancStoreResult is Orthanc's answer to POST /modalities/{id}/store
// (synchronous), and the Content of the job when asynchronous.
type orthancStoreResult struct {
	Description          string
	LocalAet             string
	RemoteAet            string
	InstancesCount       int
	FailedInstancesCount int
	ParentResources      []string
}

// forwardSync asks Orthanc to C-STORE one study to radbridge and waits.
func (o *orthancPeer) forwardSync(t *testing.T, studyID string) orthancStoreResult {
	t.Helper()
	var r orthancStoreResult
	body, _ := json.Marshal(map[string]any{"Resources": []string{studyID}, "Synchronous": true})
	o.rest(t, "POST", "/modalities/radbridge/store", string(body), &r)
	return r
}

// forwardJob asks for the same as an asynchronous job and polls the job
// until it ends, as an operator watching Orthanc's job list would.
func (o *orthancPeer) forwardJob(t *testing.T, studyID string) (state string, content orthancStoreResult) {
	t.Helper()
	var job struct{ ID string }
	body, _ := json.Marshal(map[string]any{"Resources": []string{studyID}, "Asynchronous": true})
	o.rest(t, "POST", "/modalities/radbridge/store", string(body), &job)
	if job.ID == "" {
		t.Fatal("Orthanc returned no job ID for an asynchronous store")
	}
	var j struct {
		State   string
		Content orthancStoreResult
	}
	if !testkit.Poll(60*time.Second, func() bool {
		o.rest(t, "GET", "/jobs/"+job.ID, "", &j)
		return j.State == "Success" || j.State == "Failure"
	}) {
		t.Fatalf("Orthanc job %s still %s after 60s", job.ID, j.State)
	}
	return j.State, j.Content
}

// TestOrthancForwardsAStudy: a real Orthanc acts as the PACS. A modality
// (storescu) stores a two-series study into Orthanc, Orthanc forwards it to
// radbridge (C-STORE from AE ORTHANC), and a subscriber sees exactly one
// IMAGING_STUDY_AVAILABLE with the right counts. Forwarding the same study
// again (Orthanc resends every instance) makes no second AVAILABLE and no
// UPDATED.
func TestOrthancForwardsAStudy(t *testing.T) {
	const quiet = 2 * time.Second
	const series, perSeries = 2, 3
	start := time.Now()
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", quiet.String())
	o := startOrthanc(t, d.DICOMAddr())
	t.Logf("daemon and Orthanc up in %v", time.Since(start).Round(time.Millisecond))

	// The modality stores the study into Orthanc.
	src := t.TempDir()
	makeStudy(t, src, orthancStudyUID, series, perSeries, 1)
	if out, err := dcmtk(t, "storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "+sd", "+r", "127.0.0.1", strconv.Itoa(o.dicomPort), src); err != nil {
		t.Fatalf("storescu into Orthanc: %v\n%s", err, out)
	}
	var found []struct{ ID, Type string }
	o.rest(t, "POST", "/tools/lookup", orthancStudyUID, &found)
	if len(found) != 1 || found[0].Type != "Study" {
		t.Fatalf("Orthanc lookup of %s: %v", orthancStudyUID, found)
	}
	studyID := found[0].ID
	var instances []any
	o.rest(t, "GET", "/studies/"+studyID+"/instances", "", &instances)
	if len(instances) != series*perSeries {
		t.Fatalf("Orthanc holds %d instances of the study, want %d", len(instances), series*perSeries)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sub := subscribeStudies(ctx, t, d)

	// Orthanc forwards the study to radbridge.
	fwd := time.Now()
	r := o.forwardSync(t, studyID)
	if r.InstancesCount != series*perSeries || r.FailedInstancesCount != 0 || r.RemoteAet != "RADBRIDGE" || r.LocalAet != "ORTHANC" {
		t.Fatalf("Orthanc forward: %+v; want %d instances, none failed, ORTHANC to RADBRIDGE", r, series*perSeries)
	}
	t.Logf("Orthanc forwarded %d instances in %v", r.InstancesCount, time.Since(fwd).Round(time.Millisecond))

	avail, err := awaitAvailable(sub)
	if err != nil {
		t.Fatalf("waiting for IMAGING_STUDY_AVAILABLE: %v", err)
	}
	t.Logf("IMAGING_STUDY_AVAILABLE %v after the forward (quiet period %v)", time.Since(fwd).Round(time.Millisecond), quiet)
	res := avail.Resource.AsMap()
	if avail.StudyInstanceUid != orthancStudyUID || res["resourceType"] != "ImagingStudy" || res["status"] != "available" {
		t.Errorf("AVAILABLE event %v", avail)
	}
	if res["numberOfSeries"] != float64(series) || res["numberOfInstances"] != float64(series*perSeries) {
		t.Errorf("AVAILABLE numberOfSeries %v numberOfInstances %v; want %d and %d", res["numberOfSeries"], res["numberOfInstances"], series, series*perSeries)
	}
	if avail.Source.GetCallingAeTitle() != "ORTHANC" || avail.Source.GetCalledAeTitle() != "RADBRIDGE" {
		t.Errorf("AVAILABLE source %v; want calling ORTHANC, called RADBRIDGE", avail.Source)
	}

	// The same study again, as an Orthanc job this time: every instance is
	// resent and acknowledged, and radbridge counts none of them twice.
	state, content := o.forwardJob(t, studyID)
	if state != "Success" || content.FailedInstancesCount != 0 || content.InstancesCount != series*perSeries {
		t.Fatalf("Orthanc resend job %s: %+v", state, content)
	}
	// Not a wait for a condition: an event the resend wrongly caused would
	// come after a quiet period, so the test lets one pass to see none.
	time.Sleep(quiet + 1500*time.Millisecond)
	code, list := testkit.GetJSON(t, "http://"+d.HTTPAddr()+"/v1/events?type=IMAGING_STUDY_AVAILABLE&type=IMAGING_STUDY_UPDATED")
	evs, _ := list["events"].([]any)
	if code != 200 || len(evs) != 1 {
		t.Fatalf("AVAILABLE+UPDATED events after a resend: %d (%d) %v; want only the first AVAILABLE", len(evs), code, list)
	}
	if ev, _ := evs[0].(map[string]any); ev["type"] != "IMAGING_STUDY_AVAILABLE" || ev["study_instance_uid"] != orthancStudyUID {
		t.Errorf("the one event is %v", ev)
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
