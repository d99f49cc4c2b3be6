package app

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"time"

	"radbridge/internal/config"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	"radbridge/store"
)

// mappingOptions are the mapping rules' options from the configuration.
func mappingOptions(cfg *config.Config) rules.Options {
	return rules.Options{
		HL7PatientAuthority: cfg.HL7PatientIssuer, HL7Accession: splitList(cfg.HL7Accession),
		HL7ImagingSections: splitList(cfg.HL7ImagingSections), DICOMPatientIssuer: cfg.PatientIssuer,
		QuietPeriod: cfg.StudyQuietPeriod, ViewerURL: cfg.ViewerURL, WADORSBase: cfg.WADORSBase,
		Zone:                    configZone(cfg),
		PatientIdentifierSystem: cfg.PatientSystem,
	}
}

// configZone is --timezone for records that carry no zone; nil (the
// machine's) when unset.
func configZone(cfg *config.Config) *time.Location {
	if cfg.Timezone == "" {
		return nil
	}
	loc, err := cfg.Zone()
	if err != nil {
		return nil
	}
	return loc
}

// mappingFingerprint identifies the mapping options (and dedup horizon) a
// snapshot was built with.
func mappingFingerprint(cfg *config.Config) string {
	b, _ := json.Marshal(struct {
		O            rules.Options
		DedupHorizon int64
	}{mappingOptions(cfg), int64(cfg.DedupHorizon)})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// mapperConfig is the daemon's mapper: the store's logs, read model and
// snapshots, and the configured rules.
func mapperConfig(cfg *config.Config, st *store.Store, log *slog.Logger) mapper.Config {
	return mapper.Config{
		Ingest: st.Ingest(), Events: st.Events(), ReadModel: st.Patients(), Logger: log,
		Rules:     rules.New(mappingOptions(cfg)),
		Snapshots: st.Snapshots(), SnapshotEvery: cfg.SnapshotEvery, SnapshotInterval: cfg.SnapshotInterval,
		Mapping: mappingFingerprint(cfg), DedupHorizon: cfg.DedupHorizon,
		Seen: st.Seen(), // observation keys in the store, not in memory and snapshots
		// Cold patients are evicted to the archive bucket.
		Archive: st.Archive(), StateIdle: cfg.StateIdle,
		// Records that cannot be mapped are passed over and kept.
		DeadLetters: st.DeadLetters(), MaxEventBytes: cfg.MaxEventBytes,
	}
}

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
