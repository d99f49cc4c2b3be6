// Package store keeps radbridge's durable state in NATS JetStream: the ingest
// log (observations, deduplicated by key), the event log (its stream sequence
// is the event sequence) and a key-value bucket of mapper state. JetStream
// runs embedded in the process by default, in the data directory, or is
// reached at an external URL (a server or a cluster with replicated streams).
package store

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"radbridge/leader"
	"radbridge/mapper"
)

// Stream and bucket names.
const (
	IngestStream  = "RADBRIDGE_INGEST"
	EventsStream  = "RADBRIDGE_EVENTS"
	StateBucket   = "RADBRIDGE_STATE"
	LeaseBucket   = "RADBRIDGE_LEASES"
	ingestSubject = "rb.in"
	markerFile    = "radbridge.json"
	formatVersion = 1
)

// MaxPayload is the largest message the embedded JetStream takes (NATS
// defaults to 1 MB). A patient's read model is one value of at most 64 KB
// or, for a bigger patient, a manifest (about 100 bytes per resource) and
// one value per resource (Patients), so 1 MB holds a
// study of about 6,000 instances or a patient of about 10,000 resources;
// the embedded server takes more for the rare bigger ones (the read model
// used to be one value per patient, past 1 MB with a hundred studies).
// Open warns when an external server takes less.
const MaxPayload = 8 << 20

// EventsDuplicateWindow bounds how long the event log remembers event keys
// (JetStream keeps every message id of its duplicate window in memory,
// about 110 bytes each). An event key only makes a retried append of the
// mapper idempotent, within seconds; a retry later than this is refused by
// the expected-last-sequence check instead (eventlog.ErrConflict), never
// appended twice. The ingest log keeps --duplicate-window: resends from
// peers come minutes later.
const EventsDuplicateWindow = 2 * time.Minute

// Config says where the store lives.
type Config struct {
	// DataDir holds the embedded JetStream files. Required without NATSURL.
	DataDir string
	// NATSURL, when set, connects to an external JetStream instead.
	NATSURL string
	// Replicas of each stream on an external cluster (1 when embedded).
	Replicas int
	// SyncAlways fsyncs every write before it is acknowledged (embedded).
	SyncAlways bool
	// GroupCommit (with SyncAlways, embedded only) makes ingest appends
	// durable by group commit: one fsync for every append waiting, each
	// returning only once its own record is durable; the derived streams
	// are fsynced at SyncInterval and at snapshots (see groupcommit.go).
	GroupCommit bool
	// SyncInterval is how often JetStream fsyncs what it did not fsync
	// per write (group commit, or SyncAlways off); 0: 1 s with group
	// commit, JetStream's default (2 min) otherwise.
	SyncInterval time.Duration
	// DuplicateWindow is how long the ingest log remembers keys.
	DuplicateWindow time.Duration
	// Logger receives the store's operational messages.
	Logger *slog.Logger

	// Retention of the event log (JetStream MaxAge and MaxBytes of the
	// events stream); 0 keeps events forever. The ingest log is trimmed by
	// radbridge itself (IngestLog.Trim), never beyond the snapshots.
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	// TLS, when set, secures the connection to an external NATS (a
	// tls:// URL, or a server that requires TLS).
	TLS *tls.Config
	// CredsFile, when set, authenticates to an external NATS with a user
	// JWT and NKey seed (a .creds file).
	CredsFile string
	// SeenMaxAge is the age (by the log times of the keys written) at which
	// the mapper's observation keys are pruned from their bucket (see
	// SeenMaxAge); 0 keeps them.
	SeenMaxAge time.Duration
	// MaxStoreBytes, when set, is the embedded store's disk quota; 0
	// follows the disk (see health.go).
	MaxStoreBytes int64
	// CheckInterval is how often the quota is re-evaluated and the store
	// probed for writability (MonitorWrites); default 10 s.
	CheckInterval time.Duration
}

