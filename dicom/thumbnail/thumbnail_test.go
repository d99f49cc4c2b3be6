package thumbnail

import (
	"image"
	"strings"
	"testing"
)

func TestIconEscapes(t *testing.T) {
	got := string(Icon("<b>&"))
	if strings.Contains(got, "<b>") || !strings.Contains(got, "&lt;B&gt;") {
		t.Errorf("Icon does not escape the modality: %s", got)
	}
}

func TestScaleFits(t *testing.T) {
	tests := []struct{ w, h, wantW, wantH int }{
		{16, 16, 16, 16},
		{512, 512, 256, 256},
		{1024, 512, 256, 128},
		{300, 3000, 25, 256},
	}
	for _, tt := range tests {
		b := scale(image.NewGray(image.Rect(0, 0, tt.w, tt.h)), 256).Bounds()
		if b.Dx() != tt.wantW || b.Dy() != tt.wantH {
			t.Errorf("%dx%d scaled to %dx%d, want %dx%d", tt.w, tt.h, b.Dx(), b.Dy(), tt.wantW, tt.wantH)
		}
	}
}
