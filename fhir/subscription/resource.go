package subscription

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// Extension URLs of the backport IG and radbridge's own.
const (
	backportBase  = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
	ExtFilter     = backportBase + "backport-filter-criteria"
	ExtHeartbeat  = backportBase + "backport-heartbeat-period"
	ExtTimeout    = backportBase + "backport-timeout"
	ExtMaxCount   = backportBase + "backport-max-count"
	ExtContent    = backportBase + "backport-payload-content"
	ProfileSub    = backportBase + "backport-subscription"
	ProfileStatus = backportBase + "backport-subscription-status-r4"
	// ExtSecret carries the per-subscription HMAC-SHA256 secret
	// (valueString, 16 to 256 characters). It is never returned.
	ExtSecret = "https://radbridge.dev/fhir/StructureDefinition/subscription-hmac-secret"
)

// Payload contents (backport-payload-content).
const (
	ContentEmpty = "empty"
	ContentIDs   = "id-only"
	ContentFull  = "full-resource"
)

// Channel types.
const (
	ChannelRestHook  = "rest-hook"
	ChannelWebSocket = "websocket"
)

// Subscription statuses (R4).
const (
	StatusRequested = "requested"
	StatusActive    = "active"
	StatusError     = "error"
	StatusOff       = "off"
)

// Limits of a Subscription resource.
const (
	MaxBody        = 64 << 10
	maxHeaders     = 16
	maxHeaderLen   = 1024
	maxCriteria    = 8
	maxHeartbeat   = 3600
	maxTimeout     = 120
	defaultTimeout = 10
	maxMaxCount    = 100
)

// ErrInvalid wraps every reason a Subscription resource is refused (a 400
// OperationOutcome).
var ErrInvalid = errors.New("invalid Subscription")

type extension map[string]json.RawMessage

type element struct {
	ID        string      `json:"id,omitempty"`
	Extension []extension `json:"extension,omitempty"`
}

type wireChannel struct {
	ID                string            `json:"id,omitempty"`
	Extension         []extension       `json:"extension,omitempty"`
	ModifierExtension []json.RawMessage `json:"modifierExtension,omitempty"`
	Type              string            `json:"type"`
	TypeExt           *element          `json:"_type,omitempty"`
	Endpoint          string            `json:"endpoint,omitempty"`
	Payload           string            `json:"payload,omitempty"`
	PayloadExt        *element          `json:"_payload,omitempty"`
	Header            []string          `json:"header,omitempty"`
}

type wireSub struct {
	ResourceType      string            `json:"resourceType"`
	ID                string            `json:"id,omitempty"`
	Meta              json.RawMessage   `json:"meta,omitempty"`
	ImplicitRules     string            `json:"implicitRules,omitempty"`
	Language          string            `json:"language,omitempty"`
	Text              json.RawMessage   `json:"text,omitempty"`
	Contained         []json.RawMessage `json:"contained,omitempty"`
	Extension         []extension       `json:"extension,omitempty"`
	ModifierExtension []json.RawMessage `json:"modifierExtension,omitempty"`
	Status            string            `json:"status"`
	Contact           json.RawMessage   `json:"contact,omitempty"`
	End               string            `json:"end,omitempty"`
	Reason            string            `json:"reason"`
	Criteria          string            `json:"criteria"`
	CriteriaExt       *element          `json:"_criteria,omitempty"`
	Error             string            `json:"error,omitempty"`
	Channel           *wireChannel      `json:"channel"`
}

