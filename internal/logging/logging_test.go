package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"radbridge/internal/logging"
)

// study carries a UID and logs it through a LogValuer, as types that hold
// patient data do.
type study struct{ uid string }

func (s study) LogValue() slog.Value {
	return slog.GroupValue(slog.String("study_uid", s.uid), slog.String("modality", "CT"))
}

// lines decodes the JSON lines logged to b.
func lines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		delete(m, "time")
		out = append(out, m)
	}
	return out
}

// TestRedactUIDs: every attribute named *_uid or *_uids, at any depth
// (WithAttrs, groups, LogValuers), is replaced by a pseudonym that is the
// same for the same UID within one handler; the rest is left alone.
func TestRedactUIDs(t *testing.T) {
	const uid = "1.2.840.113619.2.55.3.604688119"
	var b bytes.Buffer
	log := slog.New(logging.RedactUIDs(slog.NewJSONHandler(&b, nil)))
	log.With("sop_instance_uid", uid).Info("stored", "study_uid", uid, "calling_ae", "MODALITY1",
		slog.Group("request", "series_uids", "1.2.3", "parts", 2))
	log.WithGroup("dicom").Info("seen", "study", study{uid})

	got := lines(t, &b)
	if len(got) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(got), b.String())
	}
	if strings.Contains(b.String(), uid) || strings.Contains(b.String(), "1.2.3") {
		t.Fatalf("a UID reached the log:\n%s", b.String())
	}
	pseudonym, _ := got[0]["study_uid"].(string)
	if !strings.HasPrefix(pseudonym, "uid~") || len(pseudonym) != len("uid~")+12 {
		t.Fatalf("study_uid logged as %q, want uid~ and 12 hex digits", pseudonym)
	}
	series := got[0]["request"].(map[string]any)["series_uids"]
	want := []map[string]any{
		{"level": "INFO", "msg": "stored", "sop_instance_uid": pseudonym, "study_uid": pseudonym, "calling_ae": "MODALITY1",
			"request": map[string]any{"series_uids": series, "parts": float64(2)}},
		{"level": "INFO", "msg": "seen", "dicom": map[string]any{"study": map[string]any{"study_uid": pseudonym, "modality": "CT"}}},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("logged (-got +want):\n%s", diff)
	}
	if series == pseudonym || !strings.HasPrefix(series.(string), "uid~") {
		t.Errorf("series_uids logged as %v", series)
	}

	// Another handler (another run) draws another key.
	var b2 bytes.Buffer
	slog.New(logging.RedactUIDs(slog.NewJSONHandler(&b2, nil))).Info("stored", "study_uid", uid)
	if again := lines(t, &b2)[0]["study_uid"]; again == pseudonym {
		t.Errorf("two handlers gave the same pseudonym %v", again)
	}
}

// dropTime logs records without their time (a handler omits a zero time).
type dropTime struct{ slog.Handler }

func (d dropTime) Handle(ctx context.Context, r slog.Record) error {
	r.Time = time.Time{}
	return d.Handler.Handle(ctx, r)
}

// TestNew: the level and format of --log-level and --log-format.
func TestNew(t *testing.T) {
	for _, tc := range []struct {
		level, format string
		want          string
	}{
		{"info", "text", "level=INFO msg=shown\n"},
		{"warn", "text", ""},
		{"debug", "json", `{"level":"INFO","msg":"shown"}` + "\n"},
	} {
		var b bytes.Buffer
		h := logging.New(&b, tc.level, tc.format).Handler()
		slog.New(dropTime{h}).Info("shown")
		if got := b.String(); got != tc.want {
			t.Errorf("New(%q, %q) logged %q, want %q", tc.level, tc.format, got, tc.want)
		}
	}
}
