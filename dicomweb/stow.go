package dicomweb

import (
	"bufio"
	"compress/flate"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"radbridge/auth"
	"radbridge/dicom/dataset"
	"radbridge/dicom/part10"
	"radbridge/dicom/scp"
	"radbridge/ingest"
	"radbridge/internal/lograte"
)

// Handler commits one received instance; its shape is
// scp.Handler.StoreInstance, so the daemon passes the same handler as to
// the C-STORE SCP. Nil means recorded durably.
type Handler interface {
	StoreInstance(ctx context.Context, inst *ingest.Instance) error
}

// RequestEnder is implemented by a Handler that wants to know, after a
// request's last part and before its answer, the instances of each study
// the request stored (the daemon records it: the study is then complete,
// completion reason stow-rs). An error is logged; the answer does not
// change (every instance was committed).
type RequestEnder interface {
	StowRequestDone(ctx context.Context, r *ingest.STOWRequest) error
}

// CallingAE is the Peer.CallingAE of instances received over STOW-RS.
const CallingAE = "STOW-RS"

// Failure Reason (0008,1197) values (PS3.18 table 10.5.3-2, PS3.4 B.2.3).
const (
	FailureProcessing     = 0x0110 // handler did not commit
	FailureOutOfResources = 0xA700 // header too large, store directory
	FailureMismatch       = 0xA900 // study UID differs from the URL, bad UIDs
	FailureUnparseable    = 0xC000 // not a Part-10 file, malformed data set
)

// Config configures the STOW-RS handler.
type Config struct {
	// Handler commits instances (required).
	Handler Handler
	// Auth authenticates clients (Authorization header); nil is auth.None.
	Auth auth.Authenticator
	// MaxBodyBytes bounds a request body; default 4 GiB.
	MaxBodyBytes int64
	// MaxPartHeaderBytes bounds each part's MIME header; default 16 KiB.
	MaxPartHeaderBytes int
	// MaxMetaBytes bounds each part's File Meta Information; default 64 KiB.
	MaxMetaBytes int
	// MaxHeaderBytes bounds each data set header before Pixel Data;
	// default 4 MiB (as the SCP).
	MaxHeaderBytes int
	// MaxParts bounds the parts of one request (default 10,000): at the
	// first part beyond it the request is answered 413 and the rest of the
	// body is not read. The parts before it were processed (a resend of
	// them is a duplicate).
	MaxParts int
	// MaxElements bounds the elements of each data set header (default
	// dataset.DefaultMaxElements); beyond it the part fails with A700.
	MaxElements int
	// ReadTimeout bounds each wait for body bytes; default 1 minute.
	ReadTimeout time.Duration
	// StoreDir, when set, receives each stored part as a Part-10 file
	// <StoreDir>/<study>/<series>/<sop>.dcm (part10.Path), as the SCP writes
	// them.
	StoreDir string
	// Sampler, when set and StoreDir is not, is offered the instances it
	// wants, in memory, as the SCP does (scp.Config.Sampler).
	Sampler scp.Sampler
	Logger  *slog.Logger
	// PublicBaseURL is where clients reach this server
	// (https://radbridge.example.org): the answer's RetrieveURLs start
	// with it. Empty: the answer has no RetrieveURL (never one built from
	// the request's Host header, which the client chooses).
	PublicBaseURL string
}

// DefaultMaxParts is Config.MaxParts when unset.
const DefaultMaxParts = 10000

// Server serves STOW-RS.
type Server struct {
	cfg Config
	// logs bounds the per-part warnings a request full of bad parts
	// causes: 10 a second, then a count of those left out.
	logs *lograte.Limiter
}

// New returns the STOW-RS handler.
func New(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 4 << 30
	}
	if cfg.MaxPartHeaderBytes <= 0 {
		cfg.MaxPartHeaderBytes = 16 << 10
	}
	if cfg.MaxMetaBytes <= 0 {
		cfg.MaxMetaBytes = 64 << 10
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 4 << 20
	}
	if cfg.MaxParts <= 0 {
		cfg.MaxParts = DefaultMaxParts
	}
	if cfg.MaxElements <= 0 {
		cfg.MaxElements = dataset.DefaultMaxElements
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = time.Minute
	}
	if cfg.Auth == nil {
		cfg.Auth = auth.None{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, logs: lograte.New(10, time.Second)}
}

// Routes returns the ServeMux patterns this server answers.
func (s *Server) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /dicomweb/studies":         s,
		"POST /dicomweb/studies/{study}": s,
	}
}

// result is one part's outcome.
type result struct {
	class, instance, study, series string
	reason                         uint16 // 0: stored
	comment                        string
}

