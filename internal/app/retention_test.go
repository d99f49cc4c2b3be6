package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"radbridge/internal/testkit"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/store"
)

// bigReports writes n final ORU reports of about 40 KB each (one patient
// and accession per report: MRN-S<i>, ACC-S<i>) and returns their files.
func bigReports(t *testing.T, from, n int) []string {
	t.Helper()
	text := strings.Repeat("FINDINGS: lungs clear, no effusion, heart normal in size. ", 700) // ~40 KB
	var files []string
	for i := from; i < from+n; i++ {
		ctl := fmt.Sprintf("ORU-S%d", i)
		msg := `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310113000+0100||ORU^R01^ORU_R01|` + ctl + `|P|2.5.1
PID|1||MRN-S` + fmt.Sprint(i) + `^^^NORTHWING^MR||DOE^JANE||19700101|F
ORC|RE|PLC-S` + fmt.Sprint(i) + `|FIL-S` + fmt.Sprint(i) + `||CM
OBR|1|PLC-S` + fmt.Sprint(i) + `|FIL-S` + fmt.Sprint(i) + `|71250^CT CHEST W/O CONTRAST^C4|||20260310090500|||||||||1234^REFERRER^SAM^^^DR||ACC-S` + fmt.Sprint(i) + `|RP1|SPS1||20260310113000||CT|F
OBX|1|TX|RPT^Report^L|1|` + text + `||||||F`
		files = append(files, testkit.WriteHL7(t, ctl, msg))
	}
	return files
}

func sendHL7(t *testing.T, addr string, files []string) {
	t.Helper()
	if code, out, errOut := runApp(t, append([]string{"send-hl7", "--addr", addr}, files...)...); code != 0 {
		t.Fatalf("send-hl7: exit %d\n%s\n%s", code, out, errOut)
	}
}

// waitEvents waits until the event log's newest event has sequence n or more.
func waitEvents(t *testing.T, base string, n int) {
	t.Helper()
	var list map[string]any
	if !testkit.Poll(60*time.Second, func() bool {
		_, list = testkit.GetJSON(t, base+"/v1/events?page_size=1&since="+fmt.Sprint(n-1))
		last, _ := strconv.Atoi(fmt.Sprint(list["last_sequence"]))
		return last >= n
	}) {
		t.Fatalf("the event log never reached sequence %d: %v", n, list)
	}
}

