package subscription

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/auth"
)

// FormatVersion is the version of the stored JSON (Stored.Version,
// Cursor.Version); see testdata/stored.
const FormatVersion = 1

// MaxMapped bounds the event numbers a cursor maps to event-log sequences
// (the newest are kept): $events answers for these.
const MaxMapped = 1024

// Stored is a subscription as kept in the bucket under "sub.<id>".
type Stored struct {
	Version int    `json:"v"`
	ID      string `json:"id"`
	Spec
	// Owner is the subject of the principal that created it; Scope its
	// patients (nil: every patient). Only that subject, with a scope
	// covering the subscription's patients, may read, bind or delete it.
	Owner  string   `json:"owner"`
	Scope  []string `json:"scope"`
	Status string   `json:"status"`
	// Error says why the status is error.
	Error   string    `json:"error,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// StartSeq is the event-log sequence at creation: events after it
	// are notified.
	StartSeq uint64 `json:"start_seq"`
}

// Mapping is one event number and the event-log sequence it notified.
type Mapping struct {
	N   uint64 `json:"n"`
	Seq uint64 `json:"seq"`
}

// Cursor is a subscription's delivery state, kept under "cur.<id>" and
// written by the delivering process only, each write a compare-and-swap.
type Cursor struct {
	Version int `json:"v"`
	// Seq is the last event-log sequence examined.
	Seq uint64 `json:"seq"`
	// Number is the last event number assigned; Delivered the last one
	// delivered (acknowledged by the rest-hook; for a websocket channel
	// every assigned number counts as delivered: bound clients follow
	// Number).
	Number    uint64 `json:"number"`
	Delivered uint64 `json:"delivered"`
	// Map holds the newest MaxMapped numbers with their sequences,
	// ascending.
	Map []Mapping `json:"map"`
	// Failures counts consecutive failed deliveries; LastError is the
	// last one's reason.
	Failures  int    `json:"failures,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// SeqOf returns the event-log sequence of event number n.
func (c *Cursor) SeqOf(n uint64) (uint64, bool) {
	i, ok := slices.BinarySearchFunc(c.Map, n, func(m Mapping, n uint64) int {
		switch {
		case m.N < n:
			return -1
		case m.N > n:
			return 1
		}
		return 0
	})
	if !ok {
		return 0, false
	}
	return c.Map[i].Seq, true
}

// assign gives the next number to the event at seq.
func (c *Cursor) assign(seq uint64) uint64 {
	c.Number++
	c.Map = append(c.Map, Mapping{N: c.Number, Seq: seq})
	if len(c.Map) > MaxMapped {
		c.Map = slices.Delete(c.Map, 0, len(c.Map)-MaxMapped)
	}
	return c.Number
}

// ErrNotFound: no such subscription (or not the caller's).
var ErrNotFound = errors.New("subscription not found")

// ErrChanged: the record changed since it was read.
var ErrChanged = errors.New("subscription changed meanwhile")

// Store keeps subscriptions and binding tokens in JetStream key-value
// buckets.
type Store struct {
	kv     jetstream.KeyValue
	tokens jetstream.KeyValue
	now    func() time.Time
}

// NewStore returns the store on the subscription bucket kv and the token
// bucket tokens (entries expire after a few minutes).
func NewStore(kv, tokens jetstream.KeyValue) *Store {
	return &Store{kv: kv, tokens: tokens, now: time.Now}
}

func subKey(id string) string { return "sub." + id }
func curKey(id string) string { return "cur." + id }

// NewID returns a random subscription id (FHIR id: [A-Za-z0-9-.]{1,64}).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return !strings.Contains(id, "..")
}

// Create stores a new subscription and its empty cursor.
func (s *Store) Create(ctx context.Context, st *Stored) error {
	st.Version = FormatVersion
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	cur, _ := json.Marshal(&Cursor{Version: FormatVersion, Seq: st.StartSeq, Map: []Mapping{}})
	if _, err := s.kv.Create(ctx, curKey(st.ID), cur); err != nil {
		return fmt.Errorf("store subscription cursor: %w", err)
	}
	if _, err := s.kv.Create(ctx, subKey(st.ID), b); err != nil {
		return fmt.Errorf("store subscription: %w", err)
	}
	return nil
}

// Get returns subscription id and its revision.
func (s *Store) Get(ctx context.Context, id string) (*Stored, uint64, error) {
	if !validID(id) {
		return nil, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, subKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read subscription: %w", err)
	}
	st := new(Stored)
	if err := json.Unmarshal(e.Value(), st); err != nil {
		return nil, 0, fmt.Errorf("decode subscription %s: %w", id, err)
	}
	return st, e.Revision(), nil
}