// errPartHeader: a part's MIME header exceeds MaxPartHeaderBytes.
var errPartHeader = errors.New("part header exceeds limit")

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, p, ok := auth.HTTP(w, r, s.cfg.Auth)
	if !ok {
		return
	}
	if p.Restricted() {
		// A token limited to some patients is a viewer's; ingest needs an
		// unrestricted one.
		problem(w, http.StatusForbidden, "this token is limited to some patients and may not store instances")
		return
	}
	log := s.cfg.Logger.With("component", "stow-rs", "remote", r.RemoteAddr)
	urlStudy := r.PathValue("study")
	if urlStudy != "" && !part10.ValidUID(urlStudy) {
		problem(w, http.StatusBadRequest, "study UID in the URL is not a UID")
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || !strings.EqualFold(strings.Trim(params["type"], `"`), "application/dicom") {
		problem(w, http.StatusUnsupportedMediaType, `Content-Type must be multipart/related; type="application/dicom"`)
		return
	}
	if params["boundary"] == "" {
		problem(w, http.StatusBadRequest, "multipart boundary missing")
		return
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", s.cfg.MaxBodyBytes))
		return
	}
	body := &budgetReader{r: &deadlineReader{r: http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), rc: http.NewResponseController(w), timeout: s.cfg.ReadTimeout}}
	mr := multipart.NewReader(body, params["boundary"])
	peer := ingest.Peer{CallingAE: CallingAE, RemoteAddr: r.RemoteAddr}
	var results []result
	br := bufio.NewReaderSize(nil, 16<<10) // reused by every part
	for {
		body.limit(int64(s.cfg.MaxPartHeaderBytes) + 8<<10) // slack: the reader's buffer
		part, err := mr.NextPart()
		body.unlimit()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil && len(results) == s.cfg.MaxParts {
			part.Close()
			failed := 0
			for _, res := range results {
				if res.reason != 0 {
					failed++
				}
			}
			log.Warn("STOW-RS request refused: too many parts", "max_parts", s.cfg.MaxParts, "stored", len(results)-failed, "failed", failed)
			problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("more than %d parts in one request; the first %d were processed (%d stored, %d failed); send the rest in another request", s.cfg.MaxParts, len(results), len(results)-failed, failed))
			return
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", s.cfg.MaxBodyBytes))
			case errors.Is(err, errPartHeader):
				problem(w, http.StatusBadRequest, fmt.Sprintf("part header larger than %d bytes", s.cfg.MaxPartHeaderBytes))
			default:
				problem(w, http.StatusBadRequest, "malformed multipart body: "+err.Error())
			}
			return
		}
		res, err := s.storePart(ctx, part, urlStudy, peer, br)
		if err != nil { // the body itself failed: no answer per part possible
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				problem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", s.cfg.MaxBodyBytes))
			} else {
				problem(w, http.StatusBadRequest, "malformed multipart body: "+err.Error())
			}
			return
		}
		if res.reason != 0 {
			if ok, left := s.logs.Allow("part failed"); ok {
				log.Warn("STOW-RS instance failed", "reason", fmt.Sprintf("%04X", res.reason), "comment", res.comment, "sop_instance_uid", res.instance, "suppressed", left)
			}
		}
		results = append(results, res)
	}
	if len(results) == 0 {
		problem(w, http.StatusBadRequest, "multipart body has no parts")
		return
	}
	if e, ok := s.cfg.Handler.(RequestEnder); ok {
		s.requestDone(ctx, e, peer, results, log)
	}
	s.respond(w, r, urlStudy, results)
}

