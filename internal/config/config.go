// Package config loads radbridge's configuration from, in rising order of
// precedence, built-in defaults, an optional YAML file (--config), RADBRIDGE_*
// environment variables and command-line flags, and validates it.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"radbridge/fhir/subscription"
)

// Config is the daemon's configuration.
type Config struct {
	ConfigFile string

	DataDir         string
	NATSURL         string
	NATSReplicas    int
	Fsync           bool
	DuplicateWindow time.Duration
	// GroupCommit: with Fsync, ingest appends share fsyncs.
	GroupCommit bool

	GRPCAddr string
	HTTPAddr string

	MLLPAddr           string
	MLLPMaxMessage     int
	MLLPMaxConnections int
	MLLPReadTimeout    time.Duration
	MLLPIdleTimeout    time.Duration
	HL7PatientIssuer   string
	HL7Accession       string
	HL7ImagingSections string

	DICOMAddr            string
	AETitle              string
	DICOMAllowedCallers  string
	DICOMMaxAssociations int
	DICOMMaxPDU          int
	DICOMIdleTimeout     time.Duration
	StoreDir             string
	StudyQuietPeriod     time.Duration
	PatientIssuer        string
	PatientSystem        string
	ViewerURL            string
	WADORSBase           string

	Heartbeat      time.Duration
	WindowEvents   int
	WindowBytes    int
	WSWriteTimeout time.Duration

	ShutdownTimeout time.Duration

	Auth            string
	AuthTokensFile  string
	AuthJWTKeyFile  string
	AuthJWKSFile    string
	AuthJWTIssuer   string
	AuthJWTAudience string
	AllowedOrigins  string
	TrustedProxies  string
	PublicBaseURL   string

	LogFormat      string
	LogLevel       string
	LogPatientData bool

	// Clustering (several processes on one external JetStream).
	NodeID      string
	LeaderLease time.Duration
	// The connection to an external NATS.
	NATSTLSCAFile   string
	NATSTLSCertFile string
	NATSTLSKeyFile  string
	NATSCredsFile   string

	// Observability (metrics and status).
	MetricsAddr     string
	OTelEndpoint    string
	OTelSampleRatio float64

	// Hostile peers: per-host limits and the setup deadlines of each front.
	MLLPMaxConnectionsPerHost   int
	DICOMMaxAssociationsPerHost int
	DICOMARTIMTimeout           time.Duration
	HTTPReadHeaderTimeout       time.Duration

	// HTTP connection limit: connections open at once on each of
	// --http-addr and --https-addr (0: no limit).
	HTTPMaxConnections int

	// TLS: one certificate for every front, reloaded when its
	// files change; per-front TLS listeners (empty = off) and client
	// subject allow-lists for mutual TLS.
	TLSCertFile             string
	TLSKeyFile              string
	TLSClientCAFile         string
	MLLPTLSAddr             string
	DICOMTLSAddr            string
	GRPCTLSAddr             string
	HTTPSAddr               string
	MLLPTLSAllowedSubjects  string
	DICOMTLSAllowedSubjects string
	GRPCTLSAllowedSubjects  string
	HTTPSAllowedSubjects    string
	TLSHandshakeTimeout     time.Duration
	// Mapper snapshots and log retention (operations).
	SnapshotEvery     int
	MaxEventBytes     int
	SnapshotInterval  time.Duration
	DedupHorizon      time.Duration
	EventsMaxAge      time.Duration
	EventsMaxBytes    int64
	IngestMaxAge      time.Duration
	IngestMaxBytes    int64
	RetentionInterval time.Duration
	RetentionMargin   float64
	// Mapper memory: patients idle this long (log time) are evicted to the
	// archive bucket (0: never).
	StateIdle time.Duration
	// Exceptions worklist: a study without an order for this
	// long, an order without images this long past its scheduled time.
	ExceptionsUnorderedAfter time.Duration
	ExceptionsOrderGrace     time.Duration
	// Timezone is the IANA zone of times received without an offset
	// (HL7 TS/DTM, DICOM DA/TM without (0008,0201)); Validate sets it to
	// the host's when empty.
	Timezone string
	// Per-input caps: what one message, request or file may
	// cost, each refused with the protocol's own answer.
	HL7MaxOrderGroups  int
	STOWMaxParts       int
	DICOMMaxElements   int
	ThumbnailMaxPixels int64
	// Storage health: the embedded store's quota (0: follow the
	// disk) and how often it and the writability of the store are checked.
	StoreMaxBytes      int64
	StoreCheckInterval time.Duration
	// FHIR Subscriptions: on/off, the rest-hook allow-list and
	// retry policy, the websocket binding token lifetime.
	FHIRSubscriptions       bool
	FHIRRestHookAllow       string
	FHIRRestHookMaxFailures int
	FHIRRestHookRetryBase   time.Duration
	FHIRWSBindingTokenTTL   time.Duration
	// FHIR Subscriptions: caps per token subject and in total.
	FHIRSubscriptionsPerSubject int
	FHIRSubscriptionsMax        int
	// Safe defaults: with --auth none, HTTP and gRPC listen on
	// loopback only unless this is set.
	AllowUnauthenticatedRemote bool
	// WebSocket URL credentials, each opt-in: single-use
	// tickets from POST /v1/ws-tickets as /ws?ticket=, and bearer tokens
	// as /ws?token=.
	WSTickets   bool
	WSTicketTTL time.Duration
	WSURLToken  bool
	// JWKS from an identity provider's https URL.
	AuthJWKSURL        string
	AuthJWKSCAFile     string
	AuthJWKSRefresh    time.Duration
	AuthJWKSMinRefetch time.Duration
}

// The default HTTP and gRPC listen addresses: loopback, so that a daemon
// started without --auth is not readable from the network.
const (
	DefaultHTTPAddr = "127.0.0.1:8080"
	DefaultGRPCAddr = "127.0.0.1:9090"
)

// EnvPrefix prefixes every environment variable.
const EnvPrefix = "RADBRIDGE_"

