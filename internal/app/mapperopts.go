package app

import (
	"radbridge/internal/config"
	"radbridge/mapper"
	"radbridge/store"
)

// CleanReplayConfig is the daemon's mapper configuration over st (rules,
// mapping options, dedup horizon) without snapshots or key store: a mapper built from it
// replays the ingest log from its first record and maps exactly as the
// daemon does. The crash test's clean replay uses it (with its own logs).
func CleanReplayConfig(cfg *config.Config, st *store.Store) mapper.Config {
	c := mapperConfig(cfg, st, nil)
	c.Snapshots = nil
	c.Seen = nil // every observation key in memory: writes nothing
	if c.StateIdle > 0 {
		c.Archive = &mapper.MemoryArchive{} // evicts as the daemon does, into memory
	} else {
		c.Archive = nil
	}
	return c
}