// storePart reads one part to its end, through br. A non-nil error means
// the request body failed (malformed multipart, size limit); a bad instance
// is a result with a failure reason.
func (s *Server) storePart(ctx context.Context, part *multipart.Part, urlStudy string, peer ingest.Peer, br *bufio.Reader) (result, error) {
	defer part.Close()
	start := time.Now()
	drain := func(res result) (result, error) {
		_, err := io.Copy(io.Discard, part)
		return res, err
	}
	if ct := part.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/dicom" {
			return drain(result{reason: FailureUnparseable, comment: "part is not application/dicom"})
		}
	}
	var file *part10.File
	var bw *bufio.Writer
	counter := &part10.CountingReader{R: part}
	var raw io.Reader = counter
	if s.cfg.StoreDir != "" {
		var err error
		if file, err = part10.Create(s.cfg.StoreDir); err != nil {
			s.cfg.Logger.Error("create Part-10 file", "component", "stow-rs", "err", err)
			return drain(result{reason: FailureOutOfResources, comment: "cannot create file"})
		}
		defer file.Discard()
		bw = bufio.NewWriterSize(file, 64<<10)
		raw = io.TeeReader(counter, bw)
	}
	var keep *part10.Capture
	if file == nil && s.cfg.Sampler != nil {
		// Until the header says whether the sampler wants it, keep the
		// header (bounded as the parse is) and what was read ahead.
		keep = &part10.Capture{Max: s.cfg.MaxMetaBytes + s.cfg.MaxHeaderBytes + 256<<10}
		raw = io.TeeReader(counter, keep)
	}
	br.Reset(raw)
	ts, err := readMeta(br, s.cfg.MaxMetaBytes)
	if err != nil {
		return drain(result{reason: FailureUnparseable, comment: err.Error()})
	}
	syntax := dataset.SyntaxOf(ts)
	var parseSrc io.Reader = br
	if syntax.Deflated {
		parseSrc = flate.NewReader(br)
		syntax = dataset.Syntax{}
	}
	header, herr := dataset.ReadHeaderLimits(parseSrc, syntax, dataset.Limits{Bytes: s.cfg.MaxHeaderBytes, Elements: s.cfg.MaxElements})
	var wanted *ingest.Instance
	if keep != nil {
		if herr == nil && !dataset.SyntaxOf(ts).Deflated {
			if pre, err := part10.ParseInstance(header, syntax, ts, start); err == nil && part10.ValidUID(pre.SeriesInstanceUID) {
				if max, ok := s.cfg.Sampler.Want(pre); ok {
					wanted, keep.Max = pre, max
					// Every path below ends the reservation.
					defer func() {
						if wanted != nil {
							s.cfg.Sampler.Take(wanted, nil)
						}
					}()
				}
			}
		}
		if wanted == nil {
			keep.Stop()
		}
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return result{}, err
	}
	if herr != nil {
		if errors.Is(herr, dataset.ErrHeaderTooLarge) {
			return result{reason: FailureOutOfResources, comment: fmt.Sprintf("header exceeds %d bytes", s.cfg.MaxHeaderBytes)}, nil
		}
		if errors.Is(herr, dataset.ErrTooManyElements) {
			return result{reason: FailureOutOfResources, comment: fmt.Sprintf("header has more than %d elements", s.cfg.MaxElements)}, nil
		}
		return result{reason: FailureUnparseable, comment: herr.Error()}, nil
	}
	inst, err := part10.ParseInstance(header, syntax, ts, start) // bounded with C-STORE's
	if err != nil {
		return result{reason: FailureUnparseable, comment: err.Error()}, nil
	}
	inst.Peer, inst.Size = peer, counter.N
	res := result{class: inst.SOPClassUID, instance: inst.SOPInstanceUID, study: inst.StudyInstanceUID, series: inst.SeriesInstanceUID}
	switch {
	case !part10.ValidUID(inst.SOPInstanceUID) || inst.SOPClassUID == "":
		res.reason, res.comment = FailureMismatch, "missing or invalid SOP Class or Instance UID"
	case !part10.ValidUID(inst.StudyInstanceUID):
		res.reason, res.comment = FailureMismatch, "missing or invalid Study Instance UID"
	case !part10.ValidUID(inst.SeriesInstanceUID):
		res.reason, res.comment = FailureMismatch, "missing or invalid Series Instance UID"
	case urlStudy != "" && inst.StudyInstanceUID != urlStudy:
		res.reason, res.comment = FailureMismatch, "Study Instance UID differs from the URL"
	}
	if res.reason != 0 {
		return res, nil
	}
	if file != nil {
		_ = bw.Flush() // the file never fails a write; Commit reports the first error
		var err error
		inst.Path, err = file.Commit(inst.StudyInstanceUID, inst.SeriesInstanceUID, inst.SOPInstanceUID)
		if err != nil {
			s.cfg.Logger.Error("write Part-10 file", "component", "stow-rs", "err", err, "sop_instance_uid", inst.SOPInstanceUID)
			res.reason, res.comment = FailureOutOfResources, "cannot write file"
			return res, nil
		}
	}
	if err := s.cfg.Handler.StoreInstance(ctx, inst); err != nil {
		res.reason, res.comment = FailureProcessing, "not recorded: "+err.Error()
		var se *scp.StatusError
		if errors.As(err, &se) && se.Status.IsFailure() {
			res.reason, res.comment = uint16(se.Status), se.Comment
		}
		return res, nil
	}
	if wanted != nil && !keep.Off {
		s.cfg.Sampler.Take(inst, keep.Buf)
		wanted, keep.Buf = nil, nil
	}
	return res, nil
}

