package part10

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestValidUID: PS3.5 section 9.1, digits and dots, at most 64 characters,
// no empty component; a valid UID stays one path component.
func TestValidUID(t *testing.T) {
	tests := []struct {
		uid  string
		want bool
	}{
		{"1.2.840.10008.1.2", true},
		{"2.25.175144116734447533891792358872471728825", true},
		{"1", true},
		{strings.Repeat("1", 64), true},
		{strings.Repeat("1", 65), false},
		{"", false},
		{".1.2", false},
		{"1.2.", false},
		{"1..2", false},
		{"1.2.x", false},
		{"1/2", false},
		{"..", false},
		{"1.2 ", false},
	}
	for _, tt := range tests {
		if got := ValidUID(tt.uid); got != tt.want {
			t.Errorf("ValidUID(%q) = %v, want %v", tt.uid, got, tt.want)
		}
		if got := CheckUID(tt.uid) == nil; got != tt.want {
			t.Errorf("CheckUID(%q) = %v, want nil: %v", tt.uid, CheckUID(tt.uid), tt.want)
		}
	}
}

func TestPath(t *testing.T) {
	got := Path("/store", "1.2", "1.2.3", "1.2.3.4")
	if want := filepath.Join("/store", "1.2", "1.2.3", "1.2.3.4.dcm"); got != want {
		t.Errorf("Path = %s, want %s", got, want)
	}
}
