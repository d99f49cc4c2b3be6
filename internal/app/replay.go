package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"radbridge/ingest"
	"radbridge/internal/config"
	"radbridge/internal/logging"
	"radbridge/leader"
	"radbridge/mapper"
	"radbridge/store"
)

const replayUsage = `usage: radbridge replay [--from SEQ] [--check | --dry-run] [serve flags: --data-dir D | --nats-url U, mapping options...]

Rebuilds the mapper state by mapping the ingest log again with the current
mapping options, starting from the newest snapshot before ingest record SEQ
(from the first record when SEQ is 1, the default). Events already in the
event log are not sent again: each re-derived one is compared with the
logged event of the same key and the differences are reported. Events of
observations the event log has not covered yet are appended. The patients'
read models (GetPatientImaging) and a new snapshot are written from the
rebuilt state.

--check (or --dry-run) writes nothing and exits 1 when the rebuilt events or
state differ from the event log or the stored snapshots.

--retry-dead-letters maps the dead-lettered records (radbridge status lists
them) again, after a fix (a new release, a larger --max-event-bytes): each
becomes a retry record at the head of the ingest log, mapped on the current
state; its events are appended like any new event, and its dead letter is
removed. A record that fails again stays, with the new reason.

Run it with the daemon stopped: it refuses an embedded data directory a
daemon holds; with --nats-url it refuses while a daemon holds the mapper
lease, and holds that lease itself while it runs.
`

// Replay is radbridge replay: it rebuilds the mapper state from the ingest
// log, with the daemon stopped. It returns the process exit code.
func Replay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var from uint64
	var check, dry, retryDead bool
	cfg, err := config.LoadWith("radbridge replay", args, os.Getenv, stderr, func(fs *flag.FlagSet) {
		fs.Uint64Var(&from, "from", 1, "first ingest sequence to map again (the state is rebuilt from the newest snapshot before it)")
		fs.BoolVar(&check, "check", false, "rebuild in memory, write nothing; exit 1 when events or state differ from what is stored")
		fs.BoolVar(&dry, "dry-run", false, "same as --check")
		fs.BoolVar(&retryDead, "retry-dead-letters", false, "map the dead-lettered records again, at the head of the ingest log")
		fs.Usage = func() { fmt.Fprint(stderr, replayUsage) }
	})
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		printConfigError(stderr, "radbridge replay", err)
		return 2
	}
	dry = dry || check
	if dry && retryDead {
		fmt.Fprintln(stderr, "radbridge replay: --retry-dead-letters writes: it cannot be combined with --check")
		return 2
	}
	if from == 0 {
		from = 1
	}
	log := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if cfg.NATSURL == "" {
		if _, err := os.Stat(cfg.DataDir); err != nil {
			fmt.Fprintf(stderr, "radbridge replay: --data-dir %s: %v\n", cfg.DataDir, err)
			return 1
		}
	}
	natsTLS, err := natsClientTLS(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "radbridge replay: %v\n", err)
		return 1
	}
	st, err := store.Open(ctx, store.Config{
		DataDir: cfg.DataDir, NATSURL: cfg.NATSURL, Replicas: cfg.NATSReplicas,
		SyncAlways: cfg.Fsync, GroupCommit: cfg.GroupCommit, DuplicateWindow: cfg.DuplicateWindow, Logger: log,
		EventsMaxAge: cfg.EventsMaxAge, EventsMaxBytes: cfg.EventsMaxBytes,
		TLS: natsTLS, CredsFile: cfg.NATSCredsFile,
		SeenMaxAge: store.SeenMaxAge(cfg.DedupHorizon), // the mapper's dedup keys
	})
	if err != nil {
		fmt.Fprintf(stderr, "radbridge replay: %v\n", err)
		return 1
	}
	defer st.Close()
	mc := mapperConfig(cfg, st, log)
	// The rebuilt read models replace the stored ones whatever their
	// position (the daemon's writes are fenced against older ones).
	mc.ReadModel = st.Patients().Overwrite()
	if dry {
		mc.DeadLetters = nil
	}
	if retryDead {
		dls, err := st.DeadLetters().DeadLetters(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "radbridge replay: %v\n", err)
			return 1
		}
		for _, dl := range dls {
			o, err := ingest.NewRetry(dl.Seq, time.Now())
			if err == nil {
				_, _, err = st.Ingest().Append(ctx, o)
			}
			if err != nil {
				fmt.Fprintf(stderr, "radbridge replay: record the retry of ingest record %d: %v\n", dl.Seq, err)
				return 1
			}
		}
		fmt.Fprintf(stdout, "dead letters to map again: %d\n", len(dls))
		defer func() {
			if left, err := st.DeadLetters().DeadLetters(context.WithoutCancel(ctx)); err == nil {
				fmt.Fprintf(stdout, "dead letters left: %d\n", len(left))
			}
		}()
	}
	m := mapper.New(mc)
	run := func(ctx context.Context) (*mapper.ReplayReport, error) {
		return m.Replay(ctx, mapper.ReplayOptions{From: from, DryRun: dry})
	}
	var rep *mapper.ReplayReport
	if cfg.NATSURL != "" {
		// A shared store: take the mapper lease so no daemon maps meanwhile.
		leases, err := st.Leases(ctx, cfg.LeaderLease)
		if err != nil {
			fmt.Fprintf(stderr, "radbridge replay: %v\n", err)
			return 1
		}
		if ent, err := leases.Get(ctx, "mapper"); err == nil {
			fmt.Fprintf(stderr, "radbridge replay: the mapper lease is held by %q: stop the daemons first\n", ent.Value())
			return 1
		}
		rctx, cancel := context.WithCancel(ctx)
		el := leader.New(leader.Config{KV: leases, Key: "mapper", ID: nodeID("") + "-replay", Lease: cfg.LeaderLease, Logger: log})
		var rerr error
		_ = el.Run(rctx, func(wctx context.Context) error {
			defer cancel()
			rep, rerr = run(wctx)
			return rerr
		})
		cancel()
		err = rerr
		if rep == nil && err == nil {
			err = ctx.Err()
		}
	} else {
		rep, err = run(ctx)
	}
	if err != nil {
		fmt.Fprintf(stderr, "radbridge replay: %v\n", err)
		return 1
	}
	printReplay(stdout, rep, from, dry)
	if dry && !rep.Clean() {
		return 1
	}
	return 0
}

