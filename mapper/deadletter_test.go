package mapper_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
)

const kindPoison = "test.poison"

// poisonRule emits one event per record, unless its body says "error",
// "panic" or "big" (an event over the limit) and fixed is false.
func poisonRule(fixed bool) rules.Rule {
	return rules.RuleFunc(func(c *rules.Context) error {
		body := string(c.Rec.Body)
		msg := "ok " + body
		switch {
		case fixed:
		case body == `"error"`:
			return errors.New("cannot map this one")
		case body == `"panic"`:
			var m map[string]int
			m["x"]++ // a bug: nil map
		case body == `"big"`:
			msg = strings.Repeat("x", 20000)
		}
		c.Emit(&rbv1.Event{Type: rbv1.EventType_ORDER_PLACED, PatientId: "P1", Message: msg})
		return nil
	})
}

func appendPoison(t *testing.T, in ingest.Log, key, body string) uint64 {
	t.Helper()
	seq, _, err := in.Append(context.Background(), ingest.Observation{Kind: kindPoison, Key: key, Time: time.Unix(1700000000, 0).UTC(), Body: []byte(`"` + body + `"`)})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// flakyEvents fails its first n appends, as a store outage does.
type flakyEvents struct {
	eventlog.Log
	fail atomic.Int32
}

func (f *flakyEvents) Append(ctx context.Context, k eventlog.Key, ev *rbv1.Event) (uint64, error) {
	if f.fail.Add(-1) >= 0 {
		return 0, errors.New("nats: no responders available for request")
	}
	return f.Log.Append(ctx, k, ev)
}

// TestDeadLetters: a record whose rule fails, one whose rule panics and one
// deriving an event over the limit are dead-lettered with their reasons;
// the records behind them are mapped; a store outage is retried, never
// dead-lettered; after a fix, a retry maps a dead letter at the log's head
// and removes it.
func TestDeadLetters(t *testing.T) {
	in, dls := ingest.NewMemory(), &mapper.MemoryDeadLetters{}
	evs := &flakyEvents{Log: eventlog.NewMemory()}
	evs.fail.Store(3)
	cfg := mapper.Config{Ingest: in, Events: evs, Rules: map[string]rules.Rule{kindPoison: poisonRule(false)},
		DeadLetters: dls, MaxEventBytes: 10000, Snapshots: &mapper.MemorySnapshots{}}
	appendPoison(t, in, "a", "first")
	bad := appendPoison(t, in, "b", "error")
	panicky := appendPoison(t, in, "c", "panic")
	appendPoison(t, in, "d", "second")
	big := appendPoison(t, in, "e", "big")
	last := appendPoison(t, in, "f", "third")
	m := runTo(t, cfg, in, last, false)
	var got []string
	for _, e := range allEvents(t, evs) {
		got = append(got, e.Message)
	}
	if strings.Join(got, ",") != `ok "first",ok "second",ok "third"` {
		t.Errorf("events %q, want the three good records'", got)
	}
	list, _ := dls.DeadLetters(context.Background())
	if len(list) != 3 || list[0].Seq != bad || list[1].Seq != panicky || list[2].Seq != big {
		t.Fatalf("dead letters %+v, want records %d, %d, %d", list, bad, panicky, big)
	}
	for i, want := range []string{"cannot map this one", "mapping rule panicked", "event too large: a ORDER_PLACED event of"} {
		if !strings.Contains(list[i].Reason, want) || list[i].Kind != kindPoison {
			t.Errorf("dead letter %d: %+v, want reason %q", list[i].Seq, list[i], want)
		}
	}
	if st := m.Stats(); st.DeadLettered != 3 || st.Failed != 3 {
		t.Errorf("stats %+v: want 3 dead-lettered", st)
	}
	if evs.fail.Load() >= 0 {
		t.Error("the store outage never happened")
	}

	// The fix: the rule maps every record; the dead letters are retried.
	cfg.Rules = map[string]rules.Rule{kindPoison: poisonRule(true)}
	for _, seq := range []uint64{bad, panicky} {
		o, _ := ingest.NewRetry(seq, time.Now())
		if last, _, _ = in.Append(context.Background(), o); last == 0 {
			t.Fatal("append retry")
		}
	}
	runTo(t, cfg, in, last, false)
	got = got[:0]
	for _, e := range allEvents(t, evs) {
		got = append(got, e.Message)
	}
	if strings.Join(got, ",") != `ok "first",ok "second",ok "third",ok "error",ok "panic"` {
		t.Errorf("events after the retries %q", got)
	}
	list, _ = dls.DeadLetters(context.Background())
	if len(list) != 1 || list[0].Seq != big {
		t.Errorf("dead letters after the retries %+v, want only %d", list, big)
	}
}
