// Package subscription serves FHIR Subscriptions as the Subscriptions R5
// Backport Implementation Guide (STU 1.1,
// http://hl7.org/fhir/uv/subscriptions-backport) profiles them on FHIR R4:
// topic-based subscriptions whose criteria is a SubscriptionTopic canonical
// (see Topics), with filters in the backport-filter-criteria extension,
// delivered over a rest-hook or a websocket channel as history Bundles whose
// first entry is the backport's SubscriptionStatus Parameters.
//
// A subscription is a durable cursor over radbridge's event log: its
// resource and its cursor (the last event-log sequence examined, the last
// event number assigned, the numbers not yet delivered and a bounded map
// from event number to event-log sequence) are stored in the JetStream
// key-value bucket RADBRIDGE_FHIR_SUBSCRIPTIONS (see Stored and Cursor;
// golden files in testdata/stored). An event number is assigned, and
// stored, before the notification carrying it is sent, so a notification
// sent again after a crash or a failover carries the same number, and the
// numbers of a subscription have no gaps. One process delivers (the
// engine runs under a lease in a cluster); any process serves the HTTP
// operations and websocket bindings, which follow the cursor in the bucket.
//
// HTTP (mounted under /fhir): POST/GET/DELETE Subscription,
// Subscription/{id}/$status, $events and $get-ws-binding-token; the
// websocket endpoint (/fhir/ws) takes "bind-with-token <token>" in plain
// text or {"type":"bind-with-token","payload":{"token":…}}.
package subscription
