package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"radbridge/auth"
	"radbridge/eventlog"
	"radbridge/fanout"
	"radbridge/ingest"
	rbv1 "radbridge/proto/radbridge/v1"
	"radbridge/readmodel"
)

// Patients reads patients' read models.
type Patients interface {
	// Patient returns the patient, or (nil, nil) when unknown.
	Patient(ctx context.Context, id string) (*readmodel.Patient, error)
}

// Awaiter returns the events derived from an ingest sequence.
type Awaiter interface {
	Await(ctx context.Context, ingestSeq uint64) ([]*rbv1.Event, error)
}

// Leader is an Awaiter that may not be mapping in this process: a cluster's
// mapper runner (internal/app) provides it, and Leading is false on a
// follower, whose published events arrive through the event log instead.
// An Awaiter without it always maps.
type Leader interface {
	Leading() bool
}

// Service implements rbv1.EventServiceServer.
type Service struct {
	rbv1.UnimplementedEventServiceServer
	events   eventlog.Log
	hub      *fanout.Hub
	ingest   ingest.Log
	mapper   Awaiter
	patients Patients
	log      *slog.Logger
	// DefaultHeartbeat is the idle time between heartbeats.
	DefaultHeartbeat time.Duration
	// TrustedProxies are the peers whose x-forwarded-for is believed (see
	// ClientAddr); set before serving.
	TrustedProxies []netip.Prefix

	stopCtx context.Context
	stop    context.CancelFunc
}

// Stop ends every open Subscribe stream with UNAVAILABLE (shutdown).
func (s *Service) Stop() { s.stop() }

// NewService returns the service.
func NewService(events eventlog.Log, hub *fanout.Hub, in ingest.Log, m Awaiter, p Patients, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{events: events, hub: hub, ingest: in, mapper: m, patients: p, log: log.With("component", "api"),
		DefaultHeartbeat: 30 * time.Second, stopCtx: ctx, stop: cancel}
}

// subscribeParams is a validated subscription.
type subscribeParams struct {
	f         eventlog.Filter
	since     uint64
	heartbeat time.Duration
}

func (s *Service) validateSubscribe(ctx context.Context, r *rbv1.SubscribeRequest) (subscribeParams, error) {
	f, err := filter(r.GetPatientId(), r.GetType(), r.GetResourceType(), r.GetPriority())
	if err != nil {
		return subscribeParams{}, err
	}
	if f.PatientIDs, err = scopePatients(ctx, f.PatientIDs); err != nil {
		return subscribeParams{}, err
	}
	p := subscribeParams{f: f, since: r.GetSinceSequence(), heartbeat: s.DefaultHeartbeat}
	if hs := r.GetHeartbeatSeconds(); hs > 3600 {
		return p, invalid("heartbeat_seconds %d is more than 3600", hs)
	} else if hs > 0 {
		p.heartbeat = time.Duration(hs) * time.Second
	}
	if r.GetFromNow() {
		if p.since != 0 {
			return p, invalid("from_now and since_sequence exclude each other")
		}
		_, last, err := s.events.Bounds(ctx)
		if err != nil {
			return p, status.Errorf(codes.Unavailable, "event log: %v", err)
		}
		p.since = last
		return p, nil
	}
	if p.since == 0 && (s.hub == nil || !s.hub.Covers(0)) {
		// From the start of the log: its first retained event. The
		// in-memory window may still hold events retention removed;
		// a new subscriber gets what GET /v1/events lists.
		first, _, err := s.events.Bounds(ctx)
		if err != nil {
			return p, status.Errorf(codes.Unavailable, "event log: %v", err)
		}
		p.since = max(first, 1) - 1
		return p, nil
	}
	return p, s.checkCursor(ctx, "since_sequence", p.since)
}

