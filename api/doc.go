// Package api serves the event log: the gRPC EventService (radbridge.v1),
// its REST mapping through grpc-gateway, a resumable WebSocket stream of the
// same events as JSON, and the health endpoints.
package api