// Update replaces subscription st read at revision rev.
func (s *Store) Update(ctx context.Context, st *Stored, rev uint64) (uint64, error) {
	st.Updated = s.now().UTC()
	b, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	r, err := s.kv.Update(ctx, subKey(st.ID), b, rev)
	if err != nil {
		if isWrongRev(err) {
			return 0, ErrChanged
		}
		return 0, fmt.Errorf("update subscription: %w", err)
	}
	return r, nil
}

func isWrongRev(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || errors.Is(err, jetstream.ErrKeyExists)
}

// Delete removes subscription id and its cursor.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.kv.Delete(ctx, subKey(id)); err != nil {
		return fmt.Errorf("delete subscription: %w", err)
	}
	_ = s.kv.Delete(ctx, curKey(id))
	return nil
}

// Cursor returns subscription id's cursor and its revision.
func (s *Store) Cursor(ctx context.Context, id string) (*Cursor, uint64, error) {
	e, err := s.kv.Get(ctx, curKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read cursor: %w", err)
	}
	c := new(Cursor)
	if err := json.Unmarshal(e.Value(), c); err != nil {
		return nil, 0, fmt.Errorf("decode cursor %s: %w", id, err)
	}
	return c, e.Revision(), nil
}

// PutCursor replaces the cursor read at rev (compare-and-swap: a stale
// deliverer is refused with ErrChanged).
func (s *Store) PutCursor(ctx context.Context, id string, c *Cursor, rev uint64) (uint64, error) {
	c.Version = FormatVersion
	b, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	r, err := s.kv.Update(ctx, curKey(id), b, rev)
	if err != nil {
		if isWrongRev(err) {
			return 0, ErrChanged
		}
		return 0, fmt.Errorf("store cursor: %w", err)
	}
	return r, nil
}

// WatchCursor follows subscription id's cursor.
func (s *Store) WatchCursor(ctx context.Context, id string) (jetstream.KeyWatcher, error) {
	return s.kv.Watch(ctx, curKey(id))
}

// Binding is what a websocket binding token grants.
type Binding struct {
	Subscription string    `json:"subscription"`
	Subject      string    `json:"subject"`
	Patients     []string  `json:"patients"`
	Expires      time.Time `json:"expires"`
	// CredentialExpires is when the credential that asked for the token
	// expires (zero: never): the bound socket closes then.
	CredentialExpires time.Time `json:"credential_expires"`
}

func tokenKey(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return "t." + hex.EncodeToString(sum[:])
}

// IssueToken stores a new single-use binding token for subscription id,
// valid for ttl, for principal p.
func (s *Store) IssueToken(ctx context.Context, id string, p *auth.Principal, ttl time.Duration) (string, time.Time, error) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	exp := s.now().Add(ttl).UTC().Truncate(time.Second)
	v, _ := json.Marshal(Binding{Subscription: id, Subject: p.Subject, Patients: p.Patients, Expires: exp, CredentialExpires: p.Expires})
	if _, err := s.tokens.Create(ctx, tokenKey(tok), v); err != nil {
		return "", time.Time{}, fmt.Errorf("store binding token: %w", err)
	}
	return tok, exp, nil
}

// Token errors.
var (
	ErrTokenUnknown = errors.New("unknown or already used binding token")
	ErrTokenExpired = errors.New("binding token expired")
)

// RedeemToken consumes token tok: the first caller gets its binding,
// every later one ErrTokenUnknown.
func (s *Store) RedeemToken(ctx context.Context, tok string) (*Binding, error) {
	if tok == "" || len(tok) > 256 {
		return nil, ErrTokenUnknown
	}
	k := tokenKey(tok)
	e, err := s.tokens.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, ErrTokenUnknown
	}
	if err != nil {
		return nil, fmt.Errorf("read binding token: %w", err)
	}
	// Single use: only the delete at this revision succeeds.
	if err := s.tokens.Delete(ctx, k, jetstream.LastRevision(e.Revision())); err != nil {
		if isWrongRev(err) {
			return nil, ErrTokenUnknown
		}
		return nil, fmt.Errorf("consume binding token: %w", err)
	}
	b := new(Binding)
	if err := json.Unmarshal(e.Value(), b); err != nil {
		return nil, ErrTokenUnknown
	}
	if !s.now().Before(b.Expires) {
		return nil, ErrTokenExpired
	}
	return b, nil
}
