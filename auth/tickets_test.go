package auth

import (
	"errors"
	"testing"
	"time"
)

func TestTickets(t *testing.T) {
	now := time.Unix(1000, 0)
	tk := NewTickets(30*time.Second, 2)
	tk.now = func() time.Time { return now }
	p := &Principal{Subject: "ehr", Patients: []string{"P1"}}
	a, err := tk.Issue(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Redeem(a)
	if err != nil || got != p {
		t.Fatalf("Redeem: %v %v", got, err)
	}
	if _, err := tk.Redeem(a); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("second Redeem: %v, want AUTH_FAILED (single use)", err)
	}
	b, _ := tk.Issue(p)
	now = now.Add(31 * time.Second)
	if _, err := tk.Redeem(b); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Redeem after its lifetime: %v, want AUTH_FAILED", err)
	}
	// The bound: two outstanding; expired ones make room.
	for range 2 {
		if _, err := tk.Issue(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tk.Issue(p); !errors.Is(err, ErrTooManyTickets) {
		t.Errorf("third outstanding ticket: %v", err)
	}
	now = now.Add(time.Minute)
	if _, err := tk.Issue(p); err != nil {
		t.Errorf("after the others expired: %v", err)
	}
	exp := &Principal{Subject: "short", Expires: now.Add(time.Second)}
	c, _ := tk.Issue(exp)
	now = now.Add(2 * time.Second)
	if _, err := tk.Redeem(c); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("ticket of an expired token: %v, want TOKEN_EXPIRED", err)
	}
	if _, err := tk.Redeem("made-up"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("made-up ticket: %v", err)
	}
}