// Store is an open store.
type Store struct {
	ns     *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	ingest *IngestLog
	events *EventLog
	kv     jetstream.KeyValue
	// noMarkerTTL: the server cannot expire purge markers (before 2.11).
	noMarkerTTL bool
	seen        jetstream.KeyValue
	// seenMaxAge prunes observation keys by log time (Config.SeenMaxAge).
	seenMaxAge time.Duration
	// archive holds the patients the mapper evicted (see Archive).
	archive jetstream.KeyValue
	// dead holds the dead letters (see DeadLetters).
	dead jetstream.KeyValue
	obs  jetstream.ObjectStore
	lock *os.File
	once sync.Once

	patientsOnce sync.Once
	patients     *Patients

	replicas int

	// mpps holds the MPPS step states (see Steps).
	mpps   jetstream.KeyValue
	health health

	// group commit (Config.GroupCommit): the JetStream directory, and the
	// MPPS bucket's syncer (its states are answered to a peer).
	groupDir string
	mppsSync *blockSyncer
}

type marker struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	// Creating is set while the first start creates the store and cleared
	// once the streams exist. A first start killed in between (kill -9,
	// power loss: nothing was acknowledged yet) is finished by the next
	// start instead of leaving a directory radbridge refuses.
	Creating bool `json:"creating,omitempty"`
}

// ErrDataDir wraps every problem with the data directory.
var ErrDataDir = errors.New("data directory")

// Open opens (and on first use creates) the store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = 10 * time.Minute
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 10 * time.Second
	}
	if !cfg.SyncAlways || cfg.NATSURL != "" {
		cfg.GroupCommit = false
	}
	if cfg.GroupCommit && cfg.SyncInterval <= 0 {
		cfg.SyncInterval = time.Second
	}
	s := &Store{}
	s.health.explicit, s.health.interval = cfg.MaxStoreBytes, cfg.CheckInterval
	fresh := true
	if cfg.NATSURL == "" {
		var err error
		fresh, err = prepareDataDir(cfg.DataDir, cfg.Logger)
		if err != nil {
			return nil, err
		}
		// One process at a time: a daemon, or radbridge replay.
		if s.lock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		s.ns, err = startEmbedded(cfg)
		if err != nil {
			s.lock.Close()
			return nil, fmt.Errorf("%w %s: start embedded JetStream: %w", ErrDataDir, cfg.DataDir, err)
		}
		s.nc, err = nats.Connect("", nats.InProcessServer(s.ns), nats.Name("radbridge"))
		if err != nil {
			s.ns.Shutdown()
			s.lock.Close()
			return nil, fmt.Errorf("connect to embedded JetStream: %w", err)
		}
		cfg.Replicas = 1
		if cfg.GroupCommit {
			// JetStream's own directory (it adds "jetstream" to StoreDir).
			s.groupDir = s.ns.JetStreamConfig().StoreDir
		}
	} else {
		var err error
		opts := []nats.Option{nats.Name("radbridge"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
		if cfg.TLS != nil {
			opts = append(opts, nats.Secure(cfg.TLS))
		}
		if cfg.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(cfg.CredsFile))
		}
		s.nc, err = nats.Connect(cfg.NATSURL, opts...)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS %s: %w", RedactURLs(cfg.NATSURL), err)
		}
		fresh = false
		if mp := s.nc.MaxPayload(); mp < MaxPayload {
			cfg.Logger.Warn("the NATS server's max_payload is below 8 MB: a patient read-model resource larger than it (a study of more than about 6,000 instances per MB) will not be written; set max_payload: 8MB", "component", "store", "max_payload", mp)
		}
	}
	s.replicas = cfg.Replicas
	var err error
	s.js, err = jetstream.New(s.nc)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	if err := s.ensureRetry(ctx, cfg, fresh); err != nil {
		s.Close()
		return nil, err
	}
	if s.groupDir != "" {
		// The stream and bucket files JetStream created without fsync.
		if err := syncAll(s.groupDir); err != nil {
			s.Close()
			return nil, fmt.Errorf("%w %s: fsync: %w", ErrDataDir, cfg.DataDir, err)
		}
	}
	if cfg.NATSURL == "" && fresh {
		if err := writeMarker(cfg.DataDir, false); err != nil {
			s.Close()
			return nil, err
		}
	}
	if cfg.NATSURL == "" {
		s.health.dir = cfg.DataDir
	}
	s.CheckWrites(ctx)
	return s, nil
}

