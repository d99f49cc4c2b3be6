package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"runtime"
	"testing"

	"radbridge/internal/opsapi"
)

func TestVersionJSON(t *testing.T) {
	var stdout bytes.Buffer
	if code := Run(context.Background(), []string{"version", "--json"}, &stdout, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var got opsapi.BuildInfo
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if got.Version == "" || got.GoVersion != runtime.Version() || got.OS != runtime.GOOS || got.Arch != runtime.GOARCH {
		t.Errorf("got %+v", got)
	}
}
