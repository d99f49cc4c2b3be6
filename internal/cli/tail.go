package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"radbridge/api"
	rbv1 "radbridge/proto/radbridge/v1"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

// tail follows events and prints one per line, resuming after a dropped
// connection from the last sequence printed.
func tail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "localhost:9090", "radbridge gRPC address")
	var patients, types, resources multi
	fs.Var(&patients, "patient", "only this patient id (repeatable)")
	fs.Var(&types, "type", "only this event type, e.g. IMAGING_REPORT_READY or imaging.report.ready (repeatable)")
	fs.Var(&resources, "resource-type", "only this FHIR resource type (repeatable)")
	since := fs.Uint64("since", 0, "print events after this sequence; --since 0 replays the whole history (without --since: live, only events that arrive from now on)")
	fromNow := fs.Bool("from-now", false, "print only events that arrive from now on (the default without --since)")
	retryFor := fs.Duration("retry-for", 30*time.Second, "give up when the daemon has not answered for this long, at start or after a dropped connection (0: retry for ever)")
	asJSON := fs.Bool("json", false, "print each event as one line of JSON")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (else $RADBRIDGE_TOKEN); sent as gRPC authorization metadata")
	tf := newTLSClientFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	sinceSet := false
	fs.Visit(func(f *flag.Flag) { sinceSet = sinceSet || f.Name == "since" })
	req := &rbv1.SubscribeRequest{PatientId: patients, ResourceType: resources, SinceSequence: *since, FromNow: *fromNow || !sinceSet}
	for _, t := range types {
		et, ok := api.EventTypeByName(t)
		if !ok {
			fmt.Fprintf(stderr, "radbridge tail: unknown event type %q\n", t)
			return 2
		}
		req.Type = append(req.Type, et)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	token := os.Getenv("RADBRIDGE_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "radbridge tail: %v\n", err)
			return 2
		}
		token = strings.TrimSpace(string(b))
	}
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	tc, err := tf.config()
	if err != nil {
		fmt.Fprintf(stderr, "radbridge tail: %v\n", err)
		return 2
	}
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	// A connection attempt (TCP, TLS, HTTP/2 preface) is bounded, so that a
	// port that speaks something else fails and is named quickly.
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds), grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.DefaultConfig, MinConnectTimeout: 5 * time.Second}))
	if err != nil {
		fmt.Fprintf(stderr, "radbridge tail: %v\n", err)
		return 2
	}
	defer conn.Close()
	client := rbv1.NewEventServiceClient(conn)
	backoff := 200 * time.Millisecond
	answered := time.Now() // the last time the daemon answered (or the start)
	probed := false
	for {
		err := follow(ctx, client, req, stdout, *asJSON, func() { backoff, answered, probed = 200*time.Millisecond, time.Now(), false })
		if ctx.Err() != nil {
			return 0
		}
		switch status.Code(err) {
		case codes.InvalidArgument, codes.OutOfRange, codes.PermissionDenied, codes.Unauthenticated:
			fmt.Fprintf(stderr, "radbridge tail: %v\n", status.Convert(err).Message())
			return 1
		case codes.Unavailable:
			// Something else on that port (HTTP, MLLP, DICOM, TLS) is a
			// mistake to name at once, not a reason to retry.
			if !probed {
				probed = true
				if msg := wrongPort(ctx, "radbridge tail", *addr, protoGRPC, tc != nil); msg != "" {
					fmt.Fprintln(stderr, msg)
					return 1
				}
			}
			if *retryFor > 0 && time.Since(answered) >= *retryFor {
				fmt.Fprintf(stderr, "radbridge tail: nothing answers at %s (tried for %v: %s): is radbridge running, and is this its gRPC address (--grpc-addr, 127.0.0.1:9090 by default)? (--retry-for sets how long to try)\n",
					*addr, *retryFor, status.Convert(err).Message())
				return 1
			}
		}
		fmt.Fprintf(stderr, "radbridge tail: %v; resuming after sequence %d in %v\n", status.Convert(err).Message(), req.SinceSequence, backoff)
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func follow(ctx context.Context, c rbv1.EventServiceClient, req *rbv1.SubscribeRequest, w io.Writer, asJSON bool, connected func()) error {
	stream, err := c.Subscribe(ctx, req)
	if err != nil {
		return err
	}
	if _, err := stream.Header(); err == nil {
		connected()
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		if ev.GetHeartbeat() {
			continue
		}
		if asJSON {
			b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
			fmt.Fprintf(w, "%s\n", b)
		} else {
			fmt.Fprintln(w, line(ev))
		}
		req.SinceSequence = ev.GetSequence()
		req.FromNow = false
	}
}

func line(ev *rbv1.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %s", ev.GetSequence(), ev.GetTime().AsTime().Format(time.RFC3339), ev.GetType())
	for _, kv := range [][2]string{{"patient", ev.GetPatientId()}, {"accession", ev.GetAccessionNumber()}, {"study", ev.GetStudyInstanceUid()}, {"resource", ev.GetResourceType() + "/" + ev.GetResourceId()}} {
		if kv[1] != "" && kv[1] != "/" {
			fmt.Fprintf(&b, " %s=%s", kv[0], termSafe(kv[1]))
		}
	}
	if p := ev.GetPriority(); p == rbv1.Priority_PRIORITY_STAT || p == rbv1.Priority_PRIORITY_CRITICAL {
		fmt.Fprintf(&b, " priority=%s", strings.TrimPrefix(p.String(), "PRIORITY_"))
	}
	b.WriteString(" " + strconv.Quote(ev.GetMessage()))
	return b.String()
}

// termSafe returns s as it is when every character is printable and none
// could be read as a field separator or a quote; otherwise quoted with Go
// escapes, so that a patient id holding control characters (a newline, an
// escape sequence, a carriage return) can neither forge a line nor drive
// the terminal.
func termSafe(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) || r == ' ' || r == '"' || r == '\\' || r == '=' {
			return strconv.Quote(s)
		}
	}
	return s
}