// TestEventRetentionBySize: with --events-max-bytes the oldest events go
// once the event log is past the limit, the newest stay, the first
// retained sequence moves (radbridge_event_log_first_sequence), a
// subscriber resuming before it gets OUT_OF_RANGE and one resuming at it
// gets everything after, and the log stays within the limit.
func TestEventRetentionBySize(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	const limit = 1 << 20
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), "--mllp-addr", "127.0.0.1:0",
		"--events-max-bytes", fmt.Sprint(limit), "--retention-interval", "100ms")
	base := "http://" + d.HTTPAddr()
	const n = 40 // ~40 KB events: about 1.6 MB in all
	sendHL7(t, d.MLLPAddr(), bigReports(t, 0, n))
	waitEvents(t, base, n)
	// A client listing from the start sees what is retained: the oldest
	// reports are gone, the newest is there, and the metric names the
	// first retained sequence once the retention worker has looked.
	_, list := testkit.GetJSON(t, base+"/v1/events?page_size=1000")
	evs, _ := list["events"].([]any)
	if len(evs) == 0 || len(evs) >= n {
		t.Fatalf("%d of %d events listed from the start; want the newest only: %v", len(evs), n, list)
	}
	firstSeq, _ := strconv.Atoi(fmt.Sprint(evs[0].(map[string]any)["sequence"]))
	if acc := fmt.Sprint(evs[0].(map[string]any)["accession_number"]); firstSeq < 2 || acc != fmt.Sprintf("ACC-S%d", firstSeq-1) {
		t.Errorf("oldest retained event %d is about %s", firstSeq, acc)
	}
	if acc := fmt.Sprint(evs[len(evs)-1].(map[string]any)["accession_number"]); acc != fmt.Sprintf("ACC-S%d", n-1) {
		t.Errorf("newest listed event is about %s, want ACC-S%d", acc, n-1)
	}
	first := waitOpsMetric(t, base, "radbridge_event_log_first_sequence", func(v float64) bool { return v == float64(firstSeq) })

	// A subscriber resuming before the edge: OUT_OF_RANGE, over gRPC and
	// REST; resuming at the edge: every later event.
	client, conn := grpcClient(t, d.GRPCAddr())
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := client.Subscribe(ctx, &rbv1.SubscribeRequest{SinceSequence: 1})
	if err == nil {
		_, err = sub.Recv()
	}
	if status.Code(err) != codes.OutOfRange || !strings.Contains(err.Error(), "no longer retained") {
		t.Errorf("gRPC subscriber resuming after event 1: %v; want OUT_OF_RANGE, no longer retained", err)
	}
	if code, body := testkit.GetJSON(t, base+"/v1/events?since=1"); code != 400 || !strings.Contains(fmt.Sprint(body["message"]), "no longer retained") {
		t.Errorf("REST resume after event 1: %d %v; want 400 OUT_OF_RANGE", code, body)
	}
	for _, since := range []uint64{uint64(first) - 1, 0} { // at the edge; a new subscriber
		sub, err = client.Subscribe(ctx, &rbv1.SubscribeRequest{SinceSequence: since})
		if err != nil {
			t.Fatal(err)
		}
		for want := uint64(first); want <= n; {
			ev, err := sub.Recv()
			if err != nil {
				t.Fatalf("subscriber since %d, waiting for %d: %v", since, want, err)
			}
			if ev.Heartbeat {
				continue
			}
			if ev.GetSequence() != want {
				t.Fatalf("subscriber since %d got %d, want %d", since, ev.GetSequence(), want)
			}
			want++
		}
	}
	cancel()
	stop()

	st, err := store.Open(context.Background(), store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	msgs, bytes, err := st.Events().Usage(context.Background())
	if err != nil || bytes > limit || msgs != uint64(len(evs)) {
		t.Errorf("event log holds %d events, %d bytes (%v); want %d events within %d bytes", msgs, bytes, err, len(evs), limit)
	}
}

// listAll pages through GET /v1/events from the start. A page of these
// ~96 KB events ends at about 3 MB, before page_size (a page past 4 MiB
// failed: the gateway's gRPC connection refused it).
func listAll(t *testing.T, base string) []any {
	t.Helper()
	var all []any
	for since := "0"; ; {
		code, list := testkit.GetJSON(t, base+"/v1/events?page_size=1000&since="+since)
		evs, _ := list["events"].([]any)
		if code != 200 || (len(evs) == 0 && since == "0") {
			t.Fatalf("GET /v1/events since %s: %d %v", since, code, list)
		}
		if len(evs) == 0 {
			return all
		}
		all = append(all, evs...)
		since = fmt.Sprint(list["next_since"])
	}
}

// ingestStream is the ingest log's line of GET /v1/status (what
// radbridge status prints).
func ingestStream(t *testing.T, base string) (first, last, bytes uint64) {
	t.Helper()
	_, st := testkit.GetJSON(t, base+"/v1/status")
	streams, _ := st["store"].(map[string]any)["streams"].([]any)
	for _, s := range streams {
		m := s.(map[string]any)
		if m["name"] == store.IngestStream {
			n := func(k string) uint64 { v, _ := m[k].(float64); return uint64(v) }
			return n("first_sequence"), n("last_sequence"), n("bytes")
		}
	}
	t.Fatalf("no ingest stream in /v1/status: %v", st)
	return 0, 0, 0
}

// checksPass waits until the retention worker has checked twice more (the
// oldest event's age it reports changes at every check).
func checksPass(t *testing.T, base string) {
	t.Helper()
	for range 2 {
		age := opsMetric(t, base, "radbridge_event_log_oldest_event_age_seconds")
		waitOpsMetric(t, base, "radbridge_event_log_oldest_event_age_seconds", func(v float64) bool { return v != age })
	}
}

