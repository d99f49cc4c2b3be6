// Package app wires radbridge's parts into the daemon and the client
// commands.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"radbridge/internal/metrics"
	"radbridge/internal/tlsconf"
	"radbridge/internal/tracing"
	"radbridge/leader"
	"radbridge/mapper"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/store"
	"radbridge/thumbnails"
)

// Daemon is a running radbridge.
type Daemon struct {
	cfg *config.Config
	log *slog.Logger

	store *store.Store
	// retention trims the ingest log and watches the event log's edge.
	retention *retention
	mapper    *mappers
	hub       *fanout.Hub
	svc       *api.Service
	fhir      *fhir.Handler // the FHIR R4 read API at /fhir

	grpcLn, httpLn  net.Listener
	mllpLn, dicomLn net.Listener
	hl7Srv          *receiver.Server
	dicomSrv        *scp.Server
	receivers       errgroup.Group
	stopReceivers   context.CancelFunc
	grpcSrv         *grpc.Server
	health          *health.Server
	httpSrv         *http.Server

	// Observability: the per-daemon registry and --metrics-addr.
	metrics    *prometheus.Registry
	metricsLn  net.Listener
	metricsSrv *http.Server
	tracer     *tracing.Tracer // nil without --otel-endpoint
	started    time.Time

	// TLS (issue 7): the shared certificate store and the TLS listeners
	// (nil when off). mllpTLSLn and dicomTLSLn hand out TLS connections;
	// grpcTLSLn and httpsLn are TCP, the servers do the handshake.
	tls                   *tlsconf.Store
	mllpTLSLn, dicomTLSLn net.Listener
	grpcTLSLn, httpsLn    net.Listener
	grpcTLSSrv            *grpc.Server

	ready    atomic.Bool
	stopping atomic.Bool
	done     chan struct{}
	err      error
	stopOnce sync.Once
}

