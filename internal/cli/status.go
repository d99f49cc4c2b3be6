package cli

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

	"radbridge/internal/opsapi"
)

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
	var s opsapi.Status
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
func printStatus(w io.Writer, s opsapi.Status) {
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
