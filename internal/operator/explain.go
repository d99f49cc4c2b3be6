package operator

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"radbridge/auth"
	"radbridge/eventlog"
	"radbridge/ingest"
	"radbridge/internal/opsapi"
	"radbridge/mapper"
	"radbridge/mapper/rules"
	rbv1 "radbridge/proto/radbridge/v1"
)

// ExplainPattern is where the operator asks why about a study, order or
// patient.
const ExplainPattern = "GET /v1/explain"

// Explain bounds: events scanned per patient, patients whose events are
// read, dead letters looked at.
const (
	explainEventsScanned = 20000
	explainPatients      = 20
	explainDeadLetters   = 200
)

// explainQuery reads the one selector of an explain request.
func explainQuery(r *http.Request) (rules.ExplainQuery, error) {
	var q rules.ExplainQuery
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
func (s *Server) explainHandler() http.Handler {
	return mapperEndpoint(s.cfg.Auth, s.cfg.Mapper,
		func(w http.ResponseWriter, r *http.Request, pr *auth.Principal) (rules.ExplainQuery, bool) {
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
		func(ctx context.Context, w http.ResponseWriter, _ *http.Request, pr *auth.Principal, m *mapper.Mapper, q rules.ExplainQuery) error {
			res, err := s.explain(ctx, m, q, pr)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, res)
			return nil
		})
}

// explain builds the answer: the mapper's explanation plus the events and
// dead letters concerning it.
func (s *Server) explain(ctx context.Context, m *mapper.Mapper, q rules.ExplainQuery, pr *auth.Principal) (opsapi.ExplainResponse, error) {
	e, err := m.Explain(ctx, q, time.Now(), pr.MayRead)
	if err != nil {
		return opsapi.ExplainResponse{}, err
	}
	res := opsapi.ExplainResponse{Explanation: e, Events: []opsapi.ExplainEvent{}, DeadLetters: []mapper.DeadLetter{}}
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
	for _, st := range e.Studies {
		studies[st.StudyInstanceUID] = true
		ids[rules.StudyResourceID(st.StudyInstanceUID)] = true
		if st.AccessionNumber != "" {
			accs[st.AccessionNumber] = true
		}
		addPatient(st.PatientID)
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
	for _, p := range patients {
		from, scanned := uint64(1), 0
		for scanned < explainEventsScanned {
			evs, err := s.cfg.Events.Read(ctx, from, eventlog.Filter{PatientIDs: []string{p}}, 1000)
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
	slices.SortFunc(res.Events, func(a, b opsapi.ExplainEvent) int { return cmp.Compare(a.Sequence, b.Sequence) })
	res.Events = slices.CompactFunc(res.Events, func(a, b opsapi.ExplainEvent) bool { return a.Sequence == b.Sequence })
	res.DeadLetters = s.deadLettersAbout(ctx, studies, accs, patients)
	return res, nil
}

func explainEvent(ev *rbv1.Event) opsapi.ExplainEvent {
	t := ""
	if ev.Time != nil {
		t = ev.Time.AsTime().UTC().Format(time.RFC3339Nano)
	}
	return opsapi.ExplainEvent{Sequence: ev.Sequence, Type: ev.Type.String(), Time: t, ResourceType: ev.ResourceType, ResourceID: ev.ResourceId,
		StudyInstanceUID: ev.StudyInstanceUid, AccessionNumber: ev.AccessionNumber, Message: ev.Message}
}

// deadLettersAbout returns the dead letters whose record names one of the
// studies, accessions or patients (read back from the ingest log: a DICOM
// record by its Study Instance UID, an HL7 message by the accession or
// patient id among its fields).
func (s *Server) deadLettersAbout(ctx context.Context, studies, accs map[string]bool, patients []string) []mapper.DeadLetter {
	out := []mapper.DeadLetter{}
	dls, err := s.cfg.DeadLetters.DeadLetters(ctx)
	if err != nil {
		return out
	}
	for i, dl := range dls {
		if i >= explainDeadLetters {
			break
		}
		rec, err := s.cfg.Ingest.Get(ctx, dl.Seq)
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
