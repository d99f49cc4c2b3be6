package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"sync"
	"time"
)

// ErrTooManyTickets: the outstanding tickets are at their bound.
var ErrTooManyTickets = errors.New("too many outstanding tickets")

// Tickets are short-lived, single-use stand-ins for a bearer token, for a
// client that can put a credential only in a URL (a browser WebSocket
// library): it exchanges its real token for a ticket over an authenticated
// request and opens the socket with the ticket, which then is spent. A
// ticket in a log or browser history is useless after its first use or
// its lifetime, whichever comes first. Tickets live in this process's
// memory only (only the SHA-256 of each is kept).
type Tickets struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	pending map[[32]byte]ticket
}

type ticket struct {
	p       *Principal
	expires time.Time
}

// NewTickets returns a ticket office whose tickets are valid for ttl, with
// at most max outstanding at once.
func NewTickets(ttl time.Duration, max int) *Tickets {
	return &Tickets{ttl: ttl, max: max, now: time.Now, pending: map[[32]byte]ticket{}}
}

// TTL is the lifetime of a ticket.
func (t *Tickets) TTL() time.Duration { return t.ttl }

// Issue returns a new ticket for p.
func (t *Tickets) Issue(p *Principal) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s := base64.RawURLEncoding.EncodeToString(b[:])
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pending) >= t.max {
		for k, v := range t.pending {
			if !now.Before(v.expires) {
				delete(t.pending, k)
			}
		}
		if len(t.pending) >= t.max {
			return "", ErrTooManyTickets
		}
	}
	t.pending[sha256.Sum256([]byte(s))] = ticket{p: p, expires: now.Add(t.ttl)}
	return s, nil
}

// Redeem spends the ticket s and returns the principal it was issued to:
// ErrUnauthenticated when it is unknown, spent or expired, ErrTokenExpired
// when the token it stands for has expired meanwhile.
func (t *Tickets) Redeem(s string) (*Principal, error) {
	k := sha256.Sum256([]byte(s))
	now := t.now()
	t.mu.Lock()
	tk, ok := t.pending[k]
	delete(t.pending, k)
	t.mu.Unlock()
	if !ok || !now.Before(tk.expires) {
		return nil, ErrUnauthenticated
	}
	if !tk.p.Expires.IsZero() && !now.Before(tk.p.Expires) {
		return nil, ErrTokenExpired
	}
	return tk.p, nil
}
