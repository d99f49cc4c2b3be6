package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"radbridge/internal/opsapi"
)

// apiGet is GET path on a daemon's HTTP front for the CLI clients
// (explain, exceptions): the body of a 200 answer.
func apiGet(ctx context.Context, addr string, tf tlsClientFlags, tokenFile, path string, timeout time.Duration) ([]byte, error) {
	tc, err := tf.config()
	if err != nil {
		return nil, err
	}
	client, base := &http.Client{}, "http://"+addr
	if tc != nil {
		client.Transport = &http.Transport{TLSClientConfig: tc}
		base = "https://" + addr
	}
	if strings.Contains(addr, "://") {
		base = strings.TrimRight(addr, "/")
	}
	token := os.Getenv("RADBRIDGE_TOKEN")
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon unreachable: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s %s", req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// explainCmd is radbridge explain: it asks a running daemon why a study,
// order or patient's events have or have not fired.
func explainCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "localhost:8080", "the daemon's HTTP address (--http-addr, or --https-addr with --tls), or a base URL (http://host:port)")
	asJSON := fs.Bool("json", false, "print the daemon's JSON as is")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (else $RADBRIDGE_TOKEN), needed when the daemon runs with --auth")
	timeout := fs.Duration("timeout", 10*time.Second, "time to wait for the answer")
	study := fs.String("study", "", "Study Instance UID")
	accession := fs.String("accession", "", "accession number")
	order := fs.String("order", "", "order: ServiceRequest id, placer or filler order number, or accession")
	patient := fs.String("patient", "", "patient id")
	tf := newTLSClientFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var key, val string
	n := 0
	for _, kv := range [][2]string{{"study", *study}, {"accession", *accession}, {"order", *order}, {"patient", *patient}} {
		if kv[1] != "" {
			key, val = kv[0], kv[1]
			n++
		}
	}
	if n != 1 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "radbridge explain: give exactly one of --study, --accession, --order, --patient")
		return 2
	}
	body, err := apiGet(ctx, *addr, tf, *tokenFile, "/v1/explain?"+key+"="+url.QueryEscape(val), *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "radbridge explain: %v\n", err)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var e opsapi.ExplainResponse
	if err := json.Unmarshal(body, &e); err != nil || e.Explanation == nil {
		fmt.Fprintf(stderr, "radbridge explain: not an explanation: %v\n", err)
		return 1
	}
	printExplanation(stdout, e)
	return 0
}

// printExplanation writes e for a person.
func printExplanation(w io.Writer, e opsapi.ExplainResponse) {
	fmt.Fprintf(w, "as of ingest record %d\n", e.AppliedSequence)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, s := range e.Studies {
		fmt.Fprintf(w, "\nstudy %s (patient %s, accession %s): %s\n", s.StudyInstanceUID, s.PatientID, orDash(s.AccessionNumber), s.Status)
		for _, se := range s.Series {
			fmt.Fprintf(tw, "  series %s\t%s\t%d of %d received\n", se.SeriesInstanceUID, se.Modality, se.Received, se.Instances)
		}
		tw.Flush()
		fmt.Fprintf(w, "  instances: %d received", s.InstancesReceived)
		if s.InstancesExpected > 0 {
			fmt.Fprintf(w, ", %d expected (from %s), %d missing", s.InstancesExpected, strings.Join(s.ExpectedFrom, " and "), s.Missing)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "  IAN: %v", s.IAN.Received)
		if s.IAN.PartsPending > 0 {
			fmt.Fprintf(w, " (%d waiting for parts)", s.IAN.PartsPending)
		}
		fmt.Fprintf(w, "; MPPS: %v\n", s.MPPS)
		fmt.Fprintf(w, "  available: %s\n", s.Available.Reason)
		if len(s.Order.Joined) > 0 {
			fmt.Fprintf(w, "  order: %s\n", strings.Join(s.Order.Joined, ", "))
		} else {
			fmt.Fprintf(w, "  order: none: %s\n", s.Order.WhyNot)
		}
		fmt.Fprintf(w, "  ingest records: %v\n", s.IngestSequences)
		for _, a := range s.Actions {
			fmt.Fprintf(w, "  action %s by %s at %s (ingest %d): %s %s\n", a.Action, a.Actor, a.Time.UTC().Format(time.RFC3339), a.IngestSeq, a.Reason, a.Detail)
		}
	}
	for _, o := range e.Orders {
		fmt.Fprintf(w, "\norder %s (patient %s, accession %s): %s\n", o.ResourceID, o.PatientID, orDash(o.AccessionNumber), o.Status)
		fmt.Fprintf(w, "  completed: %s\n", o.Completed.Reason)
		if len(o.Studies.Joined) > 0 {
			fmt.Fprintf(w, "  studies: %s\n", strings.Join(o.Studies.Joined, ", "))
		} else {
			fmt.Fprintf(w, "  studies: none: %s\n", o.Studies.WhyNot)
		}
	}
	for _, r := range e.Reports {
		fmt.Fprintf(w, "\nreport %s (patient %s, accession %s): %s\n", r.ResourceID, r.PatientID, orDash(r.AccessionNumber), r.Status)
		fmt.Fprintf(w, "  ready: %s\n", r.Ready.Reason)
		if len(r.Studies.Joined) > 0 {
			fmt.Fprintf(w, "  studies: %s\n", strings.Join(r.Studies.Joined, ", "))
		} else {
			fmt.Fprintf(w, "  studies: none: %s\n", r.Studies.WhyNot)
		}
	}
	if len(e.Events) > 0 {
		fmt.Fprintln(w, "\nevents:")
		for _, ev := range e.Events {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", ev.Sequence, ev.Type, ev.ResourceType, ev.Message)
		}
		tw.Flush()
	}
	if len(e.DeadLetters) > 0 {
		fmt.Fprintln(w, "\ndead letters:")
		for _, dl := range e.DeadLetters {
			fmt.Fprintf(tw, "  ingest %d\t%s\t%s\n", dl.Seq, dl.Kind, dl.Reason)
		}
		tw.Flush()
	}
	for _, n := range e.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
