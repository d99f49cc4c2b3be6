package mapper_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"radbridge/mapper/rules"
)

// TestViewedAgent: the AuditEvent's agent is the authenticated subject;
// the client's viewer name and id are extra information. A record without
// a subject (written before it was recorded) maps as it did.
func TestViewedAgent(t *testing.T) {
	r := fhirRunAll(t)
	agents := map[string]any{}
	for _, e := range r.events {
		if e.ev.ResourceType == "AuditEvent" {
			agents[e.name] = e.ev.Resource.AsMap()["agent"]
		}
	}
	want := map[string]any{
		"viewed": []any{map[string]any{"requestor": true, "who": map[string]any{
			"display": "Dr Pat Radiologist", "identifier": map[string]any{"value": "u-1234"}}}},
		"viewed anonymously": []any{map[string]any{"requestor": true, "who": map[string]any{"display": "unknown viewer"}}},
		"viewed by an authenticated subject": []any{map[string]any{"requestor": true, "name": "Dr Pat Radiologist", "altId": "u-1234",
			"who": map[string]any{"display": "ward-tablet", "identifier": map[string]any{"system": rules.SubjectSystem, "value": "ward-tablet"}}}},
	}
	if diff := cmp.Diff(agents, want); diff != "" {
		t.Errorf("agents (-got +want):\n%s", diff)
	}
}