// prepareDataDir checks dir and reports whether it is new. It creates the
// directory itself but never its parents, so a missing mount point is an
// error instead of a silent new store on the wrong disk.
func prepareDataDir(dir string, log *slog.Logger) (fresh bool, err error) {
	if dir == "" {
		return false, fmt.Errorf("%w: no path configured", ErrDataDir)
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dir, 0o750); err != nil {
			return false, fmt.Errorf("%w %s: create: %w", ErrDataDir, dir, err)
		}
		log.Info("created data directory", "path", dir)
		return true, writeMarker(dir, true)
	case err != nil:
		return false, fmt.Errorf("%w %s: %w", ErrDataDir, dir, err)
	case !st.IsDir():
		return false, fmt.Errorf("%w %s: not a directory", ErrDataDir, dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, markerFile))
	if errors.Is(err, fs.ErrNotExist) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return false, fmt.Errorf("%w %s: %w", ErrDataDir, dir, err)
		}
		for _, e := range entries {
			// The lock file, and the temporary marker of a first start
			// killed while it wrote its first marker, are no data.
			if n := e.Name(); n != LockFile && n != markerFile+".tmp" {
				return false, fmt.Errorf("%w %s: not empty and has no %s: not a radbridge data directory (or it was damaged); refusing to use it", ErrDataDir, dir, markerFile)
			}
		}
		return true, writeMarker(dir, true)
	}
	if err != nil {
		return false, fmt.Errorf("%w %s: %w", ErrDataDir, dir, err)
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil {
		return false, fmt.Errorf("%w %s: %s is corrupt: %w", ErrDataDir, dir, markerFile, err)
	}
	if m.Format != formatVersion {
		return false, fmt.Errorf("%w %s: format %d, this radbridge reads format %d", ErrDataDir, dir, m.Format, formatVersion)
	}
	if m.Creating {
		log.Warn("the first start on this data directory was interrupted before the store was created; creating it now", "path", dir)
		return true, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		return false, fmt.Errorf("%w %s: jetstream directory missing: the store was moved or deleted; refusing to start empty", ErrDataDir, dir)
	}
	return false, nil
}

// writeMarker replaces the marker file atomically and durably: written to a
// temporary file, fsynced, renamed, and the directory fsynced.
func writeMarker(dir string, creating bool) error {
	b, _ := json.Marshal(marker{Format: formatVersion, Created: time.Now().UTC(), Creating: creating})
	tmp := filepath.Join(dir, markerFile+".tmp")
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, markerFile)); err != nil {
			return err
		}
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}()
	if err != nil {
		return fmt.Errorf("%w %s: write %s: %w", ErrDataDir, dir, markerFile, err)
	}
	return nil
}

func startEmbedded(cfg Config) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "radbridge",
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		DontListen: true,
		NoSigs:     true,
		NoLog:      true,
		// With group commit radbridge fsyncs (groupcommit.go).
		SyncAlways:   cfg.SyncAlways && !cfg.GroupCommit,
		SyncInterval: cfg.SyncInterval,
		MaxPayload:   MaxPayload,
		// The server's own limit; the quota that binds is the account's,
		// following the disk (health.go), unless MaxStoreBytes is set.
		JetStreamMaxStore: embeddedMaxStore(cfg),
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("not ready after 30s")
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, errors.New("JetStream did not start (is the directory writable and not used by another process?)")
	}
	return ns, nil
}

