package subscription

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// owners follows the subscription bucket and knows which subject owns
// which subscription: the caps on creation count with it, and a search
// reads only the caller's subscriptions.
type owners struct {
	mu        sync.Mutex
	ready     chan struct{}
	readyOnce sync.Once
	owner     map[string]string              // id → subject
	bySubject map[string]map[string]struct{} // subject → ids
}

func newOwners() *owners {
	return &owners{ready: make(chan struct{}), owner: map[string]string{}, bySubject: map[string]map[string]struct{}{}}
}

// run follows the bucket until ctx ends or the watch fails. It builds
// the index afresh and swaps it in once the bucket's contents are in.
func (o *owners) run(ctx context.Context, s *Store) error {
	watch, err := s.kv.Watch(ctx, "sub.*")
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while the watch was being set up
		}
		return fmt.Errorf("watch subscriptions: %w", err)
	}
	defer watch.Stop()
	fresh := newOwners()
	cur := fresh // where updates go: fresh until the initial values are in
	for {
		var ent jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case ent, ok = <-watch.Updates():
		}
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return errors.New("watch subscriptions: ended")
		}
		if ent == nil {
			if cur == fresh {
				o.mu.Lock()
				o.owner, o.bySubject = fresh.owner, fresh.bySubject
				o.mu.Unlock()
				cur = o
				o.readyOnce.Do(func() { close(o.ready) })
			}
			continue
		}
		id := strings.TrimPrefix(ent.Key(), "sub.")
		if ent.Operation() != jetstream.KeyValuePut {
			cur.remove(id)
			continue
		}
		var st struct {
			Owner string `json:"owner"`
		}
		if json.Unmarshal(ent.Value(), &st) == nil {
			cur.add(id, st.Owner)
		}
	}
}

// wait waits until the bucket's contents are in.
func (o *owners) wait(ctx context.Context) error {
	select {
	case <-o.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *owners) add(id, subject string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.owner[id]; ok {
		return
	}
	o.owner[id] = subject
	ids := o.bySubject[subject]
	if ids == nil {
		ids = map[string]struct{}{}
		o.bySubject[subject] = ids
	}
	ids[id] = struct{}{}
}

func (o *owners) remove(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	subject, ok := o.owner[id]
	if !ok {
		return
	}
	delete(o.owner, id)
	delete(o.bySubject[subject], id)
	if len(o.bySubject[subject]) == 0 {
		delete(o.bySubject, subject)
	}
}

// counts returns subject's subscriptions and all of them.
func (o *owners) counts(subject string) (mine, all int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.bySubject[subject]), len(o.owner)
}

// of returns subject's subscription ids, sorted.
func (o *owners) of(subject string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	ids := make([]string, 0, len(o.bySubject[subject]))
	for id := range o.bySubject[subject] {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
