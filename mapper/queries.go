package mapper

import (
	"context"
	"time"

	"radbridge/ingest"
	"radbridge/mapper/rules"
)

// Explain reports what the mapper knows about what q selects (see
// rules.State.Explain), as of the last record applied.
func (m *Mapper) Explain(ctx context.Context, q rules.ExplainQuery, now time.Time, may func(patient string) bool) (*rules.Explanation, error) {
	if err := m.lockStateCtx(ctx); err != nil {
		return nil, err
	}
	defer m.unlockState()
	return m.state.Explain(q, now, may), nil
}

// Exceptions lists the worklist's items the mapper's state shows (see
// rules.State.Exceptions).
func (m *Mapper) Exceptions(ctx context.Context, now time.Time, er rules.ExceptionRules, may func(string) bool) ([]rules.Exception, error) {
	if err := m.lockStateCtx(ctx); err != nil {
		return nil, err
	}
	defer m.unlockState()
	return m.state.Exceptions(now, er, may), nil
}

// CheckReconcile reports why a correction cannot apply to the current
// state (nil: it can; see rules.State.CheckReconcile).
func (m *Mapper) CheckReconcile(ctx context.Context, r ingest.Reconcile) error {
	if err := m.lockStateCtx(ctx); err != nil {
		return err
	}
	defer m.unlockState()
	return m.state.CheckReconcile(r)
}