// Spec is what a client asked for: a validated Subscription.
type Spec struct {
	Topic            string   `json:"topic"`
	Criteria         []string `json:"criteria,omitempty"`
	Filters          []Filter `json:"filters,omitempty"`
	ChannelType      string   `json:"channel_type"`
	Endpoint         string   `json:"endpoint,omitempty"`
	Payload          string   `json:"payload,omitempty"`
	Content          string   `json:"content"`
	Headers          []string `json:"headers,omitempty"`
	HeartbeatSeconds int      `json:"heartbeat_seconds,omitempty"`
	TimeoutSeconds   int      `json:"timeout_seconds"`
	MaxCount         int      `json:"max_count"`
	Secret           string   `json:"secret,omitempty"`
	Reason           string   `json:"reason"`
	End              string   `json:"end,omitempty"`
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// Parse reads and validates an R4 Subscription with the backport profile.
// Every problem is an ErrInvalid naming it: a malformed resource, an
// unknown topic, an unknown filter or a bad filter value, a channel that is
// not rest-hook or websocket, an out-of-range setting.
func Parse(body []byte) (*Spec, error) {
	if len(body) > MaxBody {
		return nil, invalid("larger than %d bytes", MaxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var w wireSub
	if err := dec.Decode(&w); err != nil {
		return nil, invalid("not a Subscription resource in JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("trailing data after the resource")
	}
	if w.ResourceType != "Subscription" {
		return nil, invalid("resourceType %q: want Subscription", w.ResourceType)
	}
	if len(w.ModifierExtension) > 0 {
		return nil, invalid("modifierExtension is not supported")
	}
	switch w.Status {
	case StatusRequested, StatusActive, "":
	default:
		return nil, invalid("status %q: a new subscription is requested", w.Status)
	}
	if w.Status == "" {
		return nil, invalid("status is required (requested)")
	}
	if strings.TrimSpace(w.Reason) == "" || len(w.Reason) > 1024 {
		return nil, invalid("reason is required (at most 1024 characters)")
	}
	s := &Spec{Reason: w.Reason}
	if w.End != "" {
		t, err := time.Parse(time.RFC3339, w.End)
		if err != nil {
			return nil, invalid("end %q: want an instant (2026-12-31T23:59:59Z)", w.End)
		}
		s.End = t.UTC().Format(time.RFC3339)
	}
	t, ok := TopicByURL(w.Criteria)
	if w.Criteria == "" {
		return nil, invalid("criteria is required: a SubscriptionTopic canonical (%s…)", TopicBase)
	}
	if !ok {
		return nil, invalid("criteria %q: unknown topic (known: %s)", w.Criteria, strings.Join(Topics(), ", "))
	}
	s.Topic = t.URL
	if w.CriteriaExt != nil {
		for _, e := range w.CriteriaExt.Extension {
			u, err := extURL(e)
			if err != nil {
				return nil, err
			}
			if u != ExtFilter {
				continue
			}
			v, err := extString(e, "valueString")
			if err != nil {
				return nil, err
			}
			if len(s.Criteria) == maxCriteria {
				return nil, invalid("more than %d filter criteria", maxCriteria)
			}
			fs, err := parseCriteria(t, v)
			if err != nil {
				return nil, invalid("%v", err)
			}
			s.Criteria = append(s.Criteria, v)
			s.Filters = append(s.Filters, fs...)
		}
	}
	if t.PatientRequired && len(Patients(s.Filters)) == 0 {
		return nil, invalid("topic %s needs a patient filter (%s?patient=Patient/<id>)", t.Name, t.Resources[0])
	}
	for _, e := range w.Extension {
		u, err := extURL(e)
		if err != nil {
			return nil, err
		}
		if u == ExtSecret {
			v, err := extString(e, "valueString")
			if err != nil {
				return nil, err
			}
			if len(v) < 16 || len(v) > 256 {
				return nil, invalid("%s: the secret has 16 to 256 characters", ExtSecret)
			}
			s.Secret = v
		}
	}
	if err := s.channel(w.Channel); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Spec) channel(c *wireChannel) error {
	if c == nil {
		return invalid("channel is required")
	}
	if len(c.ModifierExtension) > 0 {
		return invalid("channel.modifierExtension is not supported")
	}
	switch c.Type {
	case ChannelRestHook:
		u, err := url.Parse(c.Endpoint)
		if c.Endpoint == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" || len(c.Endpoint) > 2048 {
			return invalid("channel.endpoint %q: a rest-hook needs an absolute http or https URL without user or fragment", c.Endpoint)
		}
		s.Endpoint = c.Endpoint
	case ChannelWebSocket:
		if c.Endpoint != "" {
			return invalid("channel.endpoint: a websocket channel has none (bind with $get-ws-binding-token)")
		}
		if len(c.Header) > 0 {
			return invalid("channel.header: a websocket channel has none")
		}
	case "":
		return invalid("channel.type is required: rest-hook or websocket")
	default:
		return invalid("channel.type %q: want rest-hook or websocket", c.Type)
	}
	s.ChannelType = c.Type
	switch c.Payload {
	case "", "application/fhir+json", "application/json":
		s.Payload = "application/fhir+json"
	default:
		return invalid("channel.payload %q: want application/fhir+json", c.Payload)
	}
	s.Content = ContentIDs
	if c.PayloadExt != nil {
		for _, e := range c.PayloadExt.Extension {
			u, err := extURL(e)
			if err != nil {
				return err
			}
			if u != ExtContent {
				continue
			}
			v, err := extString(e, "valueCode")
			if err != nil {
				return err
			}
			switch v {
			case ContentEmpty, ContentIDs, ContentFull:
				s.Content = v
			default:
				return invalid("backport-payload-content %q: want empty, id-only or full-resource", v)
			}
		}
	}
	s.TimeoutSeconds, s.MaxCount = defaultTimeout, 1
	for _, e := range c.Extension {
		u, err := extURL(e)
		if err != nil {
			return err
		}
		switch u {
		case ExtHeartbeat:
			n, err := extInt(e, "valueUnsignedInt", 0, maxHeartbeat)
			if err != nil {
				return err
			}
			s.HeartbeatSeconds = n
		case ExtTimeout:
			n, err := extInt(e, "valueUnsignedInt", 1, maxTimeout)
			if err != nil {
				return err
			}
			s.TimeoutSeconds = n
		case ExtMaxCount:
			n, err := extInt(e, "valuePositiveInt", 1, maxMaxCount)
			if err != nil {
				return err
			}
			s.MaxCount = n
		}
	}
	if len(c.Header) > maxHeaders {
		return invalid("channel.header: at most %d", maxHeaders)
	}
	for _, h := range c.Header {
		name, val, ok := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		if !ok || len(h) > maxHeaderLen || !validToken(name) || strings.ContainsAny(val, "\r\n\x00") {
			return invalid("channel.header %q: want \"Name: value\" (at most %d characters)", h, maxHeaderLen)
		}
		switch textproto.CanonicalMIMEHeaderKey(name) {
		case "Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Connection", "Te", "Upgrade", SignatureHeader:
			return invalid("channel.header %q: radbridge sets %s itself", h, name)
		}
		s.Headers = append(s.Headers, name+": "+strings.TrimSpace(val))
	}
	return nil
}

func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

func extURL(e extension) (string, error) {
	var u string
	if err := json.Unmarshal(e["url"], &u); err != nil || u == "" {
		return "", invalid("an extension without a url")
	}
	return u, nil
}

func extString(e extension, key string) (string, error) {
	u, _ := extURL(e)
	var v string
	if err := json.Unmarshal(e[key], &v); err != nil || v == "" {
		return "", invalid("extension %s: want a non-empty %s", u, key)
	}
	return v, nil
}

func extInt(e extension, key string, lo, hi int) (int, error) {
	u, _ := extURL(e)
	raw, ok := e[key]
	var n int
	if !ok || json.Unmarshal(raw, &n) != nil || n < lo || n > hi {
		return 0, invalid("extension %s: want %s from %d to %d", u, key, lo, hi)
	}
	return n, nil
}

// MaskedValue replaces the value of every channel.header line in a
// Subscription radbridge returns: the lines may carry credentials.
const MaskedValue = "***"

// maskHeaders returns the "Name: value" lines hs as "Name: ***".
func maskHeaders(hs []string) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		name, _, _ := strings.Cut(h, ":")
		out[i] = strings.TrimSpace(name) + ": " + MaskedValue
	}
	return out
}

// LogValue keeps the secret and the channel.header values out of logs.
func (s *Stored) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", s.ID), slog.String("topic", s.Topic), slog.String("channel", s.ChannelType), slog.String("status", s.Status))
}

