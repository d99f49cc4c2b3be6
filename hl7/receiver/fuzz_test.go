package receiver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"radbridge/hl7"
)

// FuzzProcess feeds arbitrary frame contents through the receiver's
// parse, validate, handle and ACK path: it must never panic, every ACK it
// builds must parse, and MSA-2 must echo the message's MSH-10.
func FuzzProcess(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*.hl7"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(oru("C1", "|||ER|AL", goodORUBody))
	srv, err := New(Config{
		Handler: HandlerFunc(func(_ context.Context, m *hl7.Message, _ []byte) error {
			if m.ControlID() == "FAIL" {
				return errors.New("fail")
			}
			return nil
		}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		res := srv.process(context.Background(), raw)
		if res.ack == nil {
			return
		}
		ack, err := hl7.Parse(res.ack)
		if err != nil && ack == nil {
			t.Fatalf("ACK does not parse: %v\n%q", err, res.ack)
		}
		if got := ack.Get("MSA-1"); got != res.code {
			t.Fatalf("MSA-1 %q, want %q", got, res.code)
		}
		m, _ := hl7.Parse(raw)
		want := ""
		if m != nil {
			want = m.MSH().Field(10)
		}
		if got := ack.Get("MSA-2"); got != want {
			t.Fatalf("MSA-2 %q, want %q", got, want)
		}
	})
}