// Subscribe implements rbv1.EventServiceServer.
func (s *Service) Subscribe(r *rbv1.SubscribeRequest, stream grpc.ServerStreamingServer[rbv1.Event]) error {
	ctx := stream.Context()
	p, err := s.validateSubscribe(ctx, r)
	if err != nil {
		return err
	}
	sub := s.hub.SubscribeOn("grpc", p.since, p.f)
	defer sub.Close()
	sub.StopOn(s.stopCtx.Done())
	hb, _ := preEncodedOf(&rbv1.Event{Heartbeat: true})
	_ = stream.SendHeader(metadata.Pairs("radbridge-since", strconv.FormatUint(p.since, 10)))
	for {
		entries, err := sub.Next(ctx, p.heartbeat)
		if err != nil {
			if errors.Is(err, fanout.ErrSlow) {
				stream.SetTrailer(metadata.Pairs("radbridge-resume-since", strconv.FormatUint(sub.Position(), 10)))
				return status.Errorf(codes.ResourceExhausted, "subscriber too slow: resume with since_sequence=%d", sub.Position())
			}
			if s.stopCtx.Err() != nil {
				stream.SetTrailer(metadata.Pairs("radbridge-resume-since", strconv.FormatUint(sub.Position(), 10)))
				return status.Errorf(codes.Unavailable, "server shutting down: resume with since_sequence=%d", sub.Position())
			}
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Errorf(codes.Unavailable, "read events: %v", err)
		}
		if len(entries) == 0 {
			if err := stream.SendMsg(hb); err != nil {
				return err
			}
			continue
		}
		for _, e := range entries {
			if err := stream.SendMsg(preEncoded(e.Proto())); err != nil {
				return err
			}
		}
	}
}

func preEncodedOf(ev *rbv1.Event) (preEncoded, error) {
	e := &fanout.Entry{Event: ev}
	return preEncoded(e.Proto()), nil
}

// maxPageBytes bounds the events of one ListEvents page (at least one
// event is returned; it can be larger).
const maxPageBytes = 3 << 20

// ListEvents implements rbv1.EventServiceServer.
func (s *Service) ListEvents(ctx context.Context, r *rbv1.ListEventsRequest) (*rbv1.ListEventsResponse, error) {
	f, err := filter(r.GetPatientId(), r.GetType(), r.GetResourceType(), r.GetPriority())
	if err != nil {
		return nil, err
	}
	if f.PatientIDs, err = scopePatients(ctx, f.PatientIDs); err != nil {
		return nil, err
	}
	size, err := pageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	if err := s.checkCursor(ctx, "since", r.GetSince()); err != nil {
		return nil, err
	}
	_, last, err := s.events.Bounds(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "event log: %v", err)
	}
	evs, err := s.events.Read(ctx, r.GetSince()+1, f, size)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read events: %v", err)
	}
	full := len(evs) == size
	// A page also stops at about maxPageBytes, or a page of large events
	// (reports with long text) exceeds the 4 MiB a gRPC client receives by
	// default, the REST gateway's own connection included, and the page
	// fails with RESOURCE_EXHAUSTED instead.
	for i, total := 0, 0; i < len(evs); i++ {
		if total += proto.Size(evs[i]); i > 0 && total > maxPageBytes {
			evs, full = evs[:i], true
			break
		}
	}
	next := last
	if full {
		next = evs[len(evs)-1].Sequence
	} else if n := len(evs); n > 0 && evs[n-1].Sequence > next {
		next = evs[n-1].Sequence
	}
	return &rbv1.ListEventsResponse{Events: evs, NextSince: next, LastSequence: max(last, next)}, nil
}