// TestIngestRetentionBySize: with --ingest-max-bytes the oldest ingest
// records go once the log is past the limit, but never one the oldest kept
// snapshot does not cover: with no snapshot nothing goes; with one at 25,
// the log is cut at 26 however large it is; once three newer snapshots
// are kept it is cut to the limit. The first retained sequence is in
// radbridge_ingest_log_first_sequence and /v1/status, the trimmed count in
// radbridge_ingest_records_trimmed_total; a restart on the trimmed log
// serves the same history.
func TestIngestRetentionBySize(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	const limit = 1 << 20
	flags := func(snapEvery int) []string {
		return []string{"--mllp-addr", "127.0.0.1:0", "--ingest-max-bytes", fmt.Sprint(limit),
			"--retention-interval", "100ms", "--snapshot-every", fmt.Sprint(snapEvery)}
	}
	// ~54 KB ingest records: 25 hold ~1.35 MB. No snapshot yet: nothing
	// may go.
	d, stop := runDaemon(t, dir, slog.New(slog.DiscardHandler), flags(100000)...)
	base := "http://" + d.HTTPAddr()
	sendHL7(t, d.MLLPAddr(), bigReports(t, 0, 25))
	waitEvents(t, base, 25)
	checksPass(t, base)
	if first, last, bytes := ingestStream(t, base); first != 1 || last != 25 || bytes <= limit {
		t.Errorf("ingest log without a snapshot: %d-%d, %d bytes; want 1-25 over the limit, untouched", first, last, bytes)
	}
	stop() // an orderly stop writes a snapshot at 25

	d, stop = runDaemon(t, dir, slog.New(slog.DiscardHandler), flags(100000)...)
	base = "http://" + d.HTTPAddr()
	sendHL7(t, d.MLLPAddr(), bigReports(t, 25, 25))
	waitEvents(t, base, 50)
	waitOpsMetric(t, base, "radbridge_ingest_log_first_sequence", func(v float64) bool { return v == 26 })
	checksPass(t, base)
	first, last, bytes := ingestStream(t, base)
	if first != 26 || last != 50 || bytes <= limit {
		t.Errorf("ingest log %d-%d, %d bytes; want 26-50 over the limit (cut after the snapshot at 25, not further)", first, last, bytes)
	}
	if n := opsMetric(t, base, "radbridge_ingest_records_trimmed_total"); n != 25 {
		t.Errorf("radbridge_ingest_records_trimmed_total %v, want 25", n)
	}
	stop() // a snapshot at 50

	// Three snapshots at or after 50: the oldest kept covers 50.
	d, stop = runDaemon(t, dir, slog.New(slog.DiscardHandler), flags(2)...)
	base = "http://" + d.HTTPAddr()
	for i := 50; opsMetric(t, base, "radbridge_mapper_snapshots_written_total") < 2; i += 2 {
		if i >= 70 {
			t.Fatal("fewer than 2 snapshots written after 20 records with --snapshot-every 2")
		}
		sendHL7(t, d.MLLPAddr(), bigReports(t, i, 2))
		waitEvents(t, base, i+2)
	}
	_, last, _ = ingestStream(t, base)
	if !testkit.Poll(30*time.Second, func() bool { first, _, bytes = ingestStream(t, base); return bytes <= limit }) {
		t.Fatalf("ingest log %d-%d stayed at %d bytes, over the %d limit", first, last, bytes, limit)
	}
	waitOpsMetric(t, base, "radbridge_ingest_log_first_sequence", func(v float64) bool { return v == float64(first) })
	if n := opsMetric(t, base, "radbridge_ingest_records_trimmed_total"); n != float64(first-26) {
		t.Errorf("radbridge_ingest_records_trimmed_total %v, want %d (26 to %d)", n, first-26, first-1)
	}
	evs1 := listAll(t, base)
	stop()

	st, err := store.Open(context.Background(), store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	seqs, _ := st.Snapshots().Snapshots(context.Background())
	st.Close()
	if len(seqs) != store.SnapshotsKept || first > seqs[len(seqs)-1]+1 || first <= 26 {
		t.Errorf("ingest log cut at %d with snapshots %v: past the oldest, or not moved", first, seqs)
	}

	d, _ = runDaemon(t, dir, slog.New(slog.DiscardHandler), flags(100000)...)
	if evs2 := listAll(t, "http://"+d.HTTPAddr()); len(evs1) != int(last) || fmt.Sprint(evs1) != fmt.Sprint(evs2) {
		t.Errorf("after a restart on the trimmed ingest log: %d events, before %d (of %d records)", len(evs2), len(evs1), last)
	}
}