// readMeta reads the 128-byte preamble, "DICM" and the group 0002 File Meta
// Information (PS3.10 section 7.1) from br, at most limit bytes, and
// returns the transfer syntax UID. br is left at the data set.
func readMeta(br *bufio.Reader, limit int) (string, error) {
	meta := make([]byte, 132, 512)
	if _, err := io.ReadFull(br, meta); err != nil || string(meta[128:]) != "DICM" {
		return "", errors.New("not a Part-10 file: no DICM prefix")
	}
	for {
		h, err := br.Peek(8)
		if err != nil || binary.LittleEndian.Uint16(h) != 0x0002 {
			break
		}
		n, hl := int(binary.LittleEndian.Uint16(h[6:])), 8
		switch string(h[4:6]) {
		case "OB", "OD", "OF", "OL", "OW", "SQ", "UN", "UC", "UR", "UT":
			h, err = br.Peek(12)
			if err != nil {
				return "", errors.New("truncated File Meta Information")
			}
			n, hl = int(binary.LittleEndian.Uint32(h[8:])), 12
		}
		if n < 0 || len(meta)+hl+n > limit {
			return "", fmt.Errorf("File Meta Information exceeds %d bytes", limit)
		}
		start := len(meta)
		meta = append(meta, make([]byte, hl+n)...)
		if _, err := io.ReadFull(br, meta[start:]); err != nil {
			return "", errors.New("truncated File Meta Information")
		}
	}
	ts, _, err := dataset.SplitPart10(meta)
	if err != nil {
		return "", err
	}
	return ts, nil
}

// respond writes the store instances response (PS3.18 section 10.5.3):
// 200 all stored, 202 some failed, 409 none stored.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, urlStudy string, results []result) {
	base := strings.TrimRight(s.cfg.PublicBaseURL, "/")
	var refs, fails []any
	for _, res := range results {
		item := map[string]any{}
		if res.class != "" {
			item["00081150"] = attr("UI", res.class)
		}
		if res.instance != "" {
			item["00081155"] = attr("UI", res.instance)
		}
		if res.reason != 0 {
			item["00081197"] = attr("US", res.reason)
			fails = append(fails, item)
			continue
		}
		if base != "" {
			item["00081190"] = attr("UR", fmt.Sprintf("%s/dicomweb/studies/%s/series/%s/instances/%s", base, res.study, res.series, res.instance))
		}
		refs = append(refs, item)
	}
	out := map[string]any{}
	if urlStudy != "" && base != "" {
		out["00081190"] = attr("UR", base+"/dicomweb/studies/"+urlStudy)
	}
	if len(refs) > 0 {
		out["00081199"] = map[string]any{"vr": "SQ", "Value": refs}
	}
	if len(fails) > 0 {
		out["00081198"] = map[string]any{"vr": "SQ", "Value": fails}
	}
	code := http.StatusOK
	switch {
	case len(refs) == 0:
		code = http.StatusConflict
	case len(fails) > 0:
		code = http.StatusAccepted
	}
	w.Header().Set("Content-Type", "application/dicom+json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(out)
}

func attr(vr string, v any) map[string]any {
	return map[string]any{"vr": vr, "Value": []any{v}}
}

// problem answers an error for the whole request as JSON.
func problem(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"message": msg})
}

// budgetReader fails with errPartHeader once more than the budget is read
// while limited (around multipart.Reader.NextPart, which reads the part's
// MIME header).
type budgetReader struct {
	r       io.Reader
	on      bool
	remains int64
}

func (b *budgetReader) limit(n int64) { b.on, b.remains = true, n }
func (b *budgetReader) unlimit()      { b.on = false }

func (b *budgetReader) Read(p []byte) (int, error) {
	if !b.on {
		return b.r.Read(p)
	}
	if b.remains <= 0 {
		return 0, errPartHeader
	}
	if int64(len(p)) > b.remains {
		p = p[:b.remains]
	}
	n, err := b.r.Read(p)
	b.remains -= int64(n)
	return n, err
}

// deadlineReader extends the connection's read deadline before reads, at
// most once a second, so a stalled client is dropped after timeout.
type deadlineReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	last    time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if now := time.Now(); now.Sub(d.last) > time.Second {
		d.last = now
		_ = d.rc.SetReadDeadline(now.Add(d.timeout)) // unsupported in tests' recorders
	}
	return d.r.Read(p)
}

// requestDone tells e, study by study, the instances the request stored.
func (s *Server) requestDone(ctx context.Context, e RequestEnder, peer ingest.Peer, results []result, log *slog.Logger) {
	byStudy := map[string][]string{}
	var order []string
	for _, res := range results {
		if res.reason != 0 || res.study == "" {
			continue
		}
		if _, ok := byStudy[res.study]; !ok {
			order = append(order, res.study)
		}
		byStudy[res.study] = append(byStudy[res.study], res.instance)
	}
	for _, study := range order {
		if err := e.StowRequestDone(ctx, &ingest.STOWRequest{Peer: peer, StudyInstanceUID: study, SOPInstanceUIDs: byStudy[study]}); err != nil {
			log.Warn("STOW-RS request end not recorded: the study completes by its quiet period", "study_uid", study, "err", err)
		}
	}
}
