package eventlog_test

import (
	"testing"

	"radbridge/eventlog"
	"radbridge/eventlog/eventlogtest"
)

func TestMemoryConformance(t *testing.T) {
	eventlogtest.Run(t, func(*testing.T) eventlog.Log { return eventlog.NewMemory() })
}