// PublishEvent implements rbv1.EventServiceServer.
func (s *Service) PublishEvent(ctx context.Context, r *rbv1.PublishEventRequest) (*rbv1.Event, error) {
	switch t := r.GetType(); {
	case t == rbv1.EventType_EVENT_TYPE_UNSPECIFIED:
		return nil, invalid("type is required")
	case rbv1.EventType_name[int32(t)] == "":
		return nil, invalid("unknown event type %d", t)
	case !clientTypes[t]:
		return nil, status.Errorf(codes.PermissionDenied, "%v is recorded by radbridge itself and cannot be published; clients may publish IMAGING_STUDY_VIEWED", t)
	}
	if err := checkID("patient_id", r.GetPatientId()); err != nil {
		return nil, err
	}
	if err := mayRead(ctx, r.GetPatientId()); err != nil {
		return nil, err
	}
	if err := checkUID("study_instance_uid", r.GetStudyInstanceUid()); err != nil {
		return nil, err
	}
	for name, v := range map[string]string{"accession_number": r.GetAccessionNumber(), "viewer_id": r.GetViewerId(), "viewer_name": r.GetViewerName(), "client_event_id": r.GetClientEventId()} {
		if err := sizeCheck(name, v); err != nil {
			return nil, err
		}
	}
	// The agent is who authenticated, and a client's event ids are its
	// own (per subject and patient): reusing another client's id neither
	// returns the other's event nor leaves this view unrecorded.
	subject := "anonymous"
	if p := auth.FromContext(ctx); p != nil && p.Subject != "" {
		subject = p.Subject
	}
	viewed := ingest.Viewed{
		PatientID: r.GetPatientId(), StudyInstanceUID: r.GetStudyInstanceUid(), AccessionNumber: r.GetAccessionNumber(),
		ViewerID: r.GetViewerId(), ViewerName: r.GetViewerName(), Agent: subject,
	}
	id := r.GetClientEventId()
	if id == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	key := ingest.ScopedClientEventID(subject, r.GetPatientId(), id)
	client := s.clientAddr(ctx)
	before := s.hub.Head()
	o, err := ingest.NewViewed(viewed, key, client, time.Now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "record event: %v", err)
	}
	seq, dup, err := s.ingest.Append(ctx, o)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "record event: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if l, ok := s.mapper.(Leader); ok && !l.Leading() {
		// Another process maps (a cluster follower): the event arrives
		// through the event log.
		ev, err := s.awaitLogged(wctx, seq, dup, before, r.GetPatientId())
		switch {
		case errors.Is(err, readmodel.ErrForgotten):
			return nil, status.Errorf(codes.AlreadyExists, "client_event_id %q was published before", r.GetClientEventId())
		case err != nil:
			return nil, status.Errorf(codes.DeadlineExceeded, "recorded as ingest %d, event not yet derived: %v", seq, err)
		}
		return ev, nil
	}
	evs, err := s.mapper.Await(wctx, seq)
	switch {
	case errors.Is(err, readmodel.ErrForgotten) && dup:
		return nil, status.Errorf(codes.AlreadyExists, "client_event_id %q was published before", r.GetClientEventId())
	case err != nil:
		// Recorded; the event follows when the mapper catches up.
		return nil, status.Errorf(codes.DeadlineExceeded, "recorded as ingest %d, event not yet derived: %v", seq, err)
	case len(evs) == 0:
		return nil, status.Errorf(codes.InvalidArgument, "event rejected by the mapper")
	}
	return evs[0], nil
}

// awaitLogged waits for the IMAGING_STUDY_VIEWED event derived from ingest
// sequence seq to appear in the event log after sequence after (the log's
// head before the observation was recorded). A resend (dup) was derived
// earlier: the patient's viewed events are searched from the start, and
// readmodel.ErrForgotten means they no longer hold it.
func (s *Service) awaitLogged(ctx context.Context, seq uint64, dup bool, after uint64, patient string) (*rbv1.Event, error) {
	id := readmodel.EventID(eventlog.Key{IngestSeq: seq})
	stop := uint64(0)
	if dup {
		after, stop = 0, s.hub.Head()
	}
	sub := s.hub.Subscribe(after, eventlog.Filter{PatientIDs: []string{patient}, Types: []rbv1.EventType{rbv1.EventType_IMAGING_STUDY_VIEWED}})
	defer sub.Close()
	for {
		entries, err := sub.Next(ctx, time.Second)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Event.GetId() == id {
				return e.Full(), nil
			}
		}
		if dup && sub.Position() >= stop {
			return nil, readmodel.ErrForgotten
		}
	}
}

