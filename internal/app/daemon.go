// Package app wires radbridge's parts into the daemon and the client
// commands.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/test/bufconn"

	"radbridge/api"
	"radbridge/auth"
	"radbridge/dicom/scp"
	"radbridge/dicomweb"
	"radbridge/dicomweb/notify"
	"radbridge/fanout"
	"radbridge/fhir"
	"radbridge/fhir/subscription"
	"radbridge/hl7/receiver"
	"radbridge/ingest"
	"radbridge/internal/config"
	"radbridge/internal/logging"
	"radbridge/internal/metrics"
	"radbridge/internal/operator"
	"radbridge/internal/tlsconf"
	"radbridge/internal/tracing"
	"radbridge/leader"
	"radbridge/mapper"
	"radbridge/mapper/leased"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/store"
	"radbridge/thumbnails"
)

// Daemon is a running radbridge. Start brings it up in three phases (open
// the store, build the fronts, serve); every goroutine it runs belongs to
// one errgroup, and everything it opens is undone by one stack of closers,
// on a failed start as after shutdown.
type Daemon struct {
	cfg *config.Config
	log *slog.Logger

	store *store.Store
	// retention trims the ingest log and watches the event log's edge.
	retention *store.Retention
	mapper    *leased.Mapper
	hub       *fanout.Hub
	svc       *api.Service
	fhir      *fhir.Handler // the FHIR R4 read API at /fhir
	fhirSubs  *fhirSubs     // nil without --fhir-subscriptions
	thumbs    *thumbnails.Service

	// ingestM counts and times every append to the ingest log; bodies,
	// with --log-patient-data, logs every message in full.
	ingestM *metrics.Ingest
	bodies  *slog.Logger

	grpcLn, httpLn  net.Listener
	mllpLn, dicomLn net.Listener
	hl7Srv          *receiver.Server
	dicomSrv        *scp.Server
	grpcSrv         *grpc.Server
	health          *health.Server
	httpSrv         *http.Server
	// The gateway reaches grpcSrv over an in-memory connection.
	gatewayLn   *bufconn.Listener
	gatewayConn *grpc.ClientConn
	// httpServeLn and httpsServeLn are httpLn and httpsLn within
	// --http-max-connections.
	httpServeLn, httpsServeLn net.Listener

	// Observability: the per-daemon registry and --metrics-addr.
	metrics    *prometheus.Registry
	metricsLn  net.Listener
	metricsSrv *http.Server
	tracer     *tracing.Tracer // nil without --otel-endpoint
	started    time.Time

	// TLS: the shared certificate store and the TLS listeners (nil when
	// off). mllpTLSLn and dicomTLSLn hand out TLS connections; grpcTLSLn
	// and httpsLn are TCP, the servers do the handshake.
	tls                   *tlsconf.Store
	mllpTLSLn, dicomTLSLn net.Listener
	grpcTLSLn, httpsLn    net.Listener
	grpcTLSSrv            *grpc.Server

	// closers undo what Start opened, in reverse order.
	closers []func()
	// g runs every goroutine of the daemon. runCtx ends the background
	// work and open streams; recvCtx the receivers, which stop first.
	g             errgroup.Group
	runCtx        context.Context
	cancelRun     context.CancelFunc
	recvCtx       context.Context
	stopReceivers context.CancelFunc
	// receivers counts the receivers' goroutines in g; recvErr is the
	// first error one of them stopped with.
	receivers sync.WaitGroup
	recvMu    sync.Mutex
	recvErr   error

	ready    chan struct{} // closed once serving and caught up
	stopping atomic.Bool
	done     chan struct{}
	err      error
	stopOnce sync.Once
}

// Start opens the store, binds the listeners and starts serving. The daemon
// runs until ctx ends; Wait returns after an orderly shutdown. On an error
// nothing is left open.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	if !cfg.LogPatientData {
		log = slog.New(logging.RedactUIDs(log.Handler()))
	}
	d := &Daemon{cfg: cfg, log: log, ready: make(chan struct{}), done: make(chan struct{}), started: time.Now()}
	d.metrics = metrics.NewRegistry()
	bi := ReadBuildInfo()
	metrics.Build(d.metrics, bi.Version, bi.GoVersion, bi.VCSRevision, d.started)
	for _, phase := range []func(context.Context) error{d.openStore, d.buildFronts} {
		if err := phase(ctx); err != nil {
			d.close() // whatever the phases opened so far
			return nil, err
		}
	}
	d.serve(ctx) // cannot fail: from here on, the supervisor closes
	return d, nil
}