// Resource renders stored subscription s as an R4 Subscription, as every
// answer shows it: the secret left out, each channel.header value
// replaced by MaskedValue.
func (s *Stored) Resource() map[string]any {
	ch := map[string]any{"type": s.ChannelType, "payload": s.Payload,
		"_payload": map[string]any{"extension": []any{map[string]any{"url": ExtContent, "valueCode": s.Content}}}}
	exts := []any{map[string]any{"url": ExtTimeout, "valueUnsignedInt": s.TimeoutSeconds},
		map[string]any{"url": ExtMaxCount, "valuePositiveInt": s.MaxCount}}
	if s.HeartbeatSeconds > 0 {
		exts = append([]any{map[string]any{"url": ExtHeartbeat, "valueUnsignedInt": s.HeartbeatSeconds}}, exts...)
	}
	ch["extension"] = exts
	if s.Endpoint != "" {
		ch["endpoint"] = s.Endpoint
	}
	if len(s.Headers) > 0 {
		ch["header"] = maskHeaders(s.Headers)
	}
	r := map[string]any{
		"resourceType": "Subscription",
		"id":           s.ID,
		"meta":         map[string]any{"profile": []any{ProfileSub}, "lastUpdated": s.Updated.UTC().Format(time.RFC3339Nano)},
		"status":       s.Status,
		"reason":       s.Reason,
		"criteria":     s.Topic,
		"channel":      ch,
	}
	if len(s.Criteria) > 0 {
		var fe []any
		for _, c := range s.Criteria {
			fe = append(fe, map[string]any{"url": ExtFilter, "valueString": c})
		}
		r["_criteria"] = map[string]any{"extension": fe}
	}
	if s.Error != "" {
		r["error"] = s.Error
	}
	if s.End != "" {
		r["end"] = s.End
	}
	return r
}
