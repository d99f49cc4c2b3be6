package ingest_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"radbridge/ingest"
)

// FuzzReconcile: any body decodes or fails without a panic; a correction
// that validates is recorded and read back unchanged, with the same key
// for the same request and content.
func FuzzReconcile(f *testing.F) {
	f.Add([]byte(`{"action":"move","study":"1.2.3.4","patient":"MRN002","actor":"alice","reason":"PACS had the wrong MRN"}`), "req-1")
	f.Add([]byte(`{"action":"link","study":"1.2","order":"ACC1","actor":"a","reason":"r"}`), "")
	f.Add([]byte(`{"action":"entered-in-error","study":"1.2","actor":"a/b#c","reason":"dup"}`), "x/y#z")
	f.Add([]byte(`{"action":"unlink","study":""}`), "")
	f.Fuzz(func(t *testing.T, body []byte, requestID string) {
		o := ingest.Observation{Kind: ingest.KindReconcile, Body: body}
		r, err := ingest.DecodeReconcile(o)
		if err != nil || r.Validate() != nil {
			return
		}
		rec, err := ingest.NewReconcile(*r, requestID, "127.0.0.1:1", at)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := ingest.NewReconcile(*r, requestID, "127.0.0.1:1", at)
		if rec.Key != again.Key {
			t.Fatalf("keys differ: %q %q", rec.Key, again.Key)
		}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		var back ingest.Observation
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		got, err := ingest.DecodeReconcile(back)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, r); diff != "" {
			t.Fatalf("read back (-got +want):\n%s", diff)
		}
	})
}
