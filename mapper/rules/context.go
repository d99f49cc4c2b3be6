package rules

import (
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"radbridge/ingest"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Rule maps the observations of one kind.
type Rule interface {
	Apply(c *Context) error
}

// RuleFunc adapts a function to Rule.
type RuleFunc func(c *Context) error

// Apply implements Rule.
func (f RuleFunc) Apply(c *Context) error { return f(c) }

// Context is what a rule sees while it maps one observation.
type Context struct {
	State *State
	Rec   ingest.Record
	// Timer is the timer that woke the rule, or nil.
	Timer  *ingest.Timer
	events []*rbv1.Event
	dirty  map[string]bool
}

// NewContext returns the Context of mapping rec on st; the patients whose
// read model changes are added to dirty.
func NewContext(st *State, rec ingest.Record, dirty map[string]bool) *Context {
	return &Context{State: st, Rec: rec, dirty: dirty}
}

// Emit queues an event. The mapper fills in sequence, id, time (the
// observation's) and source, and records it on the patient's read model.
func (c *Context) Emit(ev *rbv1.Event) { c.events = append(c.events, ev) }

// Events returns the events emitted on c so far.
func (c *Context) Events() []*rbv1.Event { return c.events }

// Discard drops the events emitted so far: the record is not mapped.
func (c *Context) Discard() { c.events = nil }

// Touch marks a patient's read model as changed.
func (c *Context) Touch(patientID string) { c.dirty[patientID] = true }

// Schedule sets (or moves) the timer key to wake rule kind at at with body.
func (c *Context) Schedule(key, kind string, at time.Time, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("timer body: %w", err)
	}
	c.State.Timers[key] = &ingest.Timer{Key: key, Kind: kind, At: at.UTC().Round(time.Millisecond), Body: b, Armed: c.Rec.Seq}
	return nil
}

// Cancel removes the timer key.
func (c *Context) Cancel(key string) { delete(c.State.Timers, key) }

// Map is the rules' entry point: it maps one ingest record, a pure
// function from (state, observation) to (state, events). st becomes the
// state after rec and the events that follow from rec are returned in
// order, without sequence, id, time or source (the engine numbers and
// stamps them, and makes an unspecified severity info and priority
// routine); dirty collects the patients whose read model changed.
//
// Mapping is two steps, which the engine runs itself to check the events
// in between: Derive runs the rule of rec, then Link joins what shares an
// accession number. When Derive fails, its events are dropped, the links
// are still recomputed (the rule may have changed the state) and the
// error is returned: the record is not mapped.
func Map(byKind map[string]Rule, st *State, rec ingest.Record, dirty map[string]bool) ([]*rbv1.Event, error) {
	c := NewContext(st, rec, dirty)
	err := Derive(byKind, c)
	if err != nil {
		c.Discard()
	}
	Link(c)
	return c.Events(), err
}

// Derive runs the rule of c.Rec, from byKind (rules by observation kind).
// A timer record fires the state's timer it names and wakes that timer's
// rule with c.Timer set; a timer moved, set again or cancelled after it
// fired does nothing. Any other record goes to the rule of its kind.
func Derive(byKind map[string]Rule, c *Context) error {
	rec := c.Rec
	if rec.Kind == ingest.KindTimer {
		t, err := ingest.DecodeTimer(rec.Observation)
		if err != nil {
			return err
		}
		cur := c.State.Timers[t.Key]
		if cur == nil || !cur.At.Equal(t.At) || t.Armed != 0 && cur.Armed != t.Armed {
			// Moved, set again or cancelled after it fired. (A firing
			// recorded before timers kept Armed matches by due time.)
			return nil
		}
		delete(c.State.Timers, t.Key)
		c.Timer = cur
		rule := byKind[cur.Kind]
		if rule == nil {
			return fmt.Errorf("timer %s for unknown rule %q", t.Key, cur.Kind)
		}
		return rule.Apply(c)
	}
	rule := byKind[rec.Kind]
	if rule == nil {
		return fmt.Errorf("no rule for kind %q", rec.Kind)
	}
	return rule.Apply(c)
}

// Link joins the orders, studies and reports that share an accession
// number with the resources of c's events (see join); it runs after every
// record, mapped or not.
func Link(c *Context) { join(c) }

// toStruct converts a FHIR resource map to a Struct; invalid UTF-8 in its
// strings (from a sender's bytes) becomes U+FFFD instead of failing.
func toStruct(res map[string]any) *structpb.Struct {
	if st, err := structpb.NewStruct(res); err == nil {
		return st
	}
	b, err := json.Marshal(res) // replaces invalid UTF-8 with U+FFFD
	if err != nil {
		return nil
	}
	st := &structpb.Struct{}
	if protojson.Unmarshal(b, st) != nil {
		return nil
	}
	return st
}
