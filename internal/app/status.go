package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"radbridge/mapper"
	"radbridge/store"
)

// statusPattern is where the HTTP front serves the daemon's state.
const statusPattern = "GET /v1/status"

// Status is the daemon's state as GET /v1/status and radbridge status
// report it. It holds no patient data: counts, sequences, addresses.
type Status struct {
	Version       string           `json:"version"`
	Build         BuildInfo        `json:"build"`
	Started       time.Time        `json:"started"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	Ready         bool             `json:"ready"`
	State         string           `json:"state"` // ready, or why not
	Listeners     []Listener       `json:"listeners"`
	Store         StoreStatus      `json:"store"`
	Mapper        MapperStatus     `json:"mapper"`
	Subscribers   map[string]int64 `json:"subscribers"`
	// DeadLetters are the ingest records the mapper passed over (the
	// oldest deadLettersShown of them, and how many there are).
	DeadLetters DeadLetterStatus `json:"dead_letters"`
	HL7         *HL7Status       `json:"hl7,omitempty"`
	DICOM       *DICOMStatus     `json:"dicom,omitempty"`
}

// Listener is one bound address.
type Listener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	TLS     bool   `json:"tls"`
}

// StoreStatus says where the store is and how big its streams are.
type StoreStatus struct {
	Embedded  bool                `json:"embedded"`
	Location  string              `json:"location"` // data dir, or NATS URLs without credentials
	Connected bool                `json:"connected"`
	Streams   []store.StreamState `json:"streams,omitempty"`
	Error     string              `json:"error,omitempty"`
}

// MapperStatus is the mapper's position. Role is "leader" when this
// process maps (always, when it is alone) and "follower" when another
// process of a cluster holds the mapper lease.
type MapperStatus struct {
	Role               string `json:"role"`
	Clustered          bool   `json:"clustered"`
	Leader             string `json:"leader,omitempty"` // the lease holder's node id, in a cluster
	Running            bool   `json:"running"`
	Ready              bool   `json:"ready"`
	AppliedSequence    uint64 `json:"applied_sequence"`
	IngestHead         uint64 `json:"ingest_head"`
	Lag                uint64 `json:"lag"`
	QuietPeriodStudies int    `json:"quiet_period_studies"`
	EventsLastSequence uint64 `json:"events_last_sequence"`
}

// DeadLetterStatus lists dead-lettered records: sequence, kind, reason.
type DeadLetterStatus struct {
	Count   int                 `json:"count"`
	Records []mapper.DeadLetter `json:"records"`
	Error   string              `json:"error,omitempty"`
}

// deadLettersShown bounds the records GET /v1/status lists.
const deadLettersShown = 20

// HL7Status are the MLLP receiver's counters since start.
type HL7Status struct {
	Messages        int64            `json:"messages"`
	Acks            map[string]int64 `json:"acks"`
	ConnectionsOpen int64            `json:"connections_open"`
	Connections     int64            `json:"connections"`
	RejectedFrames  int64            `json:"rejected_frames"`
	StoreFailures   int64            `json:"store_failures"`
}

// DICOMStatus are the DICOM SCP's counters since start.
type DICOMStatus struct {
	AssociationsOpen     int64  `json:"associations_open"`
	AssociationsAccepted uint64 `json:"associations_accepted"`
	AssociationsRejected uint64 `json:"associations_rejected"`
	AssociationsAborted  uint64 `json:"associations_aborted"`
	InstancesStored      uint64 `json:"instances_stored"`
	StoreFailures        uint64 `json:"store_failures"`
	Echoes               uint64 `json:"echoes"`
	IANs                 uint64 `json:"ians"`
	MPPS                 uint64 `json:"mpps"`
}

// Status reports the daemon's state.
func (d *Daemon) Status(ctx context.Context) Status {
	bi := ReadBuildInfo()
	s := Status{Version: bi.Version, Build: bi, Started: d.started.UTC(), UptimeSeconds: time.Since(d.started).Round(time.Second).Seconds(), State: "ready"}
	if err := d.readyErr(); err != nil {
		s.State = err.Error()
	} else {
		s.Ready = true
	}
	add := func(name, addr string, tls bool) {
		if addr != "" {
			s.Listeners = append(s.Listeners, Listener{Name: name, Address: addr, TLS: tls})
		}
	}
	add("grpc", addrOf(d.grpcLn), false)
	add("grpc-tls", addrOf(d.grpcTLSLn), true)
	add("http", addrOf(d.httpLn), false)
	add("https", addrOf(d.httpsLn), true)
	add("mllp", addrOf(d.mllpLn), false)
	add("mllp-tls", addrOf(d.mllpTLSLn), true)
	add("dicom", addrOf(d.dicomLn), false)
	add("dicom-tls", addrOf(d.dicomTLSLn), true)
	add("metrics", addrOf(d.metricsLn), false)

	s.Store = StoreStatus{Embedded: d.cfg.NATSURL == "", Location: d.cfg.DataDir, Connected: d.store.Healthy()}
	if d.cfg.NATSURL != "" {
		s.Store.Location = store.RedactURLs(d.cfg.NATSURL)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	streams, err := d.store.Streams(ctx)
	s.Store.Streams = streams
	if err != nil {
		s.Store.Error = err.Error()
	}
	for _, st := range streams {
		switch st.Name {
		case store.IngestStream:
			s.Mapper.IngestHead = st.LastSequence
		case store.EventsStream:
			s.Mapper.EventsLastSequence = st.LastSequence
		}
	}

	role, holder := d.mapper.Status()
	s.Mapper.Clustered = d.mapper.Clustered()
	s.Mapper.Role = role
	if role == "single" {
		s.Mapper.Role = "leader"
	}
	s.Mapper.Leader = holder
	if m := d.mapper.Current(); m != nil {
		s.Mapper.Running = true
		s.Mapper.Ready = m.Ready()
		s.Mapper.AppliedSequence = m.Applied()
		s.Mapper.QuietPeriodStudies = m.PendingTimers()
		if s.Mapper.IngestHead > s.Mapper.AppliedSequence {
			s.Mapper.Lag = s.Mapper.IngestHead - s.Mapper.AppliedSequence
		}
	}

	s.DeadLetters.Records = []mapper.DeadLetter{}
	if dls, err := d.store.DeadLetters().DeadLetters(ctx); err != nil {
		s.DeadLetters.Error = err.Error()
	} else {
		s.DeadLetters.Count = len(dls)
		s.DeadLetters.Records = dls[:min(len(dls), deadLettersShown)]
	}

	s.Subscribers = map[string]int64{"grpc": 0, "websocket": 0, "room": 0}
	for t, n := range d.hub.Stats().Subscribers {
		s.Subscribers[t] += n
	}
	if d.hl7Srv != nil {
		st := d.hl7Srv.Stats()
		h := &HL7Status{Messages: st.Messages, Acks: map[string]int64{}, ConnectionsOpen: st.ActiveConnections, Connections: st.Connections,
			RejectedFrames: st.OversizedFrames + st.InvalidFrames, StoreFailures: st.HandlerErrors}
		for code, n := range st.Acks {
			if n > 0 {
				h.Acks[code] = n
			}
		}
		s.HL7 = h
	}
	if d.dicomSrv != nil {
		st := d.dicomSrv.Stats()
		s.DICOM = &DICOMStatus{AssociationsOpen: st.ActiveAssociations, AssociationsAccepted: st.AssociationsAccepted,
			AssociationsRejected: st.AssociationsRejected, AssociationsAborted: st.AssociationsAborted, InstancesStored: st.InstancesStored,
			StoreFailures: st.StoreFailures, Echoes: st.Echoes, IANs: st.IANs, MPPS: st.MPPS}
	}
	return s
}

// statusHandler serves Status as JSON.
func (d *Daemon) statusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d.Status(r.Context()))
	})
}

// statusCmd is radbridge status: it asks a running daemon for its state.
func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "localhost:8080", "the daemon's HTTP address (--http-addr, or --https-addr with --tls), or a base URL (http://host:port)")
	asJSON := fs.Bool("json", false, "print the daemon's JSON as is")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (else $RADBRIDGE_TOKEN), needed when the daemon runs with --auth")
	timeout := fs.Duration("timeout", 5*time.Second, "time to wait for the answer")
	tf := newTLSClientFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "radbridge status: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	tc, err := tf.config()
	if err != nil {
		fmt.Fprintf(stderr, "radbridge status: %v\n", err)
		return 2
	}
	client, base := &http.Client{}, "http://"+*addr
	if tc != nil {
		client.Transport = &http.Transport{TLSClientConfig: tc}
		base = "https://" + *addr
	}
	if strings.Contains(*addr, "://") {
		base = strings.TrimRight(*addr, "/")
	}
	token := os.Getenv("RADBRIDGE_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "radbridge status: --token-file: %v\n", err)
			return 2
		}
		token = strings.TrimSpace(string(b))
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/status", nil)
	if err != nil {
		fmt.Fprintf(stderr, "radbridge status: %v\n", err)
		return 2
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		if msg := wrongPort(parent, "radbridge status", req.URL.Host, protoHTTP, req.URL.Scheme == "https"); msg != "" {
			fmt.Fprintln(stderr, msg)
			return 1
		}
		fmt.Fprintf(stderr, "radbridge status: daemon unreachable: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fmt.Fprintf(stderr, "radbridge status: %v\n", err)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "radbridge status: %s: %s %s\n", req.URL, resp.Status, strings.TrimSpace(string(body)))
		return 1
	}
	var s Status
	if err := json.Unmarshal(body, &s); err != nil {
		fmt.Fprintf(stderr, "radbridge status: %s: not a radbridge status: %v\n", req.URL, err)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
	} else {
		printStatus(stdout, s)
	}
	if !s.Ready {
		fmt.Fprintf(stderr, "radbridge status: not ready: %s\n", s.State)
		return 1
	}
	return 0
}

// printStatus writes s for a person.
func printStatus(w io.Writer, s Status) {
	state := "READY"
	if !s.Ready {
		state = "NOT READY: " + s.State
	}
	fmt.Fprintf(w, "radbridge %s, up %s, %s\n", s.Version, (time.Duration(s.UptimeSeconds) * time.Second).String(), state)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nlisteners:")
	for _, l := range s.Listeners {
		tls := ""
		if l.TLS {
			tls = "tls"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", l.Name, l.Address, tls)
	}
	tw.Flush()
	where := "embedded at " + s.Store.Location
	if !s.Store.Embedded {
		where = "external at " + s.Store.Location
	}
	conn := "connected"
	if !s.Store.Connected {
		conn = "DISCONNECTED"
	}
	fmt.Fprintf(w, "\nstore: %s, %s\n", where, conn)
	if s.Store.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", s.Store.Error)
	}
	for _, st := range s.Store.Streams {
		fmt.Fprintf(tw, "  %s\t%d messages\t%s\tsequences %d-%d\n", st.Name, st.Messages, humanBytes(st.Bytes), st.FirstSequence, st.LastSequence)
	}
	tw.Flush()
	m := s.Mapper
	fmt.Fprintf(w, "\nmapper: %s", m.Role)
	if m.Clustered && m.Leader != "" {
		fmt.Fprintf(w, " (leader: %s)", m.Leader)
	}
	switch {
	case !m.Running:
		fmt.Fprintln(w, ", not mapping here")
	default:
		phase := "replaying the ingest log"
		if m.Ready {
			phase = "live"
		}
		fmt.Fprintf(w, ", %s, applied %d of %d (lag %d), %d studies in their quiet period, %d events\n",
			phase, m.AppliedSequence, m.IngestHead, m.Lag, m.QuietPeriodStudies, m.EventsLastSequence)
	}
	if dl := s.DeadLetters; dl.Count > 0 || dl.Error != "" {
		fmt.Fprintf(w, "\ndead letters: %d records not mapped (retry after a fix: radbridge replay --retry-dead-letters)\n", dl.Count)
		if dl.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", dl.Error)
		}
		for _, r := range dl.Records {
			fmt.Fprintf(tw, "  ingest %d\t%s\t%s\t%s\n", r.Seq, r.Kind, r.At.UTC().Format(time.RFC3339), r.Reason)
		}
		tw.Flush()
	} else {
		fmt.Fprintln(w, "\ndead letters: none")
	}
	var subs []string
	for t := range s.Subscribers {
		subs = append(subs, t)
	}
	sort.Strings(subs)
	for i, t := range subs {
		subs[i] = fmt.Sprintf("%s %d", t, s.Subscribers[t])
	}
	fmt.Fprintf(w, "\nsubscribers: %s\n", strings.Join(subs, ", "))
	if h := s.HL7; h != nil {
		var acks []string
		for code, n := range h.Acks {
			acks = append(acks, fmt.Sprintf("%s %d", code, n))
		}
		sort.Strings(acks)
		answered := ""
		if len(acks) > 0 {
			answered = " (" + strings.Join(acks, ", ") + ")"
		}
		fmt.Fprintf(w, "\nhl7: %d messages%s, %d connections open, %d since start, %d frames rejected, %d not stored\n",
			h.Messages, answered, h.ConnectionsOpen, h.Connections, h.RejectedFrames, h.StoreFailures)
	}
	if d := s.DICOM; d != nil {
		fmt.Fprintf(w, "dicom: %d associations open; %d accepted, %d rejected, %d aborted since start; %d instances stored, %d refused; %d echoes, %d IAN, %d MPPS\n",
			d.AssociationsOpen, d.AssociationsAccepted, d.AssociationsRejected, d.AssociationsAborted, d.InstancesStored, d.StoreFailures, d.Echoes, d.IANs, d.MPPS)
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
