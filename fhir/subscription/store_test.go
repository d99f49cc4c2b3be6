package subscription_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"radbridge/auth"
	"radbridge/fhir/subscription"
	"radbridge/store"
)

func openStore(t *testing.T) *subscription.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{DataDir: filepath.Join(t.TempDir(), "data"), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	kv, tokens, err := st.FHIRSubscriptions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return subscription.NewStore(kv, tokens)
}

// TestCursorIsFenced: a cursor written by one deliverer cannot be
// overwritten by another that read it before (a deposed leader), so an
// event number is never assigned twice.
func TestCursorIsFenced(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	st := &subscription.Stored{ID: subscription.NewID(), Spec: subscription.Spec{Topic: subscription.Topics()[0], ChannelType: "websocket", Content: "empty", MaxCount: 1, TimeoutSeconds: 10}, Owner: "o", Status: "requested", StartSeq: 7}
	if err := s.Create(ctx, st); err != nil {
		t.Fatal(err)
	}
	a, revA, err := s.Cursor(ctx, st.ID)
	if err != nil || a.Seq != 7 || a.Number != 0 {
		t.Fatalf("new cursor %+v %v", a, err)
	}
	b, revB, _ := s.Cursor(ctx, st.ID)
	a.Number, a.Seq = 1, 9
	if _, err := s.PutCursor(ctx, st.ID, a, revA); err != nil {
		t.Fatal(err)
	}
	b.Number, b.Seq = 1, 8
	if _, err := s.PutCursor(ctx, st.ID, b, revB); !errors.Is(err, subscription.ErrChanged) {
		t.Fatalf("stale cursor write: %v; want ErrChanged", err)
	}
	got, _, _ := s.Cursor(ctx, st.ID)
	if got.Seq != 9 {
		t.Errorf("cursor %+v", got)
	}
	if err := s.Delete(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, st.ID); !errors.Is(err, subscription.ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
}

// TestBindingTokenSingleUse: of ten concurrent binds with one token,
// exactly one succeeds; an expired token is refused.
func TestBindingTokenSingleUse(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	p := &auth.Principal{Subject: "nurse", Patients: []string{"P1"}}
	tok, exp, err := s.IssueToken(ctx, "sub1", p, time.Minute)
	if err != nil || time.Until(exp) < 50*time.Second {
		t.Fatalf("IssueToken: %v %v", exp, err)
	}
	var wins, refused atomic.Int32
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			b, err := s.RedeemToken(ctx, tok)
			switch {
			case err == nil && b.Subscription == "sub1" && b.Subject == "nurse" && b.Patients[0] == "P1":
				wins.Add(1)
			case errors.Is(err, subscription.ErrTokenUnknown):
				refused.Add(1)
			default:
				t.Errorf("redeem: %+v %v", b, err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || refused.Load() != 9 {
		t.Errorf("%d binds won, %d refused; want 1 and 9", wins.Load(), refused.Load())
	}
	short, _, _ := s.IssueToken(ctx, "sub1", p, time.Nanosecond)
	if _, err := s.RedeemToken(ctx, short); !errors.Is(err, subscription.ErrTokenExpired) {
		t.Errorf("expired token: %v", err)
	}
	if _, err := s.RedeemToken(ctx, "nope"); !errors.Is(err, subscription.ErrTokenUnknown) {
		t.Errorf("unknown token: %v", err)
	}
}
