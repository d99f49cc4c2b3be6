package app_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/testkit"
)

// TestTimezone: with --timezone America/New_York on a host in UTC, HL7
// times without an offset (mllp_send) and DICOM StudyDate/StudyTime
// without Timezone Offset From UTC (storescu) become FHIR times in New
// York's offset of that day; explicit offsets (HL7 +/-ZZZZ, DICOM
// (0008,0201)) are kept. The built binary's `replay --check`, run with
// TZ=Asia/Tokyo, finds no difference: the zone is recorded with each
// observation, not taken from the machine.
func TestTimezone(t *testing.T) {
	mllp := testkit.Peer(t, "mllp_send")
	testkit.Peer(t, "dcmodify")
	bin := filepath.Join(t.TempDir(), "radbridge")
	if err := testkit.Build("", bin, "radbridge/cmd/radbridge"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	flags := []string{"--hl7-patient-authority", "NORTHWING", "--study-quiet-period", "1s"}
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), append([]string{"--mllp-addr", "127.0.0.1:0", "--dicom-addr", "127.0.0.1:0", "--timezone", "America/New_York"}, flags...)...)
	base := "http://" + d.HTTPAddr()

	for _, m := range []struct{ name, msg string }{
		{"order", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260115083000||ORM^O01|TZ-5150-1|P|2.5.1
PID|1||MRN5150^^^NORTHWING^MR||DOE^JO||19700101|F
ORC|NW|PLC5150|FIL5150||SC||||20260115083000
TQ1|1||||||20260116090000+0100
OBR|1|PLC5150|FIL5150|71250^CT CHEST W/O CONTRAST^C4||||||||||||||ACC5150||||||CT`},
		{"report", `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260715113000||ORU^R01^ORU_R01|TZ-5150-2|P|2.5.1
PID|1||MRN5150^^^NORTHWING^MR||DOE^JO||19700101|F
ORC|RE|PLC5150|FIL5150||CM
OBR|1|PLC5150|FIL5150|71250^CT CHEST W/O CONTRAST^C4|||20260715100500|||||||||1234^REFERRER^SAM^^^DR||ACC5150|RP1|SPS1||20260715113000-0230||CT|F
OBX|1|TX|RPT^Report^L|1|IMPRESSION: No acute abnormality.||||||F`},
	} {
		if ack := testkit.MLLPSend(t, mllp, d.MLLPAddr(), testkit.WriteHL7(t, m.name, m.msg)); ack.Segment("MSA").Field(1) != "AA" {
			t.Fatalf("%s: ACK %q", m.name, ack.Segment("MSA").Field(1))
		}
	}
	host, port := hostPort(d.DICOMAddr())
	const local, offset = "1.2.826.0.1.3680043.10.1447.91", "1.2.826.0.1.3680043.10.1447.92"
	for _, study := range []string{local, offset} {
		src := t.TempDir()
		makeStudy(t, src, study, 1, 1, 1) // StudyDate 20260310, StudyTime 091500
		if study == offset {
			files, _ := filepath.Glob(filepath.Join(src, "*.dcm"))
			if out, err := dcmtk(t, "dcmodify", append([]string{"-nb", "-i", "(0008,0201)=+0530"}, files...)...); err != nil {
				t.Fatalf("dcmodify: %v\n%s", err, out)
			}
		}
		if out, err := dcmtk(t, "storescu", "-aet", "PACS", "-aec", "RADBRIDGE", "+sd", "+r", host, port, src); err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
	}

	// Every resource by type: the latest event's.
	latest := map[string]map[string]any{}
	if !testkit.Poll(30*time.Second, func() bool {
		_, list := testkit.GetJSON(t, base+"/v1/events")
		evs, _ := list["events"].([]any)
		for _, e := range evs {
			ev := e.(map[string]any)
			r, _ := ev["resource"].(map[string]any)
			switch typ, _ := ev["type"].(string); typ {
			case "ORDER_PLACED":
				latest["order"] = r
			case "IMAGING_REPORT_READY":
				latest["report"] = r
			case "IMAGING_STUDY_AVAILABLE":
				uid, _ := ev["study_instance_uid"].(string)
				latest[uid] = r
			}
		}
		return len(latest) >= 4
	}) {
		t.Fatalf("events within 30s: %v", latest)
	}
	for _, c := range []struct{ what, res, field, want string }{
		{"ORC-9 without offset, January in New York", "order", "authoredOn", "2026-01-15T08:30:00-05:00"},
		{"TQ1-7 with +0100", "order", "occurrenceDateTime", "2026-01-16T09:00:00+01:00"},
		{"OBR-7 without offset, July in New York", "report", "effectiveDateTime", "2026-07-15T10:05:00-04:00"},
		{"OBR-22 with -0230", "report", "issued", "2026-07-15T11:30:00-02:30"},
		{"StudyDate/Time without (0008,0201), March 10 in New York (EDT)", local, "started", "2026-03-10T09:15:00-04:00"},
		{"StudyDate/Time with (0008,0201) +0530", offset, "started", "2026-03-10T09:15:00+05:30"},
	} {
		if got, _ := latest[c.res][c.field].(string); got != c.want {
			t.Errorf("%s: %s %q, want %q", c.what, c.field, got, c.want)
		}
	}
	stop()

	// Replay on a "machine" in Tokyo: the built binary, TZ set, --timezone
	// not given (so its default, the host's zone, is Asia/Tokyo).
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"replay", "--check", "--data-dir", dir}, flags...)...)
	cmd.Env = append(withoutRadbridgeEnv(os.Environ()), "TZ=Asia/Tokyo")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "check: the state and events match a clean replay") || !strings.Contains(string(out), "; differ: 0") {
		t.Errorf("TZ=Asia/Tokyo radbridge replay --check: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "events compared with the event log: 0;") {
		t.Errorf("replay compared no events:\n%s", out)
	}
}

// withoutRadbridgeEnv drops RADBRIDGE_* variables, so the child is
// configured by its flags only.
func withoutRadbridgeEnv(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "RADBRIDGE_") && !strings.HasPrefix(e, "TZ=") {
			out = append(out, e)
		}
	}
	return out
}