// onClose pushes f on the stack of closers.
func (d *Daemon) onClose(f func()) { d.closers = append(d.closers, f) }

// close runs the closers, newest first.
func (d *Daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// listen binds addr and closes it with the daemon; what names the flag in
// the error.
func (d *Daemon) listen(what, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, addr, err)
	}
	d.onClose(func() { ln.Close() })
	return ln, nil
}

// ingestLog is the ingest log as a front appends to it: counted, timed,
// and traced with --otel-endpoint.
func (d *Daemon) ingestLog(front string) ingest.Log {
	var l ingest.Log = d.store.Ingest()
	if d.tracer != nil {
		l = d.tracer.Ingest(front, l)
	}
	return d.ingestM.Log(front, l)
}

// openStore is the first phase: the store (embedded or external) and
// tracing.
func (d *Daemon) openStore(ctx context.Context) error {
	cfg, log := d.cfg, d.log
	natsTLS, err := natsClientTLS(cfg)
	if err != nil {
		return err
	}
	// Spans are exported last, after the store is closed. After a failed
	// start there is little to export and no time to wait.
	d.onClose(func() {
		if d.tracer == nil {
			return
		}
		wait := time.Second
		if d.stopping.Load() {
			wait = 5 * time.Second
		}
		flush, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := d.tracer.Shutdown(flush); err != nil && d.stopping.Load() {
			log.Warn("export the last spans", "component", "tracing", "err", err)
		}
	})
	st, err := store.Open(ctx, store.Config{
		DataDir: cfg.DataDir, NATSURL: cfg.NATSURL, Replicas: cfg.NATSReplicas,
		SyncAlways: cfg.Fsync, GroupCommit: cfg.GroupCommit, DuplicateWindow: cfg.DuplicateWindow, Logger: log,
		EventsMaxAge: cfg.EventsMaxAge, EventsMaxBytes: cfg.EventsMaxBytes,
		TLS: natsTLS, CredsFile: cfg.NATSCredsFile,
		SeenMaxAge:    store.SeenMaxAge(cfg.DedupHorizon), // the mapper's dedup keys
		MaxStoreBytes: cfg.StoreMaxBytes, CheckInterval: cfg.StoreCheckInterval,
	})
	if err != nil {
		return err
	}
	d.store = st
	d.onClose(func() { st.Close() })
	d.ingestM = metrics.NewIngest(d.metrics)
	if cfg.OTelEndpoint != "" {
		if d.tracer, err = tracing.New(ctx, tracing.Config{Endpoint: cfg.OTelEndpoint, SampleRatio: cfg.OTelSampleRatio, Version: ReadBuildInfo().Version}); err != nil {
			return fmt.Errorf("--otel-endpoint: %w", err)
		}
		log.Info("tracing on", "component", "tracing", "endpoint", cfg.OTelEndpoint, "sample_ratio", cfg.OTelSampleRatio)
	}
	where := cfg.DataDir
	if cfg.NATSURL != "" {
		where = store.RedactURLs(cfg.NATSURL)
	}
	log.Info("store open", "component", "store", "at", where, "embedded", cfg.NATSURL == "", "fsync", cfg.Fsync)
	log.Info("times without an offset are read in --timezone", "timezone", cfg.Timezone)
	d.metrics.MustRegister(storeHealthGauges(st)...)
	return nil
}

// buildFronts is the second phase: it binds every listener and builds
// what serves them (receivers, gRPC, HTTP with REST, WebSocket, FHIR,
// DICOMweb and the operator pages) and the work behind them (mapper,
// fan-out, retention). Nothing runs yet.
func (d *Daemon) buildFronts(ctx context.Context) error {
	cfg, log := d.cfg, d.log
	var err error
	if cfg.GRPCAddr != "" {
		if d.grpcLn, err = d.listen("gRPC listener --grpc-addr", cfg.GRPCAddr); err != nil {
			return err
		}
	}
	if cfg.HTTPAddr != "" {
		if d.httpLn, err = d.listen("HTTP listener --http-addr", cfg.HTTPAddr); err != nil {
			return err
		}
	}
	if err := d.listenTLS(); err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		if d.metricsLn, err = d.listen("metrics listener --metrics-addr", cfg.MetricsAddr); err != nil {
			return err
		}
	}
	if cfg.LogPatientData {
		d.bodies = log
		log.Warn("--log-patient-data is on: message bodies with patient data are written to the log")
	}
	samples, sampler, err := d.buildReceivers()
	if err != nil {
		return err
	}
	authn, err := auth.New(auth.Config{
		Mode: cfg.Auth, TokensFile: cfg.AuthTokensFile, JWTKeyFile: cfg.AuthJWTKeyFile, JWKSFile: cfg.AuthJWKSFile,
		JWTIssuer: cfg.AuthJWTIssuer, JWTAudience: cfg.AuthJWTAudience,
		JWKSURL: cfg.AuthJWKSURL, JWKSCAFile: cfg.AuthJWKSCAFile, JWKSRefresh: cfg.AuthJWKSRefresh, JWKSMinRefetch: cfg.AuthJWKSMinRefetch,
	})
	if err != nil {
		return fmt.Errorf("--auth %s: %w", cfg.Auth, err)
	}
	if _, off := authn.(auth.None); off {
		log.Warn("authentication is off (--auth none): any client on the network can read patient events", "component", "auth")
	} else {
		log.Info("authentication on", "component", "auth", "mode", cfg.Auth, "allowed_origins", cfg.AllowedOrigins)
	}
	if err := d.buildPipeline(ctx); err != nil {
		return err
	}
	d.buildGRPC(authn)
	return d.buildHTTP(ctx, authn, samples, sampler)
}

