package app_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"radbridge/internal/testkit"
)

// TestReusedControlIDIsNewData: a RIS whose counter restarted sends a
// different order under a control id it used before. Both get AA and both
// orders become events (the second is counted and reported, without
// patient data); a true resend (the same message, restamped MSH-7) gets AA
// and no event, inside the ingest log's duplicate window and beyond it.
func TestReusedControlIDIsNewData(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	buf := &testkit.Buffer{}
	log := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d := startDaemonLog(t, filepath.Join(t.TempDir(), "data"), log, "--hl7-patient-authority", "NORTHWING", "--duplicate-window", "200ms")
	base := "http://" + d.HTTPAddr()
	order := func(msh7, acc, patient string) string {
		return `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|` + msh7 + `||ORM^O01|CTL-7|P|2.3
PID|1||` + patient + `^^^NORTHWING^MR||REUSE^PATIENT||19700101|F
ORC|NW|PLC` + acc + `|FIL` + acc + `||SC
OBR|1|PLC` + acc + `|FIL` + acc + `|71250^CT CHEST^C4||||||||||||||` + acc + `||||||CT`
	}
	first := testkit.WriteHL7(t, "first", order("20261201080000", "ACC7001", "MRN7001"))
	for _, f := range []string{first, testkit.WriteHL7(t, "reused", order("20261201090000", "ACC7002", "MRN7002"))} {
		if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), f); ack.Segment("MSA").Field(1) != "AA" || ack.Segment("MSA").Field(2) != "CTL-7" {
			t.Fatalf("ACK %q, want AA for CTL-7", ack.Bytes())
		}
	}
	waitMetric(t, base+"/metrics", "radbridge_mapper_reused_identifiers_total", 1)
	// The RIS resends the first order, stamped with a new MSH-7, until one
	// resend reaches the ingest log beyond its 200 ms duplicate window (the
	// mapper must then tell it is a resend by its content).
	resend := testkit.WriteHL7(t, "resend", order("20261201100000", "ACC7001", "MRN7001"))
	recorded := func() float64 {
		return scrape(t, base+"/metrics", "").value("radbridge_ingest_observations_total", "front", "mllp", "result", "recorded")
	}
	for i := 0; recorded() < 3; i++ {
		if i == 200 {
			t.Fatal("no resend was recorded beyond the duplicate window")
		}
		if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), resend); ack.Segment("MSA").Field(1) != "AA" {
			t.Fatalf("resend: ACK %q", ack.Bytes())
		}
	}
	waitMetric(t, base+"/metrics", "radbridge_mapper_observations_total", 1, "outcome", "duplicate")
	_, list := testkit.GetJSON(t, base+"/v1/events?type=ORDER_PLACED")
	evs, _ := list["events"].([]any)
	var accs []string
	for _, e := range evs {
		accs = append(accs, fmt.Sprint(e.(map[string]any)["accession_number"]))
	}
	if strings.Join(accs, ",") != "ACC7001,ACC7002" {
		t.Errorf("ORDER_PLACED for %v, want ACC7001 and ACC7002 once each", accs)
	}
	logs := buf.String()
	if !strings.Contains(logs, "identifier reused with other content") || !strings.Contains(logs, `"control_id":"CTL-7"`) {
		t.Errorf("no warning naming the reused control id:\n%s", logs)
	}
	for _, phi := range []string{"MRN700", "REUSE^PATIENT", "REUSE"} {
		if strings.Contains(logs, phi) {
			t.Errorf("the log contains patient data %q", phi)
		}
	}
	if n := scrape(t, base+"/metrics", "").value("radbridge_mapper_reused_identifiers_total"); n != 1 {
		t.Errorf("radbridge_mapper_reused_identifiers_total %v, want 1 (the resends are not reuses)", n)
	}
}
