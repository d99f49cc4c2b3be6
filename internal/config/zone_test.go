package config

import "testing"

// TestHostZone: the host's zone is named as Go's time.Local reads it.
func TestHostZone(t *testing.T) {
	for _, tc := range []struct{ tz, want string }{
		{"Europe/Berlin", "Europe/Berlin"},
		{":America/New_York", "America/New_York"},
		{"", "UTC"},
		{"/usr/share/zoneinfo/Asia/Tokyo", "Asia/Tokyo"},
		{"/etc/some-copied-zone", ""},
	} {
		t.Setenv("TZ", tc.tz)
		if got := HostZone(); got != tc.want {
			t.Errorf("TZ=%q: %q, want %q", tc.tz, got, tc.want)
		}
	}
}
