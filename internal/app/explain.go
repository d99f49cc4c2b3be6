package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"radbridge/auth"
	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/mapper"
	rbv1 "radbridge/proto/radbridge/v1"
)

// explainPattern is where the HTTP front explains a study, order or
// patient.
const explainPattern = "GET /v1/explain"

// Explain bounds: events scanned per patient, patients whose events are
// read, dead letters looked at.
const (
	explainEventsScanned = 20000
	explainPatients      = 20
	explainDeadLetters   = 200
)

// ExplainResponse is GET /v1/explain's answer: the mapper's explanation,
// the events about what it explains, and the dead letters concerning it.
type ExplainResponse struct {
	*mapper.Explanation
	Events      []ExplainEvent      `json:"events"`
	DeadLetters []mapper.DeadLetter `json:"dead_letters"`
}

// ExplainEvent is one event about an explained resource.
type ExplainEvent struct {
	Sequence         uint64 `json:"sequence"`
	Type             string `json:"type"`
	Time             string `json:"time"`
	ResourceType     string `json:"resource_type"`
	ResourceID       string `json:"resource_id"`
	StudyInstanceUID string `json:"study_instance_uid,omitempty"`
	AccessionNumber  string `json:"accession_number,omitempty"`
	Message          string `json:"message"`
}

// explainQuery reads the one selector of an explain request.
func explainQuery(r *http.Request) (mapper.ExplainQuery, error) {
	var q mapper.ExplainQuery
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return q, fmt.Errorf("query: %w", err)
	}
	n := 0
	for k, vs := range vals {
		if len(vs) != 1 || strings.TrimSpace(vs[0]) == "" {
			return q, fmt.Errorf("%s: give one non-empty value", k)
		}
		v := strings.TrimSpace(vs[0])
		switch k {
		case "study":
			q.Study = v
		case "accession":
			q.Accession = v
		case "order":
			q.Order = v
		case "patient":
			q.Patient = v
		default:
			return q, fmt.Errorf("unknown parameter %q (want one of accession, study, order, patient)", k)
		}
		n++
	}
	if n != 1 {
		return q, errors.New("give exactly one of accession, study, order, patient")
	}
	return q, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func jsonError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// explainHandler serves GET /v1/explain. Any authenticated client may
// ask; a token restricted to some patients sees only theirs (naming
// another patient is 403).
func (d *Daemon) explainHandler(a auth.Authenticator) http.Handler {
	return mapperEndpoint(a, d.mapper,
		func(w http.ResponseWriter, r *http.Request, pr *auth.Principal) (mapper.ExplainQuery, bool) {
			q, err := explainQuery(r)
			if err != nil {
				jsonError(w, http.StatusBadRequest, err.Error())
				return q, false
			}
			if q.Patient != "" && !pr.MayRead(q.Patient) {
				jsonError(w, http.StatusForbidden, "this token may not read that patient")
				return q, false
			}
			return q, true
		},
		func(ctx context.Context, w http.ResponseWriter, _ *http.Request, pr *auth.Principal, m *mapper.Mapper, q mapper.ExplainQuery) error {
			res, err := d.explain(ctx, m, q, pr)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, res)
			return nil
		})
}

// explain builds the answer: the mapper's explanation plus the events and
// dead letters concerning it.
func (d *Daemon) explain(ctx context.Context, m *mapper.Mapper, q mapper.ExplainQuery, pr *auth.Principal) (ExplainResponse, error) {
	e, err := m.Explain(ctx, q, time.Now(), pr.MayRead)
	if err != nil {
		return ExplainResponse{}, err
	}
	res := ExplainResponse{Explanation: e, Events: []ExplainEvent{}, DeadLetters: []mapper.DeadLetter{}}
	studies, accs, ids := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var patients []string
	addPatient := func(p string) {
		if p != "" && !slices.Contains(patients, p) && len(patients) < explainPatients {
			patients = append(patients, p)
		}
	}
	// What the query names counts even when the mapper holds nothing of
	// it (an observation dead-lettered before anything was mapped).
	// (Not for a restricted client: a dead letter's record may be another
	// patient's.)
	if q.Study != "" && !pr.Restricted() {
		studies[q.Study] = true
	}
	if q.Accession != "" && !pr.Restricted() {
		accs[q.Accession] = true
	}
	addPatient(q.Patient) // checked: the caller may read it
	for _, s := range e.Studies {
		studies[s.StudyInstanceUID] = true
		ids[mapper.StudyResourceID(s.StudyInstanceUID)] = true
		if s.AccessionNumber != "" {
			accs[s.AccessionNumber] = true
		}
		addPatient(s.PatientID)
	}
	for _, o := range e.Orders {
		ids[o.ResourceID] = true
		if o.AccessionNumber != "" {
			accs[o.AccessionNumber] = true
		}
		addPatient(o.PatientID)
	}
	for _, rp := range e.Reports {
		ids[rp.ResourceID] = true
		addPatient(rp.PatientID)
	}
	evlog := d.store.Events()
	for _, p := range patients {
		from, scanned := uint64(1), 0
		for scanned < explainEventsScanned {
			evs, err := evlog.Read(ctx, from, eventlog.Filter{PatientIDs: []string{p}}, 1000)
			if err != nil || len(evs) == 0 {
				break
			}
			for _, ev := range evs {
				if studies[ev.StudyInstanceUid] || ids[ev.ResourceId] {
					res.Events = append(res.Events, explainEvent(ev))
				}
			}
			scanned += len(evs)
			from = evs[len(evs)-1].Sequence + 1
		}
	}
	slices.SortFunc(res.Events, func(a, b ExplainEvent) int { return int(a.Sequence) - int(b.Sequence) })
	res.Events = slices.CompactFunc(res.Events, func(a, b ExplainEvent) bool { return a.Sequence == b.Sequence })
	res.DeadLetters = d.deadLettersAbout(ctx, studies, accs, patients)
	return res, nil
}