// buildReceivers builds the MLLP and DICOM receivers and binds their
// plain listeners (the TLS ones are bound by listenTLS). Without a store
// directory, previews keep instances in memory: samples and sampler.
func (d *Daemon) buildReceivers() (samples *thumbnails.Previews, sampler scp.Sampler, err error) {
	cfg, log, st := d.cfg, d.log, d.store
	if cfg.MLLPAddr != "" || cfg.MLLPTLSAddr != "" {
		d.hl7Srv, err = receiver.New(receiver.Config{
			Handler: hl7Handler{log: d.ingestLog("mllp"), bodies: d.bodies, zone: cfg.Timezone}, MaxMessageSize: cfg.MLLPMaxMessage, MaxConnections: cfg.MLLPMaxConnections,
			ReadTimeout: cfg.MLLPReadTimeout, IdleTimeout: cfg.MLLPIdleTimeout, DrainTimeout: cfg.ShutdownTimeout, Logger: log,
			MaxConnectionsPerHost: cfg.MLLPMaxConnectionsPerHost, MaxOrderGroups: cfg.HL7MaxOrderGroups,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("MLLP listener --mllp-addr %s: %w", cfg.MLLPAddr, err)
		}
		if cfg.MLLPAddr != "" {
			if d.mllpLn, err = d.listen("MLLP listener --mllp-addr", cfg.MLLPAddr); err != nil {
				return nil, nil, err
			}
		}
		d.metrics.MustRegister(metrics.NewHL7Collector(d.hl7Srv))
	}
	if cfg.StoreDir == "" {
		samples = thumbnails.NewPreviews()
		sampler = samples
	}
	if cfg.DICOMAddr != "" || cfg.DICOMTLSAddr != "" {
		d.dicomSrv, err = scp.New(scp.Config{
			AETitle: cfg.AETitle, AllowedCallers: allowedCallers(cfg.DICOMAllowedCallers), MaxAssociations: cfg.DICOMMaxAssociations,
			MaxPDULength: uint32(cfg.DICOMMaxPDU), IdleTimeout: cfg.DICOMIdleTimeout, DrainTimeout: cfg.ShutdownTimeout,
			StoreDir: cfg.StoreDir, Sampler: sampler, Logger: log,
			MaxAssociationsPerHost: cfg.DICOMMaxAssociationsPerHost, ARTIMTimeout: cfg.DICOMARTIMTimeout,
			MaxElements: cfg.DICOMMaxElements,
		}, dicomHandler{log: d.ingestLog("dimse"), bodies: d.bodies, zone: cfg.Timezone, steps: st.Steps()})
		if err != nil {
			return nil, nil, fmt.Errorf("DICOM listener --dicom-addr %s: %w", cfg.DICOMAddr, err)
		}
		if cfg.DICOMAddr != "" {
			if d.dicomLn, err = d.listen("DICOM listener --dicom-addr", cfg.DICOMAddr); err != nil {
				return nil, nil, err
			}
		}
		d.metrics.MustRegister(metrics.NewDICOMCollector(d.dicomSrv))
	}
	return samples, sampler, nil
}

// buildPipeline builds the work behind the fronts: the mapper (under the
// mapper lease with --nats-url), the fan-out hub, retention and the API
// service.
func (d *Daemon) buildPipeline(ctx context.Context) error {
	cfg, log, st := d.cfg, d.log, d.store
	var mapperM mapper.Observer = metrics.NewMapper(d.metrics)
	if d.tracer != nil {
		mapperM = d.tracer.Mapper(mapperM)
	}
	newMapper := func() *mapper.Mapper {
		c := mapperConfig(cfg, st, log)
		c.Ingest, c.Events, c.Observer = d.ingestLog("mapper"), d.ingestM.Events(st.Events()), mapperM
		return mapper.New(c)
	}
	var elector *leader.Elector
	if cfg.NATSURL != "" {
		// Other processes may share this store: map only while holding
		// the mapper lease.
		leases, err := st.Leases(ctx, cfg.LeaderLease)
		if err != nil {
			return err
		}
		id := nodeID(cfg.NodeID)
		elector = leader.New(leader.Config{KV: leases, Key: "mapper", ID: id, Lease: cfg.LeaderLease, Logger: log})
		log.Info("clustered: the mapper runs on the lease holder", "component", "leader", "node_id", id, "lease", cfg.LeaderLease)
	}
	d.mapper = leased.New(newMapper, elector)
	d.metrics.MustRegister(metrics.NewLeaderCollectors(d.mapper)...)
	d.hub = fanout.New(st.Events(), fanout.Config{WindowEvents: cfg.WindowEvents, WindowBytes: cfg.WindowBytes, Logger: log})
	// Retention: ingest trimming behind the snapshots, event log edge warnings.
	d.retention = store.NewRetention(st, d.hub, store.RetentionConfig{
		Interval: cfg.RetentionInterval, Margin: cfg.RetentionMargin,
		EventsMaxAge: cfg.EventsMaxAge, EventsMaxBytes: cfg.EventsMaxBytes,
		IngestMaxAge: cfg.IngestMaxAge, IngestMaxBytes: cfg.IngestMaxBytes, Logger: log,
	})
	d.metrics.MustRegister(metrics.NewRetentionCollectors(d.retention, d.mapper)...)
	d.svc = api.NewService(st.Events(), d.hub, d.ingestLog("api"), d.mapper, st.Patients(), log)
	d.metrics.MustRegister(metrics.NewSubscriberCollector(d.hub), metrics.NewPipelineCollector(metrics.Pipeline{
		Ingest: st.Ingest(), Events: st.Events(), Mapper: d.mapper.Current, StoreUp: st.Healthy, DeadLetters: st.DeadLetters(),
	}))
	d.svc.DefaultHeartbeat = cfg.Heartbeat
	trusted, _ := cfg.TrustedProxyPrefixes() // checked by config.Load
	d.svc.TrustedProxies = trusted
	return nil
}

// buildGRPC builds the gRPC servers and the health service (not serving
// until ready).
func (d *Daemon) buildGRPC(authn auth.Authenticator) {
	cfg := d.cfg
	d.health = health.NewServer()
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	d.health.SetServingStatus(rbv1.EventService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	newGRPCServer := func(opts ...grpc.ServerOption) *grpc.Server {
		srv := grpc.NewServer(append([]grpc.ServerOption{
			grpc.MaxRecvMsgSize(64 << 10),
			grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(authn)),
			grpc.ChainStreamInterceptor(auth.StreamServerInterceptor(authn)),
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		}, opts...)...)
		rbv1.RegisterEventServiceServer(srv, d.svc)
		healthpb.RegisterHealthServer(srv, d.health)
		reflection.Register(srv)
		return srv
	}
	// One server for plain text (and the gateway's in-memory connection),
	// one with TLS credentials: grpc.Server takes credentials per server.
	// A plain connection that never completes the HTTP/2 handshake is
	// closed as a slow HTTP client is (grpc's default holds it 120 s).
	d.grpcSrv = newGRPCServer(grpc.ConnectionTimeout(cfg.HTTPReadHeaderTimeout))
	if d.grpcTLSLn != nil {
		d.grpcTLSSrv = newGRPCServer(
			grpc.Creds(credentials.NewTLS(d.tls.ServerConfig(d.tlsFront("grpc", "grpc-tls-allowed-subjects", cfg.GRPCTLSAllowedSubjects, "h2")))),
			grpc.ConnectionTimeout(cfg.TLSHandshakeTimeout),
		)
	}
}

// buildHTTP builds the HTTP server of --http-addr and --https-addr: the
// REST gateway and WebSocket fronts of package api, and beside them
// STOW-RS, DICOM notifications, thumbnails, FHIR, metrics, status and the
// operator endpoints.
func (d *Daemon) buildHTTP(ctx context.Context, authn auth.Authenticator, samples *thumbnails.Previews, sampler scp.Sampler) error {
	cfg, log, st := d.cfg, d.log, d.store
	// The gateway reaches the gRPC server over an in-memory connection.
	d.gatewayLn = bufconn.Listen(1 << 20)
	conn, err := grpc.NewClient("passthrough:///radbridge-internal",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return d.gatewayLn.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("gateway connection: %w", err)
	}
	d.gatewayConn = conn
	d.onClose(func() { conn.Close() })
	// STOW-RS commits through the same handler as C-STORE.
	extra := dicomweb.New(dicomweb.Config{
		Handler: dicomHandler{log: d.ingestLog("stow-rs"), bodies: d.bodies, zone: cfg.Timezone, steps: st.Steps()}, Auth: authn, StoreDir: cfg.StoreDir, Sampler: sampler, Logger: log,
		PublicBaseURL: cfg.PublicBaseURL,
		MaxParts:      cfg.STOWMaxParts, MaxElements: cfg.DICOMMaxElements,
	}).Routes()
	// JSON notifications (an Orthanc Lua callback) too.
	extra[notify.Path] = notify.NewHandler(dicomHandler{log: d.ingestLog("notification"), bodies: d.bodies, zone: cfg.Timezone, steps: st.Steps()}, authn, log)
	d.thumbs = thumbnails.New(thumbnails.Config{Bucket: st.Thumbnails(), Hub: d.hub, StoreDir: cfg.StoreDir, MaxPixels: cfg.ThumbnailMaxPixels, Previews: samples, Logger: log})
	extra[thumbnails.Pattern] = d.thumbs.Handler(authn)
	extra[metricsPattern] = operator.Unrestricted(authn, metrics.Handler(d.metrics))
	extra[statusPattern] = operator.Unrestricted(authn, d.statusHandler())
	// FHIR: the R4 read API (package fhir) and, mounted under it,
	// Subscriptions (package fhir/subscription).
	fhirCfg := fhir.Config{Events: st.Events(), Auth: authn, Logger: log, Version: ReadBuildInfo().Version}
	if cfg.PublicBaseURL != "" {
		fhirCfg.BaseURL = strings.TrimSuffix(cfg.PublicBaseURL, "/") + fhir.Base
	}
	if cfg.FHIRSubscriptions {
		if d.fhirSubs, err = newFHIRSubs(ctx, cfg, st, d.hub, authn, addrOf(d.httpLn), log); err != nil {
			return err
		}
		fhirCfg.Topics = subscription.Topics()
		fhirCfg.Resources = append(fhirCfg.Resources, subscription.CapabilityResource())
		fhirCfg.Extra = map[string]http.Handler{"Subscription": d.fhirSubs.handler, "ws": d.fhirSubs.handler}
	}
	d.fhir = fhir.New(fhirCfg)
	extra[fhir.Base] = d.fhir
	extra[fhir.Base+"/"] = d.fhir
	// The operator's explain, exceptions worklist and corrections.
	ops := operator.New(operator.Config{
		Mapper: d.mapper, Events: st.Events(), DeadLetters: st.DeadLetters(), Ingest: st.Ingest(),
		Corrections: d.ingestLog("api"), Auth: authn, TrustedProxies: d.svc.TrustedProxies,
		Exceptions: rules.ExceptionRules{UnorderedAfter: cfg.ExceptionsUnorderedAfter, OrderGrace: cfg.ExceptionsOrderGrace},
		Logger:     log,
	})
	maps.Copy(extra, ops.Routes())
	d.metrics.MustRegister(ops.Collector())
	handler, err := api.NewHTTPHandler(ctx, d.svc, conn, api.HTTPConfig{
		Ready: d.readyErr, WriteTimeout: cfg.WSWriteTimeout, Logger: log, Auth: authn, OriginPatterns: cfg.OriginPatterns(),
		TrustedProxies: d.svc.TrustedProxies, Extra: extra,
		WSTickets: wsTickets(cfg), WSURLToken: cfg.WSURLToken,
	})
	if err != nil {
		return err
	}
	d.runCtx, d.cancelRun = context.WithCancel(context.WithoutCancel(ctx))
	d.onClose(d.cancelRun)
	d.httpSrv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return d.runCtx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if d.httpsLn != nil {
		d.httpSrv.TLSConfig = d.tls.ServerConfig(d.tlsFront("https", "https-allowed-subjects", cfg.HTTPSAllowedSubjects, "h2", "http/1.1"))
	}
	d.httpServeLn, d.httpsServeLn = d.limitHTTP(cfg.HTTPMaxConnections, cfg.HTTPReadHeaderTimeout, log) // --http-max-connections
	if d.metricsLn != nil {
		d.metricsSrv = &http.Server{Handler: metricsServer(d.metrics), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	}
	return nil
}

// serve is the last phase: it starts every goroutine in the errgroup, the
// receivers last, then waits for readiness and, when ctx ends or a part
// fails, shuts down.
func (d *Daemon) serve(ctx context.Context) {
	cfg, log := d.cfg, d.log
	runCtx := d.runCtx
	run := func(name string, f func() error) {
		d.g.Go(func() error {
			err := f()
			if err != nil && !d.stopping.Load() {
				log.Error("stopped unexpectedly; shutting down", "component", name, "err", err)
				d.cancelRun()
			}
			return err
		})
	}
	httpServe := func(serve func() error) func() error {
		return func() error {
			if err := serve(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}
	}
	run("mapper", func() error { return d.mapper.Run(runCtx) })
	run("fanout", func() error { return d.hub.Run(runCtx) })
	run("fhir", func() error { return d.fhir.Run(runCtx) })
	run("thumbnails", func() error { return d.thumbs.Run(runCtx) })
	run("previews", func() error { return d.thumbs.RunPreviews(runCtx) })
	run("retention", func() error { return d.retention.Run(runCtx) })
	run("store-health", func() error { return d.store.MonitorWrites(runCtx) })
	if d.fhirSubs != nil {
		run("fhir-subscriptions", func() error { return d.fhirSubs.Run(runCtx) })
	}
	run("grpc", func() error { return d.grpcSrv.Serve(d.gatewayLn) })
	if d.grpcLn != nil {
		run("grpc", func() error { return d.grpcSrv.Serve(d.grpcLn) })
		log.Info("listening", "component", "grpc", "addr", d.grpcLn.Addr().String(), "tls", false)
	}
	if d.grpcTLSLn != nil {
		run("grpc", func() error { return d.grpcTLSSrv.Serve(d.grpcTLSLn) })
		log.Info("listening", "component", "grpc", "addr", d.grpcTLSLn.Addr().String(), "tls", d.tlsMode(cfg.GRPCTLSAllowedSubjects))
	}
	if d.httpLn != nil {
		run("http", httpServe(func() error { return d.httpSrv.Serve(d.httpServeLn) }))
		log.Info("listening", "component", "http", "addr", d.httpLn.Addr().String(), "tls", false)
	}
	if d.httpsLn != nil {
		// The certificate comes from TLSConfig (GetCertificate).
		run("http", httpServe(func() error { return d.httpSrv.ServeTLS(d.httpsServeLn, "", "") }))
		log.Info("listening", "component", "http", "addr", d.httpsLn.Addr().String(), "tls", d.tlsMode(cfg.HTTPSAllowedSubjects))
	}
	if d.metricsSrv != nil {
		run("metrics", httpServe(func() error { return d.metricsSrv.Serve(d.metricsLn) }))
		log.Info("listening", "component", "metrics", "addr", d.metricsLn.Addr().String())
	}
	d.recvCtx, d.stopReceivers = context.WithCancel(context.WithoutCancel(ctx))
	d.onClose(d.stopReceivers)
	// The same receiver serves its plain and its TLS listener.
	for _, l := range []struct {
		ln       net.Listener
		tls      bool
		allowed  string
		isDICOM  bool
		disabled bool
	}{
		{d.mllpLn, false, "", false, d.hl7Srv == nil}, {d.mllpTLSLn, true, cfg.MLLPTLSAllowedSubjects, false, d.hl7Srv == nil},
		{d.dicomLn, false, "", true, d.dicomSrv == nil}, {d.dicomTLSLn, true, cfg.DICOMTLSAllowedSubjects, true, d.dicomSrv == nil},
	} {
		if l.ln == nil || l.disabled {
			continue
		}
		mode := any(false)
		if l.tls {
			mode = d.tlsMode(l.allowed)
		}
		ln := l.ln
		if l.isDICOM {
			d.runReceiver(func() error { return d.dicomSrv.Serve(d.recvCtx, ln) })
			log.Info("listening", "component", "dicom", "addr", ln.Addr().String(), "ae_title", cfg.AETitle, "tls", mode)
		} else {
			d.runReceiver(func() error { return d.hl7Srv.Serve(d.recvCtx, ln) })
			log.Info("listening", "component", "hl7", "addr", ln.Addr().String(), "tls", mode)
		}
	}

	// Ready once every listener accepts (they are bound and served) and
	// the event stream and the mapper have caught up.
	d.g.Go(func() error {
		if err := d.hub.WaitReady(runCtx); err != nil {
			return nil
		}
		if err := d.mapper.WaitReady(runCtx); err != nil {
			return nil
		}
		close(d.ready)
		d.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		d.health.SetServingStatus(rbv1.EventService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
		log.Info("ready")
		return nil
	})

	// The supervisor: the one goroutine outside g, since it waits for g.
	go func() {
		select {
		case <-ctx.Done():
		case <-runCtx.Done():
		}
		d.shutdown()
		d.err = d.g.Wait()
		d.close()
		log.Info("stopped")
		close(d.done)
	}()
}

// runReceiver runs a receiver in g. A receiver that stops with an error
// does not stop the daemon; the error is logged at shutdown.
func (d *Daemon) runReceiver(serve func() error) {
	d.receivers.Add(1)
	d.g.Go(func() error {
		defer d.receivers.Done()
		if err := serve(); err != nil {
			d.recvMu.Lock()
			if d.recvErr == nil {
				d.recvErr = err
			}
			d.recvMu.Unlock()
		}
		return nil
	})
}

// shutdown: not ready → close listeners → drain → end streams → stop.
func (d *Daemon) shutdown() {
	d.stopOnce.Do(func() {
		d.log.Info("shutting down")
		d.stopping.Store(true)
		d.health.Shutdown()
		// Receivers first: stop accepting, let in-flight messages be recorded
		// and acknowledged (each drains within --shutdown-timeout).
		d.stopReceivers()
		d.receivers.Wait()
		d.recvMu.Lock()
		if err := d.recvErr; err != nil {
			d.log.Error("receiver stopped with error", "err", err)
		}
		d.recvMu.Unlock()
		deadline, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
		defer cancel()
		// Stop accepting and finish unary requests; open streams (WebSocket,
		// Subscribe) end when runCtx is cancelled below.
		httpDone := make(chan struct{})
		go func() {
			_ = d.httpSrv.Shutdown(deadline)
			if d.metricsSrv != nil {
				_ = d.metricsSrv.Shutdown(deadline)
			}
			close(httpDone)
		}()
		grpcDone := make(chan struct{})
		go func() {
			d.grpcSrv.GracefulStop()
			if d.grpcTLSSrv != nil {
				d.grpcTLSSrv.GracefulStop()
			}
			close(grpcDone)
		}()
		d.svc.Stop()
		d.cancelRun()
		select {
		case <-grpcDone:
		case <-deadline.Done():
			d.grpcSrv.Stop()
			if d.grpcTLSSrv != nil {
				d.grpcTLSSrv.Stop()
			}
		}
		<-httpDone
		d.gatewayConn.Close()
	})
}

// isReady reports whether the daemon has become ready.
func (d *Daemon) isReady() bool {
	select {
	case <-d.ready:
		return true
	default:
		return false
	}
}

func (d *Daemon) readyErr() error {
	switch {
	case d.stopping.Load():
		return errors.New("shutting down")
	case !d.store.Healthy():
		return errors.New("store unavailable")
	case d.store.WriteHealth() != nil:
		return d.store.WriteHealth()
	case !d.isReady():
		return errors.New("replaying the ingest log")
	}
	return nil
}

// ReadyNotify is closed once the daemon is ready: every listener accepts,
// the event stream is live and the mapper has caught up with the ingest
// log (or, in a cluster, this process follows the lease holder). It stays
// closed; Ready says whether the daemon can serve now.
func (d *Daemon) ReadyNotify() <-chan struct{} { return d.ready }

// Ready reports whether the daemon can serve now: it became ready, is not
// shutting down, and its store accepts writes (/readyz).
func (d *Daemon) Ready() bool { return d.readyErr() == nil }

// Wait blocks until the daemon stopped and returns why.
func (d *Daemon) Wait() error {
	<-d.done
	return d.err
}

// MLLPAddr is the bound MLLP address ("" when off).
func (d *Daemon) MLLPAddr() string {
	if d.mllpLn == nil {
		return ""
	}
	return d.mllpLn.Addr().String()
}

// DICOMAddr is the bound DICOM address ("" when off).
func (d *Daemon) DICOMAddr() string {
	if d.dicomLn == nil {
		return ""
	}
	return d.dicomLn.Addr().String()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// GRPCAddr is the bound gRPC address ("" when off).
func (d *Daemon) GRPCAddr() string { return addrOf(d.grpcLn) }

// HTTPAddr is the bound HTTP address ("" when off).
func (d *Daemon) HTTPAddr() string { return addrOf(d.httpLn) }

// MLLPTLSAddr is the bound MLLP over TLS address ("" when off).
func (d *Daemon) MLLPTLSAddr() string { return addrOf(d.mllpTLSLn) }

// DICOMTLSAddr is the bound DICOM TLS address ("" when off).
func (d *Daemon) DICOMTLSAddr() string { return addrOf(d.dicomTLSLn) }

// GRPCTLSAddr is the bound gRPC over TLS address ("" when off).
func (d *Daemon) GRPCTLSAddr() string { return addrOf(d.grpcTLSLn) }

// HTTPSAddr is the bound HTTPS address ("" when off).
func (d *Daemon) HTTPSAddr() string { return addrOf(d.httpsLn) }

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// ReloadTLS re-reads the TLS certificate, key and client CAs now (SIGHUP);
// the files are also re-read on their own when they change.
func (d *Daemon) ReloadTLS() error {
	if d.tls == nil {
		return errors.New("no TLS listener")
	}
	return d.tls.Reload()
}

// listenTLS loads the certificate and binds the TLS listeners that are on.
func (d *Daemon) listenTLS() error {
	cfg := d.cfg
	if !cfg.TLSEnabled() {
		return nil
	}
	var err error
	d.tls, err = tlsconf.Load(tlsconf.Files{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, ClientCAFile: cfg.TLSClientCAFile}, d.log)
	if err != nil {
		return fmt.Errorf("--tls-cert-file, --tls-key-file, --tls-client-ca-file: %w", err)
	}
	for _, l := range []struct {
		flag, addr string
		ln         *net.Listener
	}{{"mllp-tls-addr", cfg.MLLPTLSAddr, &d.mllpTLSLn}, {"dicom-tls-addr", cfg.DICOMTLSAddr, &d.dicomTLSLn}, {"grpc-tls-addr", cfg.GRPCTLSAddr, &d.grpcTLSLn}, {"https-addr", cfg.HTTPSAddr, &d.httpsLn}} {
		if l.addr == "" {
			continue
		}
		if *l.ln, err = d.listen("TLS listener --"+l.flag, l.addr); err != nil {
			return err
		}
	}
	// MLLP and DICOM: the receivers read TLS connections; each handshake
	// runs in the connection's goroutine within --tls-handshake-timeout.
	if d.mllpTLSLn != nil {
		f := d.tlsFront("hl7", "mllp-tls-allowed-subjects", cfg.MLLPTLSAllowedSubjects)
		d.mllpTLSLn = tlsconf.NewListener(d.mllpTLSLn, d.tls.ServerConfig(f), cfg.TLSHandshakeTimeout, d.log.With("component", "hl7"))
	}
	if d.dicomTLSLn != nil {
		f := d.tlsFront("dicom", "dicom-tls-allowed-subjects", cfg.DICOMTLSAllowedSubjects)
		d.dicomTLSLn = tlsconf.NewListener(d.dicomTLSLn, d.tls.ServerConfig(f), cfg.TLSHandshakeTimeout, d.log.With("component", "dicom"))
	}
	return nil
}

func (d *Daemon) tlsFront(component, flag, allowed string, nextProtos ...string) *tlsconf.Front {
	return &tlsconf.Front{Name: component, Flag: flag, Allowed: tlsconf.SplitSubjects(allowed), NextProtos: nextProtos, Log: d.log}
}

// tlsMode says in the log what a TLS listener asks of clients.
func (d *Daemon) tlsMode(allowed string) string {
	return d.tls.Describe(&tlsconf.Front{Allowed: tlsconf.SplitSubjects(allowed)})
}

// storeHealthGauges expose the store's write checks (--store-check-interval).
func storeHealthGauges(st *store.Store) []prometheus.Collector {
	g := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: name, Help: help}, f)
	}
	return []prometheus.Collector{
		g("store_quota_bytes", "Storage quota of the store at the last check (--store-max-bytes, or what it holds plus 75% of the disk's free space above a reserve; 0: unknown or unlimited).",
			func() float64 { q, _ := st.Quota(); return float64(q) }),
		g("store_used_bytes", "Bytes the store held at the last check.",
			func() float64 { _, u := st.Quota(); return float64(u) }),
		g("store_writes_refused", "1 while the store refuses writes (quota reached, disk full, read-only, JetStream stopped; /readyz says which), else 0.",
			func() float64 {
				if st.WriteHealth() != nil {
					return 1
				}
				return 0
			}),
	}
}
