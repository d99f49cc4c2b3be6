package cli_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"

	"radbridge/internal/app"
	"radbridge/internal/testkit/inproc"
)

// studyUID is the study the client-command tests send.
const studyUID = "1.2.826.0.1.3680043.10.1447.77"

// startDaemon runs the daemon in this process on data directory dir with
// the flags extra, until the test ends.
func startDaemon(t *testing.T, dir string, extra ...string) *app.Daemon {
	t.Helper()
	return inproc.Start(t, dir, nil, extra...).Daemon
}

// runApp runs a radbridge command in-process.
func runApp(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return inproc.Run(t, args...)
}

// bearerCtx carries token as a gRPC call's bearer token.
func bearerCtx(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}