// EnvName is the environment variable of flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// FlagSet returns the serve flags bound to c, with defaults set.
func (c *Config) FlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.ConfigFile, "config", "", "YAML configuration file (keys are flag names)")
	fs.StringVar(&c.DataDir, "data-dir", "./radbridge-data", "directory of the embedded store (created if missing; its parent must exist)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "external NATS JetStream URL(s), comma-separated; empty runs JetStream embedded")
	fs.IntVar(&c.NATSReplicas, "nats-replicas", 1, "stream replicas on an external JetStream cluster (1-5)")
	fs.BoolVar(&c.Fsync, "fsync", true, "fsync every write before acknowledging it (embedded store); false trades durability on power loss for throughput")
	fs.BoolVar(&c.GroupCommit, "group-commit", true, "with --fsync on the embedded store: concurrent ingest appends share one fsync (group commit), each acknowledged only once its own record is durable; events are fsynced per append, read models and other state every second and before each snapshot; false fsyncs every write on its own")
	fs.DurationVar(&c.DuplicateWindow, "duplicate-window", 10*time.Minute, "how long the ingest log deduplicates resent observations by key (the mapper ignores older repeats too)")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", DefaultGRPCAddr, "gRPC listen address (loopback by default; :9090 listens on every interface, which needs --auth); empty turns the plain-text listener off")
	fs.StringVar(&c.HTTPAddr, "http-addr", DefaultHTTPAddr, "HTTP listen address (REST, WebSocket, health; loopback by default; :8080 listens on every interface, which needs --auth); empty turns the plain-text listener off")
	fs.StringVar(&c.MLLPAddr, "mllp-addr", ":2575", "HL7 v2 MLLP listen address; empty turns the listener off")
	fs.IntVar(&c.MLLPMaxMessage, "mllp-max-message", 1<<20, "largest HL7 message in bytes; a larger frame is answered AR and the connection closed")
	fs.IntVar(&c.MLLPMaxConnections, "mllp-max-connections", 256, "concurrent MLLP connections")
	fs.DurationVar(&c.MLLPReadTimeout, "mllp-read-timeout", 30*time.Second, "time to finish a started MLLP frame")
	fs.DurationVar(&c.MLLPIdleTimeout, "mllp-idle-timeout", 5*time.Minute, "idle time before an MLLP connection is closed")
	fs.StringVar(&c.HL7PatientIssuer, "hl7-patient-authority", "", "PID-3 assigning authority (CX-4) whose identifier is the patient id; empty takes the first PID-3 repetition of identifier type (CX-5) MR, else the first")
	fs.StringVar(&c.HL7Accession, "hl7-accession", "OBR-18,IPC-1,ORC-3,OBR-3", "where to find the accession number, in order of precedence (OBR-18, IPC-1, ORC-3, OBR-3; never the placer number)")
	fs.StringVar(&c.HL7ImagingSections, "hl7-imaging-sections", "RAD,RX,CT,MR,MRI,US,NM,XR,CR,DX,MG,PT,PET,IR,VUS,CUS,RUS,OUS,BD,FL,AN", "OBR-24 diagnostic service sections that are imaging; other orders and results are acknowledged and counted but make no events; empty counts everything as imaging")
	fs.StringVar(&c.DICOMAddr, "dicom-addr", ":11112", "DICOM listen address; empty turns the listener off")
	fs.StringVar(&c.AETitle, "ae-title", "RADBRIDGE", "our (called) AE title")
	fs.StringVar(&c.DICOMAllowedCallers, "dicom-allowed-callers", "", "comma-separated calling AE titles allowed to associate, each optionally AE@ip; empty allows any")
	fs.IntVar(&c.DICOMMaxAssociations, "dicom-max-associations", 32, "concurrent DICOM associations")
	fs.IntVar(&c.DICOMMaxPDU, "dicom-max-pdu", 65536, "maximum PDU length we receive (advertised in A-ASSOCIATE-AC)")
	fs.DurationVar(&c.DICOMIdleTimeout, "dicom-idle-timeout", 5*time.Minute, "idle time before an association is aborted")
	fs.StringVar(&c.StoreDir, "store-dir", "", "when set, every received instance is also written there as a Part-10 file (<study>/<series>/<sop>.dcm)")
	fs.DurationVar(&c.StudyQuietPeriod, "study-quiet-period", 10*time.Second, "a study with no new instance for this long is complete (IMAGING_STUDY_AVAILABLE, or UPDATED after that)")
	fs.StringVar(&c.PatientIssuer, "dicom-patient-issuer", "", "Issuer of Patient ID whose PatientID is the hospital MRN; empty takes PatientID whatever its issuer")
	fs.StringVar(&c.PatientSystem, "patient-identifier-system", "", "FHIR identifier system (an absolute URI, e.g. urn:oid:1.2.3 or https://hospital.example/mrn) of the hospital MRN, the subject.identifier.system from HL7 and DICOM alike; empty: urn:oid:<authority> or urn:hl7v2:assigning-authority:<authority> of --hl7-patient-authority (else --dicom-patient-issuer), urn:radbridge:patient-id without either")
	fs.StringVar(&c.ViewerURL, "viewer-url", "", "image viewer link of a study, a template with {{study}}, {{accession}} and {{patient}} (URL-escaped), e.g. https://viewer.example/viewer?StudyInstanceUIDs={{study}}; empty: no link")
	fs.StringVar(&c.WADORSBase, "wado-rs-base", "", "DICOMweb WADO-RS base URL the studies can be retrieved from (a FHIR Endpoint on each ImagingStudy), e.g. https://pacs.example/dicom-web; empty: none")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 30*time.Second, "default idle time between heartbeats on event streams")
	fs.IntVar(&c.WindowEvents, "subscriber-window", 8192, "events kept in memory for live subscribers; one that falls further behind is disconnected and resumes from its cursor")
	fs.IntVar(&c.WindowBytes, "subscriber-window-bytes", 64<<20, "bytes kept in memory for live subscribers")
	fs.DurationVar(&c.WSWriteTimeout, "ws-write-timeout", 10*time.Second, "time a WebSocket client has to take one message")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "time to drain connections on shutdown")
	fs.StringVar(&c.Auth, "auth", "none", "client authentication: none (anyone on the network may read; local use), tokens (static bearer tokens from --auth-tokens-file) or jwt (signed JWTs, key from --auth-jwt-key-file or --auth-jwks-file)")
	fs.StringVar(&c.AuthTokensFile, "auth-tokens-file", "", "static tokens for --auth tokens: one a line, TOKEN [SUBJECT] [patient=ID,ID...]; # comments")
	fs.StringVar(&c.AuthJWTKeyFile, "auth-jwt-key-file", "", "--auth jwt key: an HS256 secret (the file's bytes, at least 32) or a PEM public key or certificate (RSA: RS256, EC P-256: ES256)")
	fs.StringVar(&c.AuthJWKSFile, "auth-jwks-file", "", "--auth jwt keys: a JWKS (JSON) file of RSA and EC P-256 public keys, chosen by kid")
	fs.StringVar(&c.AuthJWTIssuer, "auth-jwt-issuer", "", "when set, a JWT's iss must equal it")
	fs.StringVar(&c.AuthJWTAudience, "auth-jwt-audience", "", "when set, a JWT's aud is required and must contain it")
	fs.StringVar(&c.AllowedOrigins, "allowed-origins", "", "comma-separated origins (host patterns like ehr.example.org or *.example.org, or https://host) whose pages may open WebSockets; empty allows the same origin only")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", "", "comma-separated IP addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For (HTTP, gRPC metadata) is believed for the client address recorded with a viewed event; empty: the peer's address, always")
	fs.StringVar(&c.PublicBaseURL, "public-base-url", "", "the URL clients reach the HTTP front at (https://radbridge.example.org), for the RetrieveURLs of STOW-RS answers; empty: answers carry no RetrieveURL")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&c.LogPatientData, "log-patient-data", false, "log patient data (names, ids, message bodies); off by default")
	// Clustering: with --nats-url, every process receives and serves; one
	// at a time (the leader) runs the mapper.
	fs.StringVar(&c.NodeID, "node-id", "", "this process's name in a cluster (status, leader election); empty: hostname and a random suffix")
	fs.DurationVar(&c.LeaderLease, "leader-lease", 10*time.Second, "with --nats-url: the mapper leader's lease; a dead leader is replaced after at most this long")
	fs.StringVar(&c.NATSTLSCAFile, "nats-tls-ca-file", "", "with --nats-url: PEM CA certificates that sign the NATS servers' certificates (the connection then uses TLS; tls:// URLs do too, with the system roots)")
	fs.StringVar(&c.NATSTLSCertFile, "nats-tls-cert-file", "", "with --nats-url: PEM client certificate for NATS servers that require one (with --nats-tls-key-file)")
	fs.StringVar(&c.NATSTLSKeyFile, "nats-tls-key-file", "", "with --nats-url: PEM key of --nats-tls-cert-file")
	fs.StringVar(&c.NATSCredsFile, "nats-creds-file", "", "with --nats-url: NATS user credentials (.creds: user JWT and NKey seed); user:password in the URL works too and is never logged")
	// Observability (metrics and status).
	fs.StringVar(&c.OTelEndpoint, "otel-endpoint", "", "OpenTelemetry collector OTLP/HTTP URL (e.g. http://otel-collector:4318) to export traces to: a span per recorded observation, continued by the mapper's; empty: no tracing")
	fs.Float64Var(&c.OTelSampleRatio, "otel-sample-ratio", 1, "share of observations traced with --otel-endpoint (0 to 1)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "separate listen address for GET /metrics without authentication (for a Prometheus on an internal network); empty: /metrics only on --http-addr, behind --auth")

	// Hostile peers.
	fs.IntVar(&c.MLLPMaxConnectionsPerHost, "mllp-max-connections-per-host", 0, "concurrent MLLP connections from one IP address (beyond: closed at once); 0 means --mllp-max-connections")
	fs.IntVar(&c.DICOMMaxAssociationsPerHost, "dicom-max-associations-per-host", 0, "concurrent DICOM associations from one IP address (beyond: A-ASSOCIATE-RJ transient, local limit exceeded); 0 means --dicom-max-associations")
	fs.DurationVar(&c.DICOMARTIMTimeout, "dicom-artim-timeout", 30*time.Second, "time a DICOM peer has to send its A-ASSOCIATE-RQ, and to close after release or rejection (PS3.8 ARTIM)")
	fs.DurationVar(&c.HTTPReadHeaderTimeout, "http-read-header-timeout", 10*time.Second, "time an HTTP client has to send its request headers, and a gRPC client to finish its HTTP/2 handshake")

	// HTTP connection limit.
	fs.IntVar(&c.HTTPMaxConnections, "http-max-connections", 16384, "concurrent connections on each of --http-addr and --https-addr, WebSockets included (beyond: HTTP 503 and closed at once; HTTPS closed at once); 0: no limit")

	// TLS.
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "PEM certificate (leaf first, then intermediates) of every TLS listener; re-read without a restart when it changes (or on SIGHUP)")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file; re-read with it")
	fs.StringVar(&c.TLSClientCAFile, "tls-client-ca-file", "", "PEM CA certificates; when set, every TLS listener requires a client certificate issued by them (mutual TLS)")
	fs.StringVar(&c.MLLPTLSAddr, "mllp-tls-addr", "", "HL7 v2 MLLP over TLS listen address (e.g. :2576); empty turns it off")
	fs.StringVar(&c.DICOMTLSAddr, "dicom-tls-addr", "", "DICOM TLS listen address (2762 is the well-known port: :2762); empty turns it off")
	fs.StringVar(&c.GRPCTLSAddr, "grpc-tls-addr", "", "gRPC over TLS listen address (e.g. :9443); empty turns it off")
	fs.StringVar(&c.HTTPSAddr, "https-addr", "", "HTTPS listen address (REST, WSS, health; e.g. :8443); empty turns it off")
	fs.StringVar(&c.MLLPTLSAllowedSubjects, "mllp-tls-allowed-subjects", "", "with --tls-client-ca-file: client certificates allowed on --mllp-tls-addr, each a subject CN, an RFC 2253 DN (separate entries with ; then), a DNS or URI SAN; empty allows any verified client")
	fs.StringVar(&c.DICOMTLSAllowedSubjects, "dicom-tls-allowed-subjects", "", "with --tls-client-ca-file: client certificates allowed on --dicom-tls-addr (as --mllp-tls-allowed-subjects)")
	fs.StringVar(&c.GRPCTLSAllowedSubjects, "grpc-tls-allowed-subjects", "", "with --tls-client-ca-file: client certificates allowed on --grpc-tls-addr (as --mllp-tls-allowed-subjects)")
	fs.StringVar(&c.HTTPSAllowedSubjects, "https-allowed-subjects", "", "with --tls-client-ca-file: client certificates allowed on --https-addr (as --mllp-tls-allowed-subjects)")
	fs.DurationVar(&c.TLSHandshakeTimeout, "tls-handshake-timeout", 10*time.Second, "time a client has to finish the TLS handshake")
	// Mapper snapshots and log retention (operations).
	fs.IntVar(&c.MaxEventBytes, "max-event-bytes", 3<<20, "largest event (encoded) the mapper appends; an observation deriving a larger one is dead-lettered (see radbridge status) and the mapper goes on. ImagingStudy lists at most 1000 instances, so no study reaches it; gRPC clients take 4 MiB by default")
	fs.IntVar(&c.SnapshotEvery, "snapshot-every", 10000, "write a snapshot of the mapper state every this many applied observations (and at an orderly stop); a start replays only what follows the newest snapshot")
	fs.DurationVar(&c.SnapshotInterval, "snapshot-interval", 5*time.Minute, "also write a snapshot when this long has passed since the last one and something was applied")
	fs.DurationVar(&c.DedupHorizon, "dedup-horizon", 30*24*time.Hour, "the mapper ignores a resent observation key first seen less than this before (by the times recorded in the ingest log); an older resend is treated as new")
	fs.DurationVar(&c.EventsMaxAge, "events-max-age", 0, "remove events older than this from the event log; 0 keeps them forever (clients resuming from a removed sequence get OUT_OF_RANGE)")
	fs.Int64Var(&c.EventsMaxBytes, "events-max-bytes", 0, "remove the oldest events when the event log exceeds this many bytes; 0: no limit")
	fs.DurationVar(&c.IngestMaxAge, "ingest-max-age", 0, "trim ingest records older than this, but never records the oldest kept snapshot does not cover; 0 keeps them forever")
	fs.Int64Var(&c.IngestMaxBytes, "ingest-max-bytes", 0, "trim the oldest ingest records when the ingest log exceeds about this many bytes, never records the oldest kept snapshot does not cover; 0: no limit")
	fs.DurationVar(&c.RetentionInterval, "retention-interval", time.Minute, "how often the ingest log is trimmed and the retention metrics are refreshed")
	fs.Float64Var(&c.RetentionMargin, "retention-margin", 0.1, "warn about a live subscriber whose cursor is within this fraction of --events-max-age or --events-max-bytes of the retention edge")
	// Mapper memory.
	fs.DurationVar(&c.StateIdle, "state-idle", 14*24*time.Hour, "the mapper moves a patient no observation touched for this long (by the times recorded in the ingest log), with its studies, orders and accessions, from memory to the RADBRIDGE_ARCHIVE bucket, and reloads it when an observation names it again; 0 keeps every patient in memory")
	// Exceptions worklist (GET /v1/exceptions, /ops).
	fs.DurationVar(&c.ExceptionsUnorderedAfter, "exceptions-unordered-after", time.Hour, "a study that joined no order this long after it arrived is an exception (GET /v1/exceptions, /ops)")
	fs.DurationVar(&c.ExceptionsOrderGrace, "exceptions-order-grace", 2*time.Hour, "an order without images this long past its scheduled time (else its time of entry) is an exception")
	// Time.
	fs.StringVar(&c.Timezone, "timezone", "", "IANA time zone (e.g. Europe/Berlin) of HL7 and DICOM times received without an offset; recorded with each observation so a replay elsewhere maps the same instants; empty: the host's (TZ, else /etc/localtime)")
	// Per-input caps.
	fs.IntVar(&c.HL7MaxOrderGroups, "hl7-max-order-groups", 100, "order groups (ORC or OBR segments, whichever is more) one HL7 order or result may hold; a bigger message is answered AR with ERR 207 and not recorded")
	fs.IntVar(&c.STOWMaxParts, "stow-max-parts", 10000, "parts (instances) one STOW-RS request may hold; the request is answered 413 at the first part beyond it and the rest of the body is not read (the parts before it were processed: stored when valid, so a resend of them is a duplicate)")
	fs.IntVar(&c.DICOMMaxElements, "dicom-max-elements", 100000, "elements (nested ones included) a DICOM data set header may hold before Pixel Data, over C-STORE and STOW-RS; beyond: C-STORE A700 (out of resources), STOW-RS failure A700")
	fs.Int64Var(&c.ThumbnailMaxPixels, "thumbnail-max-pixels", 25000000, "largest image (rows x columns, from the declared size: the JPEG frame header or Rows and Columns) the thumbnail worker decodes; a larger one gets the modality icon")
	// Storage health.
	fs.Int64Var(&c.StoreMaxBytes, "store-max-bytes", 0, "embedded store: the most disk space JetStream may use; 0 follows the disk: what the store holds plus 75% of the free space above a reserve (5% of the file system, at most 1 GiB), re-evaluated every --store-check-interval (so freeing space lets writes resume without a restart)")
	fs.DurationVar(&c.StoreCheckInterval, "store-check-interval", 10*time.Second, "how often the store's quota and writability are checked; /readyz reports not ready while writes are refused (quota, disk full, read-only file system)")
	// FHIR Subscriptions.
	fs.BoolVar(&c.FHIRSubscriptions, "fhir-subscriptions", true, "serve FHIR Subscriptions (R5 Backport IG on R4) at /fhir/Subscription and the websocket channel at /fhir/ws")
	fs.StringVar(&c.FHIRRestHookAllow, "fhir-rest-hook-allow", "", "comma-separated CIDRs, IP addresses and host names (*.example.org) rest-hook endpoints may reach although internal (loopback, link-local, private, metadata); every other endpoint must resolve to a public address, checked when connecting")
	fs.IntVar(&c.FHIRRestHookMaxFailures, "fhir-rest-hook-max-failures", 10, "consecutive failed rest-hook deliveries (or handshakes) after which a subscription's status becomes error")
	fs.DurationVar(&c.FHIRRestHookRetryBase, "fhir-rest-hook-retry-base", 500*time.Millisecond, "first wait before a rest-hook delivery is retried; doubled per failure (at most 1m), plus up to 50% jitter")
	fs.DurationVar(&c.FHIRWSBindingTokenTTL, "fhir-ws-binding-token-ttl", time.Minute, "how long a websocket binding token ($get-ws-binding-token) is valid; each is single use")
	fs.IntVar(&c.FHIRSubscriptionsPerSubject, "fhir-subscriptions-per-subject", 100, "the most FHIR Subscriptions one token subject may own; one more is refused with 429")
	fs.IntVar(&c.FHIRSubscriptionsMax, "fhir-subscriptions-max", 10000, "the most FHIR Subscriptions radbridge holds; one more is refused with 429")
	// Safe defaults.
	fs.BoolVar(&c.AllowUnauthenticatedRemote, "allow-unauthenticated-remote", false, "with --auth none, let --http-addr, --https-addr, --grpc-addr and --grpc-tls-addr listen on addresses other than loopback (anyone who reaches them reads every patient's events; only behind a proxy or network that authenticates)")
	fs.BoolVar(&c.WSTickets, "ws-tickets", false, "serve POST /v1/ws-tickets, which exchanges a client's bearer token (Authorization header) for a single-use ticket valid for --ws-ticket-ttl, and accept it as /ws?ticket= (for WebSocket clients that cannot send a header)")
	fs.DurationVar(&c.WSTicketTTL, "ws-ticket-ttl", 30*time.Second, "lifetime of a --ws-tickets ticket (at most 5m)")
	fs.StringVar(&c.AuthJWKSURL, "auth-jwks-url", "", "--auth jwt keys: the https URL of a JWKS (an identity provider's jwks_uri), fetched at start, cached for --auth-jwks-refresh and fetched again at once for a token whose kid it lacks (key rotation), at most once per --auth-jwks-min-refetch")
	fs.StringVar(&c.AuthJWKSCAFile, "auth-jwks-ca-file", "", "PEM CA certificates that sign the --auth-jwks-url server's certificate; empty: the system's")
	fs.DurationVar(&c.AuthJWKSRefresh, "auth-jwks-refresh", 10*time.Minute, "how long --auth-jwks-url keys are cached before they are fetched again (a failed fetch keeps them)")
	fs.DurationVar(&c.AuthJWKSMinRefetch, "auth-jwks-min-refetch", 30*time.Second, "the least time between two fetches of --auth-jwks-url, so that tokens with made-up kids cannot make radbridge flood the identity provider")
	fs.BoolVar(&c.WSURLToken, "ws-url-token", false, "accept the bearer token itself as /ws?token= (WintEHR's WebSocket client sends it so); the token then appears in URLs, which proxies log and browsers keep: prefer --ws-tickets")
	return fs
}

