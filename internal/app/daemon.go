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
	"radbridge/hl7/receiver"
	"radbridge/internal/config"
	"radbridge/internal/metrics"
	"radbridge/leader"
	"radbridge/mapper"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/store"
)

// Daemon is a running radbridge.
type Daemon struct {
	cfg *config.Config
	log *slog.Logger

	store  *store.Store
	mapper *mappers
	hub    *fanout.Hub
	svc    *api.Service

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
	started    time.Time

	ready    atomic.Bool
	stopping atomic.Bool
	done     chan struct{}
	err      error
	stopOnce sync.Once
}

// Start opens the store, binds the listeners and starts serving. The daemon
// runs until ctx ends; Wait returns after an orderly shutdown.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, done: make(chan struct{}), started: time.Now()}
	d.metrics = metrics.NewRegistry()
	bi := ReadBuildInfo()
	metrics.Build(d.metrics, bi.Version, bi.GoVersion, bi.VCSRevision, d.started)
	st, err := store.Open(ctx, store.Config{
		DataDir: cfg.DataDir, NATSURL: cfg.NATSURL, Replicas: cfg.NATSReplicas,
		SyncAlways: cfg.Fsync, DuplicateWindow: cfg.DuplicateWindow, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	d.store = st
	where := cfg.DataDir
	if cfg.NATSURL != "" {
		where = cfg.NATSURL
	}
	log.Info("store open", "component", "store", "at", where, "embedded", cfg.NATSURL == "", "fsync", cfg.Fsync)

	d.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("gRPC listener --grpc-addr %s: %w", cfg.GRPCAddr, err)
	}
	d.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		d.grpcLn.Close()
		st.Close()
		return nil, fmt.Errorf("HTTP listener --http-addr %s: %w", cfg.HTTPAddr, err)
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
	if cfg.MLLPAddr != "" {
		d.hl7Srv, err = receiver.New(receiver.Config{
			Handler: hl7Handler{log: st.Ingest(), bodies: bodies}, MaxMessageSize: cfg.MLLPMaxMessage, MaxConnections: cfg.MLLPMaxConnections,
			ReadTimeout: cfg.MLLPReadTimeout, IdleTimeout: cfg.MLLPIdleTimeout, DrainTimeout: cfg.ShutdownTimeout, Logger: log,
			MaxConnectionsPerHost: cfg.MLLPMaxConnectionsPerHost,
		})
		if err == nil {
			d.mllpLn, err = net.Listen("tcp", cfg.MLLPAddr)
		}
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("MLLP listener --mllp-addr %s: %w", cfg.MLLPAddr, err)
		}
		d.metrics.MustRegister(metrics.NewHL7Collector(d.hl7Srv))
	}
	if cfg.DICOMAddr != "" {
		d.dicomSrv, err = scp.New(scp.Config{
			AETitle: cfg.AETitle, AllowedCallers: allowedCallers(cfg.DICOMAllowedCallers), MaxAssociations: cfg.DICOMMaxAssociations,
			MaxPDULength: uint32(cfg.DICOMMaxPDU), IdleTimeout: cfg.DICOMIdleTimeout, DrainTimeout: cfg.ShutdownTimeout,
			StoreDir: cfg.StoreDir, Logger: log,
			MaxAssociationsPerHost: cfg.DICOMMaxAssociationsPerHost, ARTIMTimeout: cfg.DICOMARTIMTimeout,
		}, dicomHandler{log: st.Ingest(), bodies: bodies})
		if err == nil {
			d.dicomLn, err = net.Listen("tcp", cfg.DICOMAddr)
		}
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("DICOM listener --dicom-addr %s: %w", cfg.DICOMAddr, err)
		}
	}

	authn, err := auth.New(auth.Config{
		Mode: cfg.Auth, TokensFile: cfg.AuthTokensFile, JWTKeyFile: cfg.AuthJWTKeyFile, JWKSFile: cfg.AuthJWKSFile,
		JWTIssuer: cfg.AuthJWTIssuer, JWTAudience: cfg.AuthJWTAudience,
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
	d.mapper = &mappers{newMapper: func() *mapper.Mapper {
		return mapper.New(mapper.Config{
			Ingest: st.Ingest(), Events: st.Events(), ReadModel: patients, Logger: log,
			Rules: mapper.Rules(mapper.Options{
				HL7PatientAuthority: cfg.HL7PatientIssuer, HL7Accession: splitList(cfg.HL7Accession),
				HL7ImagingSections: splitList(cfg.HL7ImagingSections), DICOMPatientIssuer: cfg.PatientIssuer,
				QuietPeriod: cfg.StudyQuietPeriod, ViewerURL: cfg.ViewerURL, WADORSBase: cfg.WADORSBase,
			}),
		})
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
	d.hub = fanout.New(st.Events(), fanout.Config{WindowEvents: cfg.WindowEvents, WindowBytes: cfg.WindowBytes, Logger: log})
	d.svc = api.NewService(st.Events(), d.hub, st.Ingest(), d.mapper, patients, log)
	d.svc.DefaultHeartbeat = cfg.Heartbeat

	d.grpcSrv = grpc.NewServer(
		grpc.MaxRecvMsgSize(64<<10),
		grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(authn)),
		grpc.ChainStreamInterceptor(auth.StreamServerInterceptor(authn)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	rbv1.RegisterEventServiceServer(d.grpcSrv, d.svc)
	d.health = health.NewServer()
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	d.health.SetServingStatus(rbv1.EventService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(d.grpcSrv, d.health)
	reflection.Register(d.grpcSrv)

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
		Handler: dicomHandler{log: st.Ingest(), bodies: bodies}, Auth: authn, StoreDir: cfg.StoreDir, Logger: log,
	}).Routes()
	// JSON notifications (an Orthanc Lua callback) too.
	extra[notify.Path] = notify.NewHandler(dicomHandler{log: st.Ingest(), bodies: bodies}, authn, log)
	thumbs := &thumbnails{kv: st.State(), hub: d.hub, storeDir: cfg.StoreDir, log: log}
	extra[thumbnailPattern] = thumbs.handler(authn)
	extra[metricsPattern] = operatorOnly(authn, metrics.Handler(d.metrics))
	handler, err := api.NewHTTPHandler(ctx, d.svc, conn, api.HTTPConfig{
		Ready: d.readyErr, WriteTimeout: cfg.WSWriteTimout, Logger: log, Auth: authn, OriginPatterns: cfg.OriginPatterns(),
		Extra: extra,
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
	run("thumbnails", func() error { return thumbs.Run(runCtx) })
	run("grpc", func() error { return d.grpcSrv.Serve(d.grpcLn) })
	run("grpc", func() error { return d.grpcSrv.Serve(internal) })
	run("http", func() error {
		if err := d.httpSrv.Serve(d.httpLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
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
	if d.hl7Srv != nil {
		d.receivers.Go(func() error { return d.hl7Srv.Serve(recvCtx, d.mllpLn) })
		log.Info("listening", "component", "hl7", "addr", d.mllpLn.Addr().String())
	}
	if d.dicomSrv != nil {
		d.receivers.Go(func() error { return d.dicomSrv.Serve(recvCtx, d.dicomLn) })
		log.Info("listening", "component", "dicom", "addr", d.dicomLn.Addr().String(), "ae_title", cfg.AETitle)
	}
	log.Info("listening", "component", "grpc", "addr", d.grpcLn.Addr().String())
	log.Info("listening", "component", "http", "addr", d.httpLn.Addr().String())

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
		go func() { d.grpcSrv.GracefulStop(); close(grpcDone) }()
		d.svc.Stop()
		cancelRun()
		select {
		case <-grpcDone:
		case <-deadline.Done():
			d.grpcSrv.Stop()
		}
		<-httpDone
		conn.Close()
	})
}

func (d *Daemon) closeAll() {
	for _, l := range []net.Listener{d.grpcLn, d.httpLn, d.mllpLn, d.dicomLn, d.metricsLn} {
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

// GRPCAddr is the bound gRPC address.
func (d *Daemon) GRPCAddr() string { return d.grpcLn.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (d *Daemon) HTTPAddr() string { return d.httpLn.Addr().String() }

// Ready reports readiness.
func (d *Daemon) Ready() bool { return d.readyErr() == nil }

// Wait blocks until the daemon stopped and returns why.
func (d *Daemon) Wait() error {
	<-d.done
	return d.err
}