func printReplay(w io.Writer, r *mapper.ReplayReport, from uint64, dry bool) {
	start := "an empty state"
	if r.StartedFrom > 0 {
		start = fmt.Sprintf("the snapshot at ingest record %d", r.StartedFrom)
	}
	fmt.Fprintf(w, "rebuilt from %s: %d ingest records mapped again (to %d)\n", start, r.Applied, r.Head)
	fmt.Fprintf(w, "events compared with the event log: %d; differ: %d%s%s\n", r.Compared, r.Differ, counts(" by type", r.DifferByType), counts(" by resource", r.DifferByResource))
	fmt.Fprintf(w, "events now derived that the log lacks: %d; logged events no longer derived: %d; not verifiable (removed by retention): %d\n", r.Missing, r.Dropped, r.Unverifiable)
	if r.Differ+r.Missing+r.Dropped > 0 {
		fmt.Fprintln(w, "  (these corrections are not sent to subscribers: the event log keeps the events they already have; the read models show the corrected state)")
	}
	fmt.Fprintf(w, "stored snapshots compared: %d; differing: %v\n", r.StatesCompared, r.StateDiffers)
	verb := "appended"
	if dry {
		verb = "would be appended"
	}
	fmt.Fprintf(w, "events of observations the log had not covered, %s: %d\n", verb, r.Appended)
	if dry {
		if r.Clean() {
			fmt.Fprintln(w, "check: the state and events match a clean replay")
		} else {
			fmt.Fprintln(w, "check: the state or events differ from a clean replay")
		}
		return
	}
	fmt.Fprintf(w, "read models written: %d; snapshot written at ingest record %d\n", r.PatientsWritten, r.Snapshot)
}

func counts(label string, m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return label + " (" + strings.Join(parts, ", ") + ")"
}