// Load parses args, the environment and the config file into a validated
// configuration.
func Load(name string, args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	return LoadWith(name, args, getenv, usage, nil)
}

// LoadWith is Load for a command that takes the serve flags plus its own,
// which extra adds to the flag set; those come from the command line only
// (not the environment or the file).
func LoadWith(name string, args []string, getenv func(string) string, usage io.Writer, extra func(*flag.FlagSet)) (*Config, error) {
	c := &Config{}
	fs := c.FlagSet(name)
	own := map[string]bool{}
	if extra != nil {
		before := map[string]bool{}
		fs.VisitAll(func(f *flag.Flag) { before[f.Name] = true })
		extra(fs)
		fs.VisitAll(func(f *flag.Flag) { own[f.Name] = !before[f.Name] })
	}
	if err := ParseFlags(fs, args, usage); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, &FlagError{fmt.Sprintf("unexpected argument %q: every setting is a flag, --name value (%s -h lists the flags)", fs.Arg(0), fs.Name())}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["config"] {
		if v := getenv(EnvName("config")); v != "" {
			c.ConfigFile = v
		}
	}
	file := map[string]any{}
	if c.ConfigFile != "" {
		b, err := os.ReadFile(c.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return nil, fmt.Errorf("config file %s: %w (want one flag name per line, a colon and its value, e.g. http-addr: \"127.0.0.1:8080\"; radbridge.example.yaml has them all)", c.ConfigFile, err)
		}
		var unknown []string
		for k := range file {
			if fs.Lookup(k) == nil || k == "config" || own[k] {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			for i, k := range unknown {
				if s := Suggest(fs, k); s != "" && s != k && !own[s] {
					unknown[i] = fmt.Sprintf("%s (did you mean %s?)", k, s)
				}
			}
			return nil, fmt.Errorf("config file %s: unknown keys %s (keys are the flag names of radbridge serve -h)", c.ConfigFile, strings.Join(unknown, ", "))
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" || own[f.Name] {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want %s: %w", EnvName(f.Name), v, Expect(f), err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			switch v.(type) {
			case []any, map[string]any:
				kind, _ := describe(f)
				errs = append(errs, fmt.Errorf("config file %s: %s: a list or mapping; want %s on one line, e.g. %s", c.ConfigFile, f.Name, kind, yamlExample(f)))
				return
			}
			if err := fs.Set(f.Name, fmt.Sprint(v)); err != nil {
				kind, _ := describe(f)
				errs = append(errs, fmt.Errorf("config file %s: %s: %q: want %s, e.g. %s", c.ConfigFile, f.Name, fmt.Sprint(v), kind, yamlExample(f)))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// Validate checks the configuration and says what is wrong with it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for name, a := range map[string]string{"grpc-addr": c.GRPCAddr, "http-addr": c.HTTPAddr, "mllp-addr": c.MLLPAddr, "dicom-addr": c.DICOMAddr, "metrics-addr": c.MetricsAddr,
		"mllp-tls-addr": c.MLLPTLSAddr, "dicom-tls-addr": c.DICOMTLSAddr, "grpc-tls-addr": c.GRPCTLSAddr, "https-addr": c.HTTPSAddr} {
		if a == "" {
			continue // that listener is off
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("--%s %q: want host:port (for example :9090): %v", name, a, err)
		}
	}
	if c.NATSURL == "" && c.DataDir == "" {
		bad("--data-dir is required unless --nats-url is set")
	}
	if c.NATSReplicas < 1 || c.NATSReplicas > 5 {
		bad("--nats-replicas %d: want 1 to 5", c.NATSReplicas)
	}
	for name, d := range map[string]time.Duration{"duplicate-window": c.DuplicateWindow, "heartbeat": c.Heartbeat, "ws-write-timeout": c.WSWriteTimeout, "shutdown-timeout": c.ShutdownTimeout} {
		if d <= 0 {
			bad("--%s %v: must be positive", name, d)
		}
	}
	if c.WindowEvents < 16 {
		bad("--subscriber-window %d: want at least 16", c.WindowEvents)
	}
	if c.WindowBytes < 1<<20 {
		bad("--subscriber-window-bytes %d: want at least 1 MiB", c.WindowBytes)
	}
	if n := len(c.AETitle); n == 0 || n > 16 || strings.TrimSpace(c.AETitle) != c.AETitle {
		bad("--ae-title %q: want 1 to 16 characters without leading or trailing spaces", c.AETitle)
	}
	if c.MLLPMaxMessage < 1024 || c.MLLPMaxMessage > 64<<20 {
		bad("--mllp-max-message %d: want 1 KiB to 64 MiB", c.MLLPMaxMessage)
	}
	if c.DICOMMaxPDU < 4096 || c.DICOMMaxPDU > 1<<20 {
		bad("--dicom-max-pdu %d: want 4096 to 1048576", c.DICOMMaxPDU)
	}
	if c.MLLPMaxConnections < 1 || c.DICOMMaxAssociations < 1 {
		bad("--mllp-max-connections and --dicom-max-associations must be at least 1")
	}
	if c.MLLPMaxConnectionsPerHost < 0 || c.DICOMMaxAssociationsPerHost < 0 {
		bad("--mllp-max-connections-per-host and --dicom-max-associations-per-host must not be negative")
	}
	if c.HTTPMaxConnections < 0 {
		bad("--http-max-connections %d: want 0 (no limit) or more", c.HTTPMaxConnections)
	}
	for name, d := range map[string]time.Duration{"dicom-artim-timeout": c.DICOMARTIMTimeout, "http-read-header-timeout": c.HTTPReadHeaderTimeout} {
		if d <= 0 {
			bad("--%s %v: must be positive", name, d)
		}
	}
	for name, d := range map[string]time.Duration{"mllp-read-timeout": c.MLLPReadTimeout, "mllp-idle-timeout": c.MLLPIdleTimeout, "dicom-idle-timeout": c.DICOMIdleTimeout, "study-quiet-period": c.StudyQuietPeriod} {
		if d <= 0 {
			bad("--%s %v: must be positive", name, d)
		}
	}
	if c.StoreDir != "" {
		if st, err := os.Stat(c.StoreDir); err != nil || !st.IsDir() {
			bad("--store-dir %s: not an existing directory", c.StoreDir)
		}
	}
	for name, u := range map[string]string{"viewer-url": strings.NewReplacer("{{study}}", "1.2.3", "{{accession}}", "A1", "{{patient}}", "P1").Replace(c.ViewerURL), "wado-rs-base": c.WADORSBase} {
		if u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || strings.ContainsAny(u, " \t\r\n{}") {
			bad("--%s %q: want an absolute http or https URL", name, u)
		}
	}
	if u := c.PatientSystem; u != "" {
		if p, err := url.Parse(u); err != nil || !p.IsAbs() || strings.ContainsAny(u, " \t\r\n") {
			bad("--patient-identifier-system %q: want an absolute URI (urn:oid:1.2.3, https://hospital.example/mrn)", u)
		}
	}
	switch c.Auth {
	case "none":
	case "tokens":
		if c.AuthTokensFile == "" {
			bad("--auth tokens needs --auth-tokens-file")
		}
	case "jwt":
		if n := countSet(c.AuthJWTKeyFile, c.AuthJWKSFile, c.AuthJWKSURL); n != 1 {
			bad("--auth jwt needs one of --auth-jwt-key-file, --auth-jwks-file and --auth-jwks-url")
		}
	default:
		bad("--auth %q: want none, tokens or jwt", c.Auth)
	}
	for name, f := range map[string]string{"auth-tokens-file": c.AuthTokensFile, "auth-jwt-key-file": c.AuthJWTKeyFile, "auth-jwks-file": c.AuthJWKSFile} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			bad("--%s %s: not an existing file", name, f)
		}
	}
	for _, o := range c.OriginPatterns() {
		host := o
		if _, after, ok := strings.Cut(o, "://"); ok {
			host = after
		}
		if _, err := path.Match(o, ""); err != nil || host == "" || strings.Contains(host, "/") {
			bad("--allowed-origins %q: want a host pattern (ehr.example.org, *.example.org) or scheme://host", o)
		}
	}
	if _, err := c.TrustedProxyPrefixes(); err != nil {
		bad("--trusted-proxies %q: %v", c.TrustedProxies, err)
	}
	if c.PublicBaseURL != "" {
		u, err := url.Parse(c.PublicBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			bad("--public-base-url %q: want an absolute http or https URL without user, query or fragment", c.PublicBaseURL)
		}
	}
	if c.FHIRSubscriptionsPerSubject < 1 || c.FHIRSubscriptionsMax < 1 {
		bad("--fhir-subscriptions-per-subject %d, --fhir-subscriptions-max %d: want at least 1", c.FHIRSubscriptionsPerSubject, c.FHIRSubscriptionsMax)
	}
	if _, err := subscription.ParseAllow(c.FHIRRestHookAllow); err != nil {
		bad("--fhir-rest-hook-allow: %v", err)
	}
	if c.FHIRRestHookMaxFailures < 1 || c.FHIRRestHookMaxFailures > 1000 {
		bad("--fhir-rest-hook-max-failures %d: want 1 to 1000", c.FHIRRestHookMaxFailures)
	}
	if c.FHIRRestHookRetryBase < time.Millisecond || c.FHIRRestHookRetryBase > time.Minute {
		bad("--fhir-rest-hook-retry-base %v: want 1ms to 1m", c.FHIRRestHookRetryBase)
	}
	if c.FHIRWSBindingTokenTTL < time.Second || c.FHIRWSBindingTokenTTL > 5*time.Minute {
		bad("--fhir-ws-binding-token-ttl %v: want 1s to 5m", c.FHIRWSBindingTokenTTL)
	}
	if c.LeaderLease < time.Second || c.LeaderLease > 5*time.Minute {
		bad("--leader-lease %v: want 1s to 5m", c.LeaderLease)
	}
	if (c.NATSTLSCertFile == "") != (c.NATSTLSKeyFile == "") {
		bad("--nats-tls-cert-file and --nats-tls-key-file go together")
	}
	for name, f := range map[string]string{"nats-tls-ca-file": c.NATSTLSCAFile, "nats-tls-cert-file": c.NATSTLSCertFile, "nats-tls-key-file": c.NATSTLSKeyFile, "nats-creds-file": c.NATSCredsFile} {
		if f == "" {
			continue
		}
		if c.NATSURL == "" {
			bad("--%s needs --nats-url (the embedded store has no network connection)", name)
		} else if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			bad("--%s %s: not an existing file", name, f)
		}
	}
	if len(c.NodeID) > 64 || strings.ContainsAny(c.NodeID, " \t\r\n") {
		bad("--node-id %q: want at most 64 characters without spaces", c.NodeID)
	}
	c.validateTLS(bad)
	if c.OTelEndpoint != "" {
		if u, err := url.Parse(c.OTelEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("--otel-endpoint %q: want an http or https URL (the collector's OTLP/HTTP receiver, e.g. http://otel-collector:4318)", c.OTelEndpoint)
		}
	}
	if c.OTelSampleRatio < 0 || c.OTelSampleRatio > 1 {
		bad("--otel-sample-ratio %v: want 0 to 1", c.OTelSampleRatio)
	}
	if c.MaxEventBytes < 64<<10 || c.MaxEventBytes > 6<<20 {
		bad("--max-event-bytes %d: want 65536 to 6291456 (the store takes messages up to 8 MiB)", c.MaxEventBytes)
	}
	if c.SnapshotEvery < 1 {
		bad("--snapshot-every %d: want at least 1", c.SnapshotEvery)
	}
	for name, d := range map[string]time.Duration{"snapshot-interval": c.SnapshotInterval, "dedup-horizon": c.DedupHorizon, "retention-interval": c.RetentionInterval} {
		if d <= 0 {
			bad("--%s %v: must be positive", name, d)
		}
	}
	for name, d := range map[string]time.Duration{"events-max-age": c.EventsMaxAge, "ingest-max-age": c.IngestMaxAge} {
		if d < 0 {
			bad("--%s %v: want 0 (forever) or a positive duration", name, d)
		}
	}
	for name, n := range map[string]int64{"events-max-bytes": c.EventsMaxBytes, "ingest-max-bytes": c.IngestMaxBytes} {
		if n < 0 || (n > 0 && n < 1<<20) {
			bad("--%s %d: want 0 (no limit) or at least 1 MiB", name, n)
		}
	}
	if c.EventsMaxAge > 0 && c.EventsMaxAge < c.DuplicateWindow {
		bad("--events-max-age %v: must be at least --duplicate-window %v", c.EventsMaxAge, c.DuplicateWindow)
	}
	if c.ExceptionsUnorderedAfter < 0 || c.ExceptionsOrderGrace < 0 {
		bad("--exceptions-unordered-after %v, --exceptions-order-grace %v: want 0 or a positive duration", c.ExceptionsUnorderedAfter, c.ExceptionsOrderGrace)
	}
	if c.StateIdle < 0 {
		bad("--state-idle %v: want 0 (keep every patient in memory) or a positive duration", c.StateIdle)
	}
	// The archive keeps the last mapper.ArchiveVersions (8) versions of a
	// patient. A restart from a snapshot needs the version written before
	// it, so a patient must not be evicted more often than that within the
	// few snapshot intervals a restart may go back: evictions of one patient
	// are at least --state-idle apart.
	if c.StateIdle > 0 && c.StateIdle < 2*c.SnapshotInterval {
		bad("--state-idle %v: must be 0 or at least twice --snapshot-interval %v (a restart from a snapshot needs the archived versions of the patients evicted since; the archive keeps a patient's last 8)", c.StateIdle, c.SnapshotInterval)
	}
	for name, n := range map[string]int{"hl7-max-order-groups": c.HL7MaxOrderGroups, "stow-max-parts": c.STOWMaxParts, "dicom-max-elements": c.DICOMMaxElements} {
		if n < 1 {
			bad("--%s %d: want at least 1", name, n)
		}
	}
	if c.ThumbnailMaxPixels < 1 {
		bad("--thumbnail-max-pixels %d: want at least 1", c.ThumbnailMaxPixels)
	}
	if c.StoreMaxBytes < 0 || (c.StoreMaxBytes > 0 && c.StoreMaxBytes < 1<<20) {
		bad("--store-max-bytes %d: want 0 (follow the disk) or at least 1 MiB", c.StoreMaxBytes)
	}
	if c.StoreMaxBytes > 0 && c.NATSURL != "" {
		bad("--store-max-bytes needs the embedded store (the external NATS server sets its own limits)")
	}
	if c.StoreCheckInterval <= 0 {
		bad("--store-check-interval %v: must be positive", c.StoreCheckInterval)
	}
	if c.RetentionMargin <= 0 || c.RetentionMargin >= 1 {
		bad("--retention-margin %v: want a fraction between 0 and 1", c.RetentionMargin)
	}
	if c.Timezone == "" {
		if c.Timezone = HostZone(); c.Timezone == "" {
			bad("--timezone: the host's time zone has no IANA name here (TZ unset, /etc/localtime not a link into a zoneinfo directory, no /etc/timezone): set --timezone, e.g. Europe/Berlin")
		}
	}
	if c.Timezone != "" {
		if _, err := c.Zone(); err != nil {
			bad("--timezone %q: not an IANA time zone name (e.g. Europe/Berlin, UTC): %v", c.Timezone, err)
		}
	}
	c.validateRemoteAuth(bad)
	if c.AuthJWKSURL != "" {
		if u, err := url.Parse(c.AuthJWKSURL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("--auth-jwks-url %q: want an https URL (the identity provider's jwks_uri)", c.AuthJWKSURL)
		}
	}
	if c.AuthJWKSCAFile != "" {
		if st, err := os.Stat(c.AuthJWKSCAFile); err != nil || !st.Mode().IsRegular() {
			bad("--auth-jwks-ca-file %s: not an existing file", c.AuthJWKSCAFile)
		}
	}
	if c.AuthJWKSRefresh < time.Second || c.AuthJWKSMinRefetch < 0 || c.AuthJWKSMinRefetch > c.AuthJWKSRefresh {
		bad("--auth-jwks-refresh %v, --auth-jwks-min-refetch %v: want a refresh of at least 1s and a min-refetch from 0 to the refresh", c.AuthJWKSRefresh, c.AuthJWKSMinRefetch)
	}
	if c.WSTicketTTL <= 0 || c.WSTicketTTL > 5*time.Minute {
		bad("--ws-ticket-ttl %v: want more than 0, at most 5m (a ticket is a short-lived stand-in for a token)", c.WSTicketTTL)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("--log-format %q: want text or json", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	// One order whatever the map iterations above did.
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// yamlExample is a line of a configuration file setting flag f to its
// default (or a sample value).
func yamlExample(f *flag.Flag) string {
	kind, v := describe(f)
	switch kind {
	case "true or false":
		return fmt.Sprintf("`%s: %s`", f.Name, f.DefValue)
	case "a whole number", "a number":
		return fmt.Sprintf("`%s: %s`", f.Name, v)
	}
	if v == "" {
		v = "…"
	}
	return fmt.Sprintf("`%s: %q`", f.Name, v)
}

// Zone loads --timezone.
func (c *Config) Zone() (*time.Location, error) {
	if c.Timezone == "Local" || strings.HasPrefix(c.Timezone, "/") {
		// Names another machine would read otherwise.
		return nil, errors.New("want a zone name")
	}
	return time.LoadLocation(c.Timezone)
}

// HostZone names the zone Go reads as time.Local: $TZ when set (empty is
// UTC), else the target of /etc/localtime below a zoneinfo directory, else
// /etc/timezone, else UTC when /etc/localtime is missing. It returns ""
// when the zone exists but has no name (a copied /etc/localtime).
func HostZone() string {
	if tz, ok := os.LookupEnv("TZ"); ok {
		tz = strings.TrimPrefix(tz, ":")
		if tz == "" {
			return "UTC"
		}
		if _, rest, ok := strings.Cut(tz, "zoneinfo/"); ok && strings.HasPrefix(tz, "/") {
			return rest
		}
		if strings.HasPrefix(tz, "/") {
			return ""
		}
		return tz
	}
	if target, err := os.Readlink("/etc/localtime"); err == nil {
		if _, rest, ok := strings.Cut(target, "zoneinfo/"); ok {
			return rest
		}
	}
	if b, err := os.ReadFile("/etc/timezone"); err == nil {
		if name := strings.TrimSpace(string(b)); name != "" {
			return name
		}
	}
	if _, err := os.Lstat("/etc/localtime"); errors.Is(err, os.ErrNotExist) {
		return "UTC"
	}
	return ""
}

// countSet counts the non-empty values.
func countSet(vs ...string) int {
	n := 0
	for _, v := range vs {
		if v != "" {
			n++
		}
	}
	return n
}

// IsLoopback reports whether the listen address addr accepts connections
// from this machine only: localhost or a loopback IP. An empty host, an
// unspecified address (0.0.0.0, ::) and any other name or address reach
// beyond it.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// validateRemoteAuth refuses client fronts listening beyond loopback
// without authentication, unless --allow-unauthenticated-remote says so.
func (c *Config) validateRemoteAuth(bad func(string, ...any)) {
	if c.Auth != "none" || c.AllowUnauthenticatedRemote {
		return
	}
	for _, l := range [][2]string{{"http-addr", c.HTTPAddr}, {"https-addr", c.HTTPSAddr}, {"grpc-addr", c.GRPCAddr}, {"grpc-tls-addr", c.GRPCTLSAddr}} {
		if l[1] == "" || IsLoopback(l[1]) {
			continue
		}
		if _, port, err := net.SplitHostPort(l[1]); err == nil {
			bad("--%s %q listens beyond this machine with --auth none (anyone who reaches it reads every patient's events): turn authentication on (--auth tokens or --auth jwt), listen on loopback (--%s 127.0.0.1:%s), or pass --allow-unauthenticated-remote if a proxy or the network authenticates", l[0], l[1], l[0], port)
		}
	}
}

// TLSEnabled reports whether any TLS listener is on.
func (c *Config) TLSEnabled() bool {
	return c.MLLPTLSAddr != "" || c.DICOMTLSAddr != "" || c.GRPCTLSAddr != "" || c.HTTPSAddr != ""
}

// validateTLS checks the TLS block.
func (c *Config) validateTLS(bad func(string, ...any)) {
	var on []string
	for _, l := range [][2]string{{"mllp-tls-addr", c.MLLPTLSAddr}, {"dicom-tls-addr", c.DICOMTLSAddr}, {"grpc-tls-addr", c.GRPCTLSAddr}, {"https-addr", c.HTTPSAddr}} {
		if l[1] != "" {
			on = append(on, "--"+l[0])
		}
	}
	if len(on) > 0 && (c.TLSCertFile == "" || c.TLSKeyFile == "") {
		bad("%s: a TLS listener needs --tls-cert-file and --tls-key-file", strings.Join(on, ", "))
	}
	if len(on) == 0 && (c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSClientCAFile != "") {
		bad("--tls-cert-file, --tls-key-file and --tls-client-ca-file are set but no TLS listener is (--mllp-tls-addr, --dicom-tls-addr, --grpc-tls-addr, --https-addr)")
	}
	for name, f := range map[string]string{"tls-cert-file": c.TLSCertFile, "tls-key-file": c.TLSKeyFile, "tls-client-ca-file": c.TLSClientCAFile} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			bad("--%s %s: not an existing file", name, f)
		}
	}
	for _, l := range [][3]string{
		{"mllp-tls-allowed-subjects", c.MLLPTLSAllowedSubjects, c.MLLPTLSAddr}, {"dicom-tls-allowed-subjects", c.DICOMTLSAllowedSubjects, c.DICOMTLSAddr},
		{"grpc-tls-allowed-subjects", c.GRPCTLSAllowedSubjects, c.GRPCTLSAddr}, {"https-allowed-subjects", c.HTTPSAllowedSubjects, c.HTTPSAddr},
	} {
		if strings.TrimSpace(l[1]) == "" {
			continue
		}
		if c.TLSClientCAFile == "" {
			bad("--%s needs --tls-client-ca-file: without client certificates there are no subjects to allow", l[0])
		}
		if l[2] == "" {
			bad("--%s is set but its listener (--%s) is off", l[0], strings.Replace(l[0], "-allowed-subjects", "-addr", 1))
		}
	}
	if c.TLSHandshakeTimeout <= 0 {
		bad("--tls-handshake-timeout %v: must be positive", c.TLSHandshakeTimeout)
	}
	if c.GRPCAddr == "" && c.GRPCTLSAddr == "" && c.HTTPAddr == "" && c.HTTPSAddr == "" {
		bad("--grpc-addr, --grpc-tls-addr, --http-addr and --https-addr are all empty: no client could read events")
	}
}

// OriginPatterns are --allowed-origins as a list.
func (c *Config) OriginPatterns() []string {
	var out []string
	for _, o := range strings.Split(c.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// TrustedProxyPrefixes are --trusted-proxies as prefixes (an address is a
// prefix of its full length).
func (c *Config) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range strings.Split(c.TrustedProxies, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if strings.Contains(v, "/") {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR prefix", v)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address", v)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
