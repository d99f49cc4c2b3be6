package app

import (
	"context"
	"log/slog"
	"net"
	"strings"

	"radbridge/auth"
	"radbridge/fanout"
	"radbridge/fhir/subscription"
	"radbridge/internal/config"
	"radbridge/leader"
	"radbridge/store"
)

// fhirSubs wires FHIR Subscriptions (package fhir/subscription): the
// routes on the HTTP and HTTPS servers, and the delivery engine, which
// runs in one process of a cluster at a time (the "fhir-subscriptions"
// lease) so each event is delivered once.
type fhirSubs struct {
	engine  *subscription.Engine
	handler *subscription.Handler
	elector *leader.Elector // nil: alone
	hub     *fanout.Hub
}

func newFHIRSubs(ctx context.Context, cfg *config.Config, st *store.Store, hub *fanout.Hub, authn auth.Authenticator, httpAddr string, log *slog.Logger) (*fhirSubs, error) {
	kv, tokens, err := st.FHIRSubscriptions(ctx)
	if err != nil {
		return nil, err
	}
	allow, _ := subscription.ParseAllow(cfg.FHIRRestHookAllow) // checked by config.Load
	base := strings.TrimSuffix(cfg.PublicBaseURL, "/")
	if base == "" && httpAddr != "" {
		host, port, _ := net.SplitHostPort(httpAddr)
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "localhost"
		}
		base = "http://" + net.JoinHostPort(host, port)
	}
	if base != "" {
		base += "/fhir"
	}
	sc := subscription.Config{
		Store: subscription.NewStore(kv, tokens), Hub: hub, Log: st.Events(), BaseURL: base, Allow: allow,
		MaxFailures: cfg.FHIRRestHookMaxFailures, RetryBase: cfg.FHIRRestHookRetryBase,
		TokenTTL: cfg.FHIRWSBindingTokenTTL, WriteTimeout: cfg.WSWriteTimeout, Logger: log,
		MaxPerSubject: cfg.FHIRSubscriptionsPerSubject, MaxTotal: cfg.FHIRSubscriptionsMax,
	}
	f := &fhirSubs{engine: subscription.NewEngine(sc), handler: subscription.NewHandler(sc, authn), hub: hub}
	if cfg.NATSURL != "" {
		leases, err := st.Leases(ctx, cfg.LeaderLease)
		if err != nil {
			return nil, err
		}
		f.elector = leader.New(leader.Config{KV: leases, Key: "fhir-subscriptions", ID: nodeID(cfg.NodeID), Lease: cfg.LeaderLease, Logger: log})
	}
	return f, nil
}

// Run follows the subscription bucket for the HTTP front and delivers
// while this process may.
func (f *fhirSubs) Run(ctx context.Context) error {
	// Every process follows who owns which subscription (caps, search).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	owners := make(chan error, 1)
	go func() { owners <- f.handler.Run(ctx) }()
	err := f.deliver(ctx)
	cancel()
	if oerr := <-owners; err == nil {
		err = oerr
	}
	return err
}

// deliver delivers while this process may: at once when alone, else in
// every term of the lease.
func (f *fhirSubs) deliver(ctx context.Context) error {
	if err := f.hub.WaitReady(ctx); err != nil {
		return nil
	}
	if f.elector == nil {
		return f.engine.Run(ctx)
	}
	return f.elector.Run(ctx, f.engine.Run)
}
