package subscription

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	rbv1 "radbridge/proto/radbridge/v1"
)

// Notification types (SubscriptionStatus.type).
const (
	TypeHandshake   = "handshake"
	TypeHeartbeat   = "heartbeat"
	TypeEvent       = "event-notification"
	TypeQueryStatus = "query-status"
	TypeQueryEvent  = "query-event"
)

// Numbered is one event with the number it has in a subscription. Event
// is nil when the event log no longer holds it (retention).
type Numbered struct {
	N     uint64
	Event *rbv1.Event
}

func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func focusRef(ev *rbv1.Event) string {
	if ev.GetResourceType() == "" || ev.GetResourceId() == "" {
		return ""
	}
	return ev.GetResourceType() + "/" + ev.GetResourceId()
}

// StatusParameters is the backport's SubscriptionStatus on R4: a
// Parameters resource with the backport-subscription-status-r4 profile.
func (s *Stored) StatusParameters(base, typ string, since uint64, content string, events []Numbered) map[string]any {
	params := []any{
		map[string]any{"name": "subscription", "valueReference": map[string]any{"reference": base + "/Subscription/" + s.ID}},
		map[string]any{"name": "topic", "valueCanonical": s.Topic},
		map[string]any{"name": "status", "valueCode": s.Status},
		map[string]any{"name": "type", "valueCode": typ},
		map[string]any{"name": "events-since-subscription-start", "valueString": strconv.FormatUint(since, 10)},
	}
	for _, e := range events {
		parts := []any{map[string]any{"name": "event-number", "valueString": strconv.FormatUint(e.N, 10)}}
		if e.Event != nil {
			if t := e.Event.GetTime(); t != nil {
				parts = append(parts, map[string]any{"name": "timestamp", "valueInstant": t.AsTime().UTC().Format(time.RFC3339Nano)})
			}
			if ref := focusRef(e.Event); ref != "" && content != ContentEmpty {
				parts = append(parts, map[string]any{"name": "focus", "valueReference": map[string]any{"reference": ref}})
			}
		}
		params = append(params, map[string]any{"name": "notification-event", "part": parts})
	}
	if s.Error != "" {
		params = append(params, map[string]any{"name": "error", "valueCodeableConcept": map[string]any{
			"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/subscription-error", "code": "no-response"}},
			"text":   s.Error,
		}})
	}
	return map[string]any{
		"resourceType": "Parameters",
		"id":           uuid(),
		"meta":         map[string]any{"profile": []any{ProfileStatus}},
		"parameter":    params,
	}
}

// Bundle renders a notification: a history Bundle whose first entry is
// the SubscriptionStatus, then, for id-only and full-resource content,
// one entry per event's focus (with the resource for full-resource).
func (s *Stored) Bundle(base, typ string, since uint64, content string, events []Numbered) []byte {
	status := s.StatusParameters(base, typ, since, content, events)
	entries := []any{map[string]any{
		"fullUrl":  "urn:uuid:" + status["id"].(string),
		"resource": status,
		"request":  map[string]any{"method": "GET", "url": "Subscription/" + s.ID + "/$status"},
		"response": map[string]any{"status": "200"},
	}}
	if content != ContentEmpty {
		for _, e := range events {
			ref := focusRef(e.Event)
			if ref == "" {
				continue
			}
			entry := map[string]any{
				"fullUrl":  base + "/" + ref,
				"request":  map[string]any{"method": "PUT", "url": ref},
				"response": map[string]any{"status": "200"},
			}
			if content == ContentFull && e.Event.GetResource() != nil {
				if b, err := protojson.Marshal(e.Event.GetResource()); err == nil {
					entry["resource"] = json.RawMessage(b)
				}
			}
			entries = append(entries, entry)
		}
	}
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Bundle",
		"id":           uuid(),
		"type":         "history",
		"timestamp":    time.Now().UTC().Format(time.RFC3339Nano),
		"entry":        entries,
	})
	return b
}

// StatusBundle is the answer of $status: a searchset Bundle with the
// SubscriptionStatus.
func (s *Stored) StatusBundle(base string, since uint64) []byte {
	status := s.StatusParameters(base, TypeQueryStatus, since, ContentEmpty, nil)
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Bundle",
		"id":           uuid(),
		"type":         "searchset",
		"total":        1,
		"entry": []any{map[string]any{
			"fullUrl":  "urn:uuid:" + status["id"].(string),
			"resource": status,
			"search":   map[string]any{"mode": "match"},
		}},
	})
	return b
}
