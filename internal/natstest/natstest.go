// Package natstest starts an in-process JetStream server for tests that
// need one shared by several clients (the processes of a cluster, a paused
// leader and its successor) or with server options of their own.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server starts a JetStream server on 127.0.0.1 with its store in a
// temporary directory, stopped when the test ends. maxPayload 0 keeps the
// server's default (1 MB).
func Server(t testing.TB, maxPayload int32) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1,
		NoLog: true, NoSigs: true, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}