// ensureRetry creates or opens the streams. An external JetStream cluster
// that is still forming (no metadata leader, too few peers for the
// replicas) is waited for, up to a minute.
func (s *Store) ensureRetry(ctx context.Context, cfg Config, fresh bool) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := s.ensure(ctx, cfg, fresh)
		if err == nil || cfg.NATSURL == "" || errors.Is(err, ErrDataDir) || time.Now().After(deadline) {
			return err
		}
		cfg.Logger.Warn("JetStream not ready; retrying", "component", "store", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) ensure(ctx context.Context, cfg Config, fresh bool) error {
	streams := []jetstream.StreamConfig{
		{
			Name:        IngestStream,
			Description: "radbridge observations, in arrival order",
			Subjects:    []string{ingestSubject + ".>"},
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Duplicates:  cfg.DuplicateWindow,
			AllowDirect: true,
		},
		{
			Name:        EventsStream,
			Description: "radbridge events; the stream sequence is the event sequence",
			Subjects:    []string{"rb.ev.>"},
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Duplicates:  min(cfg.DuplicateWindow, EventsDuplicateWindow),
			AllowDirect: true,
			MaxAge:      cfg.EventsMaxAge,
			MaxBytes:    maxBytes(cfg.EventsMaxBytes),
		},
	}
	for _, sc := range streams {
		if !fresh {
			if _, err := s.js.Stream(ctx, sc.Name); errors.Is(err, jetstream.ErrStreamNotFound) && cfg.NATSURL == "" {
				return fmt.Errorf("%w %s: stream %s is missing: the store is damaged; refusing to start empty", ErrDataDir, cfg.DataDir, sc.Name)
			}
		}
		st, err := withPlacementRetry(ctx, func() (jetstream.Stream, error) { return s.js.CreateOrUpdateStream(ctx, sc) })
		if err != nil {
			return fmt.Errorf("create stream %s: %w", sc.Name, err)
		}
		switch sc.Name {
		case IngestStream:
			s.ingest = &IngestLog{js: s.js, stream: st}
			if s.groupDir != "" {
				s.ingest.sync = newBlockSyncer(s.groupDir, IngestStream)
				s.ingest.sync.afterSync = killAfterGroupCommits()
			}
		case EventsStream:
			s.events = &EventLog{js: s.js, stream: st}
			if s.groupDir != "" {
				s.events.sync = newBlockSyncer(s.groupDir, EventsStream)
			}
		}
	}
	stateCfg := jetstream.KeyValueConfig{
		Bucket:      StateBucket,
		Description: "radbridge mapper state (a projection of the ingest log)",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     1,
		// Markers may expire: superseded read-model resources are
		// purged with markers that expire (Patients). Added to buckets
		// created before (message TTLs can be enabled on a stream).
		LimitMarkerTTL: purgeMarkerTTL,
	}
	kv, err := s.createKV(ctx, stateCfg)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		// A NATS server before 2.11: purge markers stay (about 200
		// bytes per superseded resource value).
		cfg.Logger.Warn("the NATS server does not support message TTLs (2.11 or later does): each superseded patient read-model resource leaves a small purge marker in the state bucket", "component", "store")
		stateCfg.LimitMarkerTTL = 0
		kv, err = s.createKV(ctx, stateCfg)
		s.noMarkerTTL = true
	}
	if err != nil {
		return fmt.Errorf("create state bucket: %w", err)
	}
	s.kv = kv
	seen, err := s.createKV(ctx, jetstream.KeyValueConfig{
		Bucket:      SeenBucket,
		Description: "radbridge mapper observation keys (the dedup set), by hash of the key",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("create observation key bucket: %w", err)
	}
	s.seen, s.seenMaxAge = seen, cfg.SeenMaxAge
	archive, err := s.createKV(ctx, jetstream.KeyValueConfig{
		Bucket:      ArchiveBucket,
		Description: "radbridge mapper state of patients evicted from memory (versions and index)",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     mapper.ArchiveVersions,
	})
	if err != nil {
		return fmt.Errorf("create archive bucket: %w", err)
	}
	s.archive = archive
	dead, err := s.createKV(ctx, jetstream.KeyValueConfig{
		Bucket:      DeadLetterBucket,
		Description: "radbridge ingest records the mapper passed over, with the reason (see mapper.DeadLetter)",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("create dead-letter bucket: %w", err)
	}
	s.dead = dead
	mpps, err := s.createKV(ctx, jetstream.KeyValueConfig{
		Bucket:      MPPSBucket,
		Description: "radbridge MPPS step states, as the DICOM SCP accepted them",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     1,
		TTL:         MPPSStepTTL,
	})
	if err != nil {
		return fmt.Errorf("create MPPS step bucket: %w", err)
	}
	s.mpps = mpps
	if s.groupDir != "" {
		s.mppsSync = newBlockSyncer(s.groupDir, "KV_"+MPPSBucket)
	}
	obs, err := withPlacementRetry(ctx, func() (jetstream.ObjectStore, error) {
		return s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      SnapshotBucket,
			Description: "radbridge mapper snapshots (the state at an ingest sequence)",
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
		})
	})
	if err != nil {
		return fmt.Errorf("create snapshot bucket: %w", err)
	}
	s.obs = obs
	return nil
}

