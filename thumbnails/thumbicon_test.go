package thumbnails

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"radbridge/store"
)

// TestIconNeverReplacesImage: in a cluster the process that received a
// study's files renders its image; another process, without the files,
// must not overwrite that image with a modality icon.
func TestIconNeverReplacesImage(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DataDir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	th := New(Config{Bucket: st.Thumbnails()})
	enc := func(v storedThumb) []byte { b, _ := json.Marshal(v); return b }
	key := thumbKey("1.2.3")
	contentType := func() string {
		b, _, found, err := th.kv.Get(ctx, key)
		if err != nil || !found {
			t.Fatal(found, err)
		}
		var v storedThumb
		json.Unmarshal(b, &v)
		return v.ContentType
	}

	// No thumbnail yet: the icon is stored.
	if err := th.putIcon(ctx, key, "P1", enc(storedThumb{Patient: "P1", ContentType: "image/svg+xml", Data: []byte("<svg/>")})); err != nil {
		t.Fatal(err)
	}
	if got := contentType(); got != "image/svg+xml" {
		t.Fatalf("after the first icon: %s", got)
	}
	// The image (another process) replaces the icon ...
	if err := th.kv.Put(ctx, key, enc(storedThumb{Patient: "P1", ContentType: "image/jpeg", Data: []byte{0xff, 0xd8}})); err != nil {
		t.Fatal(err)
	}
	// ... and a later icon leaves it.
	if err := th.putIcon(ctx, key, "P1", enc(storedThumb{Patient: "P1", ContentType: "image/svg+xml", Data: []byte("<svg/>")})); err != nil {
		t.Fatal(err)
	}
	if got := contentType(); got != "image/jpeg" {
		t.Fatalf("an icon replaced the image: %s", got)
	}
	// The study moved to another patient: the old image is not theirs.
	if err := th.putIcon(ctx, key, "P2", enc(storedThumb{Patient: "P2", ContentType: "image/svg+xml", Data: []byte("<svg/>")})); err != nil {
		t.Fatal(err)
	}
	if got := contentType(); got != "image/svg+xml" {
		t.Fatalf("another patient's image kept: %s", got)
	}
}