// Start opens the store, binds the listeners and starts serving. The daemon
// runs until ctx ends; Wait returns after an orderly shutdown.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	if !cfg.LogPatientData {
		log = slog.New(redactUIDs(log.Handler()))
	}
	d := &Daemon{cfg: cfg, log: log, done: make(chan struct{}), started: time.Now()}
	d.metrics = metrics.NewRegistry()
	bi := ReadBuildInfo()
	metrics.Build(d.metrics, bi.Version, bi.GoVersion, bi.VCSRevision, d.started)
	natsTLS, err := natsClientTLS(cfg)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Config{
		DataDir: cfg.DataDir, NATSURL: cfg.NATSURL, Replicas: cfg.NATSReplicas,
		SyncAlways: cfg.Fsync, GroupCommit: cfg.GroupCommit, DuplicateWindow: cfg.DuplicateWindow, Logger: log,
		EventsMaxAge: cfg.EventsMaxAge, EventsMaxBytes: cfg.EventsMaxBytes,
		TLS: natsTLS, CredsFile: cfg.NATSCredsFile,
		SeenMaxAge:    store.SeenMaxAge(cfg.DedupHorizon), // the mapper's dedup keys
		MaxStoreBytes: cfg.StoreMaxBytes, CheckInterval: cfg.StoreCheckInterval,
	})
	if err != nil {
		return nil, err
	}
	d.store = st
	// Every append to the ingest log is counted by front and timed, and
	// traced with --otel-endpoint.
	ingestM := metrics.NewIngest(d.metrics)
	if cfg.OTelEndpoint != "" {
		if d.tracer, err = tracing.New(ctx, tracing.Config{Endpoint: cfg.OTelEndpoint, SampleRatio: cfg.OTelSampleRatio, Version: ReadBuildInfo().Version}); err != nil {
			st.Close()
			return nil, fmt.Errorf("--otel-endpoint: %w", err)
		}
		log.Info("tracing on", "component", "tracing", "endpoint", cfg.OTelEndpoint, "sample_ratio", cfg.OTelSampleRatio)
	}
	ingestLog := func(front string) ingest.Log {
		var l ingest.Log = st.Ingest()
		if d.tracer != nil {
			l = d.tracer.Ingest(front, l)
		}
		return ingestM.Log(front, l)
	}
	where := cfg.DataDir
	if cfg.NATSURL != "" {
		where = store.RedactURLs(cfg.NATSURL)
	}
	log.Info("store open", "component", "store", "at", where, "embedded", cfg.NATSURL == "", "fsync", cfg.Fsync)
	log.Info("times without an offset are read in --timezone", "timezone", cfg.Timezone)
	d.metrics.MustRegister(storeHealthGauges(st)...)

	if cfg.GRPCAddr != "" {
		d.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("gRPC listener --grpc-addr %s: %w", cfg.GRPCAddr, err)
		}
	}
	if cfg.HTTPAddr != "" {
		d.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("HTTP listener --http-addr %s: %w", cfg.HTTPAddr, err)
		}
	}
	if err := d.listenTLS(); err != nil {
		d.closeAll()
		return nil, err
	}
	if cfg.MetricsAddr != "" {
		if d.metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			d.closeAll()
			return nil, fmt.Errorf("metrics listener --metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
	}

	var bodies *slog.Logger
	if cfg.LogPatientData {
		bodies = log
		log.Warn("--log-patient-data is on: message bodies with patient data are written to the log")
	}
	if cfg.MLLPAddr != "" || cfg.MLLPTLSAddr != "" {
		d.hl7Srv, err = receiver.New(receiver.Config{
			Handler: hl7Handler{log: ingestLog("mllp"), bodies: bodies, zone: cfg.Timezone}, MaxMessageSize: cfg.MLLPMaxMessage, MaxConnections: cfg.MLLPMaxConnections,
			ReadTimeout: cfg.MLLPReadTimeout, IdleTimeout: cfg.MLLPIdleTimeout, DrainTimeout: cfg.ShutdownTimeout, Logger: log,
			MaxConnectionsPerHost: cfg.MLLPMaxConnectionsPerHost, MaxOrderGroups: cfg.HL7MaxOrderGroups,
		})
		if err == nil && cfg.MLLPAddr != "" {
			d.mllpLn, err = net.Listen("tcp", cfg.MLLPAddr)
		}
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("MLLP listener --mllp-addr %s: %w", cfg.MLLPAddr, err)
		}
		d.metrics.MustRegister(metrics.NewHL7Collector(d.hl7Srv))
	}
	// Without a store directory, previews keep instances in memory.
	var samples *thumbnails.Previews
	var sampler scp.Sampler
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
		}, dicomHandler{log: ingestLog("dimse"), bodies: bodies, zone: cfg.Timezone, steps: st.Steps()})
		if err == nil && cfg.DICOMAddr != "" {
			d.dicomLn, err = net.Listen("tcp", cfg.DICOMAddr)
		}
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("DICOM listener --dicom-addr %s: %w", cfg.DICOMAddr, err)
		}
		d.metrics.MustRegister(metrics.NewDICOMCollector(d.dicomSrv))
	}

	authn, err := auth.New(auth.Config{
		Mode: cfg.Auth, TokensFile: cfg.AuthTokensFile, JWTKeyFile: cfg.AuthJWTKeyFile, JWKSFile: cfg.AuthJWKSFile,
		JWTIssuer: cfg.AuthJWTIssuer, JWTAudience: cfg.AuthJWTAudience,
		JWKSURL: cfg.AuthJWKSURL, JWKSCAFile: cfg.AuthJWKSCAFile, JWKSRefresh: cfg.AuthJWKSRefresh, JWKSMinRefetch: cfg.AuthJWKSMinRefetch,
	})
	if err != nil {
		d.closeAll()
		return nil, fmt.Errorf("--auth %s: %w", cfg.Auth, err)
	}
	if _, off := authn.(auth.None); off {
		log.Warn("authentication is off (--auth none): any client on the network can read patient events", "component", "auth")
	} else {
		log.Info("authentication on", "component", "auth", "mode", cfg.Auth, "allowed_origins", cfg.AllowedOrigins)
	}

	patients := st.Patients()
	var mapperM mapper.Observer = metrics.NewMapper(d.metrics)
	if d.tracer != nil {
		mapperM = d.tracer.Mapper(mapperM)
	}
	d.mapper = &mappers{newMapper: func() *mapper.Mapper {
		c := mapperConfig(cfg, st, log)
		c.Ingest, c.Events, c.Observer = ingestLog("mapper"), ingestM.Events(st.Events()), mapperM
		return mapper.New(c)
	}}
	if cfg.NATSURL != "" {
		// Other processes may share this store: map only while holding
		// the mapper lease.
		leases, err := st.Leases(ctx, cfg.LeaderLease)
		if err != nil {
			d.closeAll()
			return nil, err
		}
		id := nodeID(cfg.NodeID)
		d.mapper.elector = leader.New(leader.Config{KV: leases, Key: "mapper", ID: id, Lease: cfg.LeaderLease, Logger: log})
		log.Info("clustered: the mapper runs on the lease holder", "component", "leader", "node_id", id, "lease", cfg.LeaderLease)
	}
	d.metrics.MustRegister(clusterMetrics(d.mapper)...)
	d.hub = fanout.New(st.Events(), fanout.Config{WindowEvents: cfg.WindowEvents, WindowBytes: cfg.WindowBytes, Logger: log})
	// Retention: ingest trimming behind the snapshots, event log edge warnings.
	d.retention = &retention{cfg: cfg, st: st, hub: d.hub, log: log}
	d.retention.register(d.metrics, d.mapper)
	d.svc = api.NewService(st.Events(), d.hub, ingestLog("api"), d.mapper, patients, log)
	d.metrics.MustRegister(metrics.NewSubscriberCollector(d.hub), metrics.NewPipelineCollector(metrics.Pipeline{
		Ingest: st.Ingest(), Events: st.Events(), Mapper: d.mapper.Current, StoreUp: st.Healthy, DeadLetters: st.DeadLetters(),
	}))
	d.svc.DefaultHeartbeat = cfg.Heartbeat
	trusted, _ := cfg.TrustedProxyPrefixes() // checked by config.Load
	d.svc.TrustedProxies = trusted

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

	// The gateway reaches the gRPC server over an in-memory connection.
	internal := bufconn.Listen(1 << 20)
	conn, err := grpc.NewClient("passthrough:///radbridge-internal",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return internal.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		d.closeAll()
		return nil, fmt.Errorf("gateway connection: %w", err)
	}
	// STOW-RS commits through the same handler as C-STORE.
	extra := dicomweb.New(dicomweb.Config{
		Handler: dicomHandler{log: ingestLog("stow-rs"), bodies: bodies, zone: cfg.Timezone, steps: st.Steps()}, Auth: authn, StoreDir: cfg.StoreDir, Sampler: sampler, Logger: log,
		PublicBaseURL: cfg.PublicBaseURL,
		MaxParts:      cfg.STOWMaxParts, MaxElements: cfg.DICOMMaxElements,
	}).Routes()
	// JSON notifications (an Orthanc Lua callback) too.
	extra[notify.Path] = notify.NewHandler(dicomHandler{log: ingestLog("notification"), bodies: bodies, zone: cfg.Timezone, steps: st.Steps()}, authn, log)
	thumbs := thumbnails.New(thumbnails.Config{Bucket: st.Thumbnails(), Hub: d.hub, StoreDir: cfg.StoreDir, MaxPixels: cfg.ThumbnailMaxPixels, Previews: samples, Logger: log})
	extra[thumbnails.Pattern] = thumbs.Handler(authn)
	extra[metricsPattern] = operatorOnly(authn, metrics.Handler(d.metrics))
	extra[statusPattern] = operatorOnly(authn, d.statusHandler())
	// FHIR: the R4 read API (package fhir) and, mounted under it,
	// Subscriptions (package fhir/subscription).
	var fhirSubscriptions *fhirSubs
	fhirCfg := fhir.Config{Events: st.Events(), Auth: authn, Logger: log, Version: ReadBuildInfo().Version}
	if cfg.PublicBaseURL != "" {
		fhirCfg.BaseURL = strings.TrimSuffix(cfg.PublicBaseURL, "/") + fhir.Base
	}
	if cfg.FHIRSubscriptions {
		if fhirSubscriptions, err = newFHIRSubs(ctx, cfg, st, d.hub, authn, addrOf(d.httpLn), log); err != nil {
			d.closeAll()
			return nil, err
		}
		fhirCfg.Topics = subscription.Topics()
		fhirCfg.Resources = append(fhirCfg.Resources, subscription.CapabilityResource())
		fhirCfg.Extra = map[string]http.Handler{"Subscription": fhirSubscriptions.handler, "ws": fhirSubscriptions.handler}
	}
	d.fhir = fhir.New(fhirCfg)
	extra[fhir.Base] = d.fhir
	extra[fhir.Base+"/"] = d.fhir
	extra[explainPattern] = d.explainHandler(authn)
	extra[exceptionsPattern] = d.exceptionsHandler(authn)
	extra[reconcilePattern] = d.reconcileHandler(authn, log, ingestLog("api"))
	d.metrics.MustRegister(newExceptionsCollector(d))
	handler, err := api.NewHTTPHandler(ctx, d.svc, conn, api.HTTPConfig{
		Ready: d.readyErr, WriteTimeout: cfg.WSWriteTimeout, Logger: log, Auth: authn, OriginPatterns: cfg.OriginPatterns(),
		TrustedProxies: trusted, Extra: extra,
		WSTickets: wsTickets(cfg), WSURLToken: cfg.WSURLToken,
	})
	if err != nil {
		d.closeAll()
		return nil, err
	}
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	d.httpSrv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return runCtx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if d.httpsLn != nil {
		d.httpSrv.TLSConfig = d.tls.ServerConfig(d.tlsFront("https", "https-allowed-subjects", cfg.HTTPSAllowedSubjects, "h2", "http/1.1"))
	}
	httpLn, httpsLn := d.limitHTTP(cfg.HTTPMaxConnections, cfg.HTTPReadHeaderTimeout, log) // --http-max-connections

	var g errgroup.Group
	run := func(name string, f func() error) {
		g.Go(func() error {
			err := f()
			if err != nil && !d.stopping.Load() {
				log.Error("stopped unexpectedly; shutting down", "component", name, "err", err)
				cancelRun()
			}
			return err
		})
	}
	run("mapper", func() error { return d.mapper.Run(runCtx) })
	run("fanout", func() error { return d.hub.Run(runCtx) })
	run("fhir", func() error { return d.fhir.Run(runCtx) })
	run("thumbnails", func() error { return thumbs.Run(runCtx) })
	run("previews", func() error { return thumbs.RunPreviews(runCtx) })
	run("retention", func() error { return d.retention.Run(runCtx) })
	run("store-health", func() error { return d.store.MonitorWrites(runCtx) })
	if fhirSubscriptions != nil {
		run("fhir-subscriptions", func() error { return fhirSubscriptions.Run(runCtx) })
	}
	run("grpc", func() error { return d.grpcSrv.Serve(internal) })
	if d.grpcLn != nil {
		run("grpc", func() error { return d.grpcSrv.Serve(d.grpcLn) })
		log.Info("listening", "component", "grpc", "addr", d.grpcLn.Addr().String(), "tls", false)
	}
	if d.grpcTLSLn != nil {
		run("grpc", func() error { return d.grpcTLSSrv.Serve(d.grpcTLSLn) })
		log.Info("listening", "component", "grpc", "addr", d.grpcTLSLn.Addr().String(), "tls", d.tlsMode(cfg.GRPCTLSAllowedSubjects))
	}
	if d.httpLn != nil {
		run("http", func() error {
			if err := d.httpSrv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		log.Info("listening", "component", "http", "addr", d.httpLn.Addr().String(), "tls", false)
	}
	if d.httpsLn != nil {
		run("http", func() error {
			// The certificate comes from TLSConfig (GetCertificate).
			if err := d.httpSrv.ServeTLS(httpsLn, "", ""); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		log.Info("listening", "component", "http", "addr", d.httpsLn.Addr().String(), "tls", d.tlsMode(cfg.HTTPSAllowedSubjects))
	}
	if d.metricsLn != nil {
		d.metricsSrv = &http.Server{Handler: metricsServer(d.metrics), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		run("metrics", func() error {
			if err := d.metricsSrv.Serve(d.metricsLn); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		log.Info("listening", "component", "metrics", "addr", d.metricsLn.Addr().String())
	}
	recvCtx, stopReceivers := context.WithCancel(context.WithoutCancel(ctx))
	d.stopReceivers = stopReceivers
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
			d.receivers.Go(func() error { return d.dicomSrv.Serve(recvCtx, ln) })
			log.Info("listening", "component", "dicom", "addr", ln.Addr().String(), "ae_title", cfg.AETitle, "tls", mode)
		} else {
			d.receivers.Go(func() error { return d.hl7Srv.Serve(recvCtx, ln) })
			log.Info("listening", "component", "hl7", "addr", ln.Addr().String(), "tls", mode)
		}
	}

	go func() {
		if err := d.hub.WaitReady(runCtx); err != nil {
			return
		}
		for !d.mapper.Ready() {
			select {
			case <-runCtx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		d.ready.Store(true)
		d.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		d.health.SetServingStatus(rbv1.EventService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
		log.Info("ready")
	}()

	go func() {
		select {
		case <-ctx.Done():
		case <-runCtx.Done():
		}
		d.shutdown(cancelRun, conn)
		d.err = g.Wait()
		d.store.Close()
		if d.tracer != nil {
			flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := d.tracer.Shutdown(flush); err != nil {
				log.Warn("export the last spans", "component", "tracing", "err", err)
			}
			cancel()
		}
		log.Info("stopped")
		close(d.done)
	}()
	return d, nil
}

// shutdown: not ready → close listeners → drain → end streams → stop.
func (d *Daemon) shutdown(cancelRun context.CancelFunc, conn *grpc.ClientConn) {
	d.stopOnce.Do(func() {
		d.log.Info("shutting down")
		d.ready.Store(false)
		d.stopping.Store(true)
		d.health.Shutdown()
		// Receivers first: stop accepting, let in-flight messages be recorded
		// and acknowledged (each drains within --shutdown-timeout).
		d.stopReceivers()
		if err := d.receivers.Wait(); err != nil {
			d.log.Error("receiver stopped with error", "err", err)
		}
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
		cancelRun()
		select {
		case <-grpcDone:
		case <-deadline.Done():
			d.grpcSrv.Stop()
			if d.grpcTLSSrv != nil {
				d.grpcTLSSrv.Stop()
			}
		}
		<-httpDone
		conn.Close()
	})
}

func (d *Daemon) closeAll() {
	if d.tracer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = d.tracer.Shutdown(ctx)
		cancel()
	}
	for _, l := range []net.Listener{d.grpcLn, d.httpLn, d.mllpLn, d.dicomLn, d.metricsLn, d.mllpTLSLn, d.dicomTLSLn, d.grpcTLSLn, d.httpsLn} {
		if l != nil {
			l.Close()
		}
	}
	d.store.Close()
}

func (d *Daemon) readyErr() error {
	switch {
	case d.stopping.Load():
		return errors.New("shutting down")
	case !d.store.Healthy():
		return errors.New("store unavailable")
	case d.store.WriteHealth() != nil:
		return d.store.WriteHealth()
	case !d.ready.Load():
		return errors.New("replaying the ingest log")
	}
	return nil
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
		if *l.ln, err = net.Listen("tcp", l.addr); err != nil {
			return fmt.Errorf("TLS listener --%s %s: %w", l.flag, l.addr, err)
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

// Ready reports readiness.
func (d *Daemon) Ready() bool { return d.readyErr() == nil }

// Wait blocks until the daemon stopped and returns why.
func (d *Daemon) Wait() error {
	<-d.done
	return d.err
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