// Leases opens the leader-election bucket, whose entries expire after
// lease. Every process of a cluster must use the same lease.
func (s *Store) Leases(ctx context.Context, lease time.Duration) (jetstream.KeyValue, error) {
	return leader.Bucket(ctx, s.js, LeaseBucket, s.replicas, lease)
}

// maxBytes maps 0 (keep everything) to JetStream's unlimited.
func maxBytes(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// RedactURLs drops the user information (passwords, tokens) from a
// comma-separated list of NATS URLs, for logs, errors and status.
func RedactURLs(s string) string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		u = strings.TrimSpace(u)
		scheme, rest, ok := strings.Cut(u, "://")
		if !ok {
			scheme, rest = "", u
		}
		authority, path, _ := strings.Cut(rest, "/")
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			rest = authority[at+1:]
			if path != "" || strings.HasSuffix(u, "/") {
				rest += "/" + path
			}
		}
		if ok {
			rest = scheme + "://" + rest
		}
		out = append(out, rest)
	}
	return strings.Join(out, ",")
}

// Ingest returns the ingest log.
func (s *Store) Ingest() *IngestLog { return s.ingest }

// Events returns the event log.
func (s *Store) Events() *EventLog { return s.events }

// State returns the key-value state bucket.
func (s *Store) State() jetstream.KeyValue { return s.kv }

// Healthy reports whether the store's connection is usable.
func (s *Store) Healthy() bool { return s.nc != nil && s.nc.IsConnected() }

// Close closes the connection and stops the embedded server. It is safe to
// call more than once.
func (s *Store) Close() {
	s.once.Do(func() {
		if s.nc != nil {
			_ = s.nc.FlushTimeout(2 * time.Second)
			s.nc.Close()
		}
		if s.ns != nil {
			s.ns.Shutdown()
			s.ns.WaitForShutdown()
		}
		if s.lock != nil {
			s.lock.Close()
		}
	})
}

// createKV is CreateOrUpdateKeyValue through withPlacementRetry.
func (s *Store) createKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return withPlacementRetry(ctx, func() (jetstream.KeyValue, error) { return s.js.CreateOrUpdateKeyValue(ctx, cfg) })
}

// withPlacementRetry runs create (a stream or bucket creation) again, for
// up to 15 s, while a cluster answers that it has no peers to place it on
// (JetStream error 10005: a server of the cluster still starting or
// reconnecting its routes), instead of failing the daemon's start on it.
// Any other answer is returned at once.
func withPlacementRetry[T any](ctx context.Context, create func() (T, error)) (T, error) {
	deadline := time.Now().Add(15 * time.Second)
	wait := 100 * time.Millisecond
	for {
		v, err := create()
		var apiErr *jetstream.APIError
		if err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != 10005 || time.Now().Add(wait).After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait): // a bounded retry of the server's answer
		}
		wait = min(2*wait, time.Second)
	}
}
