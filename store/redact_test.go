package store

import "testing"

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://a:4222": "nats://a:4222",
		"nats://user:secret@a:4222, tls://tok@b:4222": "nats://a:4222,tls://b:4222",
		"user:pa%zz@host:4222":                        "host:4222",
	} {
		if got := RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
