package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"radbridge/internal/cli"
	"radbridge/internal/testkit/inproc"
)

// TestTailEscapesControlCharacters: an event whose patient id and
// accession hold control characters prints as one line with them escaped.
func TestTailEscapesControlCharacters(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	base := "http://" + d.HTTPAddr()
	// C1 CSI (U+009B) clears a VT100-like screen; U+202E reverses the
	// text; the accession's newline would start a forged event line.
	patient := "P\u009b2J\u202eX"
	accession := "A1\n999 2026-01-01T00:00:00Z IMAGING_REPORT_READY patient=VIP\x1b[2K"
	body, _ := json.Marshal(map[string]any{"type": "IMAGING_STUDY_VIEWED", "patient_id": patient, "study_instance_uid": "1.2.3", "accession_number": accession})
	inproc.PublishJSON(t, base, string(body))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, []string{"tail", "--addr", d.GRPCAddr(), "--since", "0"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	cancel()
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	line = strings.TrimSuffix(line, "\n")
	want := `patient="P\u009b2J\u202eX" accession="A1\n999 2026-01-01T00:00:00Z IMAGING_REPORT_READY patient=VIP\x1b[2K" study=1.2.3`
	if !strings.Contains(line, want) {
		t.Errorf("tail line %q\nwant it to hold %q", line, want)
	}
	for _, r := range line {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) || r == 0x202e {
			t.Errorf("tail line holds control character %U: %q", r, line)
		}
	}
}