func explainEvent(ev *rbv1.Event) ExplainEvent {
	t := ""
	if ev.Time != nil {
		t = ev.Time.AsTime().UTC().Format(time.RFC3339Nano)
	}
	return ExplainEvent{Sequence: ev.Sequence, Type: ev.Type.String(), Time: t, ResourceType: ev.ResourceType, ResourceID: ev.ResourceId,
		StudyInstanceUID: ev.StudyInstanceUid, AccessionNumber: ev.AccessionNumber, Message: ev.Message}
}

// deadLettersAbout returns the dead letters whose record names one of the
// studies, accessions or patients (read back from the ingest log: a DICOM
// record by its Study Instance UID, an HL7 message by the accession or
// patient id among its fields).
func (d *Daemon) deadLettersAbout(ctx context.Context, studies, accs map[string]bool, patients []string) []mapper.DeadLetter {
	out := []mapper.DeadLetter{}
	dls, err := d.store.DeadLetters().DeadLetters(ctx)
	if err != nil {
		return out
	}
	for i, dl := range dls {
		if i >= explainDeadLetters {
			break
		}
		rec, err := d.store.Ingest().Get(ctx, dl.Seq)
		if err != nil {
			continue
		}
		if recordConcerns(rec.Observation, studies, accs, patients) {
			out = append(out, dl)
		}
	}
	return out
}

// recordConcerns reports whether an observation names one of the studies,
// accessions or patients.
func recordConcerns(o ingest.Observation, studies, accs map[string]bool, patients []string) bool {
	switch o.Kind {
	case ingest.KindDICOMInstance:
		in, err := ingest.DecodeInstance(o)
		return err == nil && (studies[in.StudyInstanceUID] || accs[in.AccessionNumber] && in.AccessionNumber != "")
	case ingest.KindDICOMIAN:
		n, err := ingest.DecodeIAN(o)
		return err == nil && studies[n.StudyInstanceUID]
	case ingest.KindDICOMMPPS:
		u, err := ingest.DecodeMPPS(o)
		if err != nil {
			return false
		}
		for _, s := range u.StudyInstanceUIDs {
			if studies[s] {
				return true
			}
		}
	case ingest.KindHL7:
		raw, err := ingest.DecodeHL7(o)
		if err != nil {
			return false
		}
		for a := range accs {
			if hl7HasValue(raw, a) {
				return true
			}
		}
		for _, p := range patients {
			if id, _, _ := strings.Cut(p, "^"); hl7HasValue(raw, id) {
				return true
			}
		}
	}
	return false
}

// hl7HasValue reports whether v is a whole field or component of an HL7
// message (delimited by |, ^, ~, & or a segment end).
func hl7HasValue(raw []byte, v string) bool {
	if v == "" {
		return false
	}
	b := []byte(v)
	for i := 0; ; {
		j := bytes.Index(raw[i:], b)
		if j < 0 {
			return false
		}
		j += i
		before := j == 0 || bytes.IndexByte([]byte("|^~&\r\n"), raw[j-1]) >= 0
		end := j + len(b)
		after := end == len(raw) || bytes.IndexByte([]byte("|^~&\r\n"), raw[end]) >= 0
		if before && after {
			return true
		}
		i = j + 1
	}
}

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
	var e ExplainResponse
	if err := json.Unmarshal(body, &e); err != nil || e.Explanation == nil {
		fmt.Fprintf(stderr, "radbridge explain: not an explanation: %v\n", err)
		return 1
	}
	printExplanation(stdout, e)
	return 0
}

// printExplanation writes e for a person.
func printExplanation(w io.Writer, e ExplainResponse) {
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
