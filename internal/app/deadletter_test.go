package app_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"radbridge/internal/testkit"
)

// TestDeadLetterThenRetry: a RIS sends a report whose event is larger than
// --max-event-bytes. It is acknowledged (it is recorded), dead-lettered
// and passed over: the next patient's order is still announced, /metrics
// and radbridge status show the dead letter. After the fix (a larger
// limit), radbridge replay --retry-dead-letters maps it again: the report
// event is in the log when the daemon is back, and no dead letter is left.
func TestDeadLetterThenRetry(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	dir := filepath.Join(t.TempDir(), "data")
	flags := []string{"--mllp-addr", "127.0.0.1:0", "--hl7-patient-authority", "NORTHWING"}
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), append(flags, "--max-event-bytes", "65536")...)
	base := "http://" + d.HTTPAddr()
	long := strings.Repeat("Findings continue in great detail. ", 3000) // ~100 KB of report text
	report := `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20261201100000||ORU^R01|DL-1|P|2.5.1
PID|1||MRN-DL1^^^NORTHWING^MR||BIG^REPORT
OBR|1|PDL1|FDL1|71250^CT CHEST^C4|||20261201090000|||||||||||ACC-DL1||||20261201100000||CT|F
OBX|1|TX|RPT^Report^L|1|` + long + `||||||F`
	if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "report", report)); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("report: ACK %q", ack.Bytes())
	}
	order := `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20261201100100||ORM^O01|DL-2|P|2.3
PID|1||MRN-DL2^^^NORTHWING^MR||NEXT^PATIENT
ORC|NW|PDL2|FDL2||SC
OBR|1|PDL2|FDL2|71250^CT CHEST^C4||||||||||||||ACC-DL2||||||CT`
	if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), testkit.WriteHL7(t, "order", order)); ack.Segment("MSA").Field(1) != "AA" {
		t.Fatalf("order: ACK %q", ack.Bytes())
	}
	waitEvents(t, base, 1)
	_, list := testkit.GetJSON(t, base+"/v1/events")
	evs, _ := list["events"].([]any)
	if len(evs) != 1 || evs[0].(map[string]any)["accession_number"] != "ACC-DL2" {
		t.Fatalf("events %v, want only the next patient's order", evs)
	}
	waitMetric(t, base+"/metrics", "radbridge_dead_letters", 1)
	code, out, errOut := runApp(t, "status", "--addr", d.HTTPAddr())
	if code != 0 || !strings.Contains(out, "dead letters: 1 records not mapped") || !strings.Contains(out, "hl7.message") || !strings.Contains(out, "event too large") {
		t.Errorf("radbridge status: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out, "MRN-DL1") || strings.Contains(out, "BIG^REPORT") {
		t.Errorf("radbridge status shows patient data:\n%s", out)
	}
	stop()

	code, out, errOut = runApp(t, append([]string{"replay", "--data-dir", dir, "--retry-dead-letters", "--max-event-bytes", "1048576"}, flags[2:]...)...)
	if code != 0 || !strings.Contains(out, "dead letters to map again: 1") || !strings.Contains(out, "dead letters left: 0") {
		t.Fatalf("replay --retry-dead-letters: exit %d\n%s\n%s", code, out, errOut)
	}
	d, _ = runDaemon(t, dir, slog.New(slog.DiscardHandler), append(flags, "--max-event-bytes", "1048576")...)
	base = "http://" + d.HTTPAddr()
	_, list = testkit.GetJSON(t, base+"/v1/events")
	evs, _ = list["events"].([]any)
	var got []string
	for _, e := range evs {
		m := e.(map[string]any)
		got = append(got, fmt.Sprint(m["type"], " ", m["accession_number"]))
	}
	if strings.Join(got, ",") != "ORDER_PLACED ACC-DL2,IMAGING_REPORT_READY ACC-DL1" {
		t.Errorf("events after the retry: %v", got)
	}
	if s := scrape(t, base+"/metrics", ""); s.value("radbridge_dead_letters") != 0 {
		t.Errorf("radbridge_dead_letters %v after the retry", s.value("radbridge_dead_letters"))
	}
}
