package ingest_test

import (
	"testing"

	"radbridge/ingest"
	"radbridge/ingest/ingesttest"
)

func TestMemoryConformance(t *testing.T) {
	ingesttest.Run(t, func(*testing.T) ingest.Log { return ingest.NewMemory() })
}