// GetPatientImaging implements rbv1.EventServiceServer.
func (s *Service) GetPatientImaging(ctx context.Context, r *rbv1.GetPatientImagingRequest) (*rbv1.GetPatientImagingResponse, error) {
	if err := checkID("patient_id", r.GetPatientId()); err != nil {
		return nil, err
	}
	if err := mayRead(ctx, r.GetPatientId()); err != nil {
		return nil, err
	}
	size, err := pageSize(r.GetPageSize())
	if err != nil {
		return nil, err
	}
	offset := 0
	if t := r.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return nil, invalid("page_token %q is not one this server issued", t)
		}
		offset = n
	}
	p, err := s.patients.Patient(ctx, r.GetPatientId())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read patient: %v", err)
	}
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "no imaging events for patient %q", r.GetPatientId())
	}
	desc := true
	switch r.GetOrderBy() {
	case "", "date desc":
	case "date asc":
		desc = false
	default:
		return nil, invalid("order_by %q: want \"date desc\" or \"date asc\"", r.GetOrderBy())
	}
	resp := &rbv1.GetPatientImagingResponse{PatientId: p.ID, AsOfSequence: p.LastSequence, BodyRegionCounts: p.BodyRegions,
		StudyReportStatus: reportStatusByStudy(p.Reports), ReportPriority: reportPriority(p.Reports)}
	more := false
	for _, l := range []struct {
		src  map[string]json.RawMessage
		date []string
		dst  *[]*structpb.Struct
	}{
		{p.Studies, []string{"started"}, &resp.Studies},
		{p.Orders, []string{"authoredOn", "occurrenceDateTime"}, &resp.Orders},
		{p.Reports, []string{"issued", "effectiveDateTime"}, &resp.Reports},
	} {
		keys := sortByDate(l.src, l.date, desc)
		if offset < len(keys) {
			keys = keys[offset:]
		} else {
			keys = nil
		}
		if len(keys) > size {
			keys, more = keys[:size], true
		}
		for _, k := range keys {
			st := &structpb.Struct{}
			if err := protojson.Unmarshal(l.src[k], st); err != nil {
				return nil, status.Errorf(codes.Internal, "resource %s: %v", k, err)
			}
			*l.dst = append(*l.dst, st)
		}
	}
	if more {
		resp.NextPageToken = strconv.Itoa(offset + size)
	}
	return resp, nil
}

// resourceDate returns the first of fields present in a FHIR resource, as
// a comparable instant (dates without a time sort at their start).
func resourceDate(raw json.RawMessage, fields []string) time.Time {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return time.Time{}
	}
	for _, f := range fields {
		v, _ := m[f].(string)
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02", "2006-01", "2006"} {
			if t, err := time.Parse(layout, v); err == nil {
				return t
			}
		}
	}
	return time.Time{}
}

// sortByDate returns the ids of resources by date (then id), newest first
// when desc; resources without a date come last.
func sortByDate(src map[string]json.RawMessage, fields []string, desc bool) []string {
	type kd struct {
		k string
		d time.Time
	}
	all := make([]kd, 0, len(src))
	for k, raw := range src {
		all = append(all, kd{k, resourceDate(raw, fields)})
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.d.IsZero() != b.d.IsZero() {
			return b.d.IsZero()
		}
		if !a.d.Equal(b.d) {
			return a.d.After(b.d) == desc
		}
		return a.k < b.k
	})
	keys := make([]string, len(all))
	for i, x := range all {
		keys[i] = x.k
	}
	return keys
}

// reportPriority maps the id of each critical report (a contained
// Observation interpreted HH, LL or AA) to "critical".
func reportPriority(reports map[string]json.RawMessage) map[string]string {
	out := map[string]string{}
	for id, raw := range reports {
		if !bytes.Contains(raw, []byte(`"interpretation"`)) {
			continue // most reports: no need to decode
		}
		var r map[string]any
		if json.Unmarshal(raw, &r) == nil && readmodel.CriticalReport(r) {
			out[id] = "critical"
		}
	}
	return out
}

// reportStatusByStudy maps each ImagingStudy id to the status of its newest
// report (DiagnosticReport.imagingStudy).
func reportStatusByStudy(reports map[string]json.RawMessage) map[string]string {
	out := map[string]string{}
	newest := map[string]time.Time{}
	for _, raw := range reports {
		var r struct {
			Status       string `json:"status"`
			ImagingStudy []struct {
				Reference string `json:"reference"`
			} `json:"imagingStudy"`
		}
		if json.Unmarshal(raw, &r) != nil {
			continue
		}
		at := resourceDate(raw, []string{"issued", "effectiveDateTime"})
		for _, ref := range r.ImagingStudy {
			id, ok := strings.CutPrefix(ref.Reference, "ImagingStudy/")
			if !ok {
				continue
			}
			if prev, seen := newest[id]; !seen || at.After(prev) {
				newest[id], out[id] = at, r.Status
			}
		}
	}
	return out
}
