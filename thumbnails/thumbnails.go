// Package thumbnails keeps and serves one preview per study: a worker fed
// by the fan-out hub renders a study's preview when it becomes available
// or changes, off the ingest path, one at a time, each bounded in time,
// from the instance file in the store directory or, without one, from an
// instance kept in memory as it arrived (Previews); the previews live in a
// Bucket under thumb.<study uid> (and thumbseries.<series uid>) and are
// served at GET /v1/studies/{study_uid}/thumbnail.
package thumbnails

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"radbridge/auth"
	"radbridge/dicom/part10"
	"radbridge/dicom/thumbnail"
	"radbridge/eventlog"
	"radbridge/fanout"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Pattern is the ServeMux pattern of Handler.
const Pattern = "GET /v1/studies/{study_uid}/thumbnail"

const (
	thumbnailSide    = 256
	thumbnailMax     = 256 << 10 // stored preview bytes
	thumbnailTimeout = 10 * time.Second
)

// Bucket keeps the previews (in the daemon, the state bucket): values by
// key, each with a revision for compare-and-set, so that processes of a
// cluster sharing it do not overwrite each other's images.
type Bucket interface {
	// Get returns key's value and revision; found is false when the key
	// has no value.
	Get(ctx context.Context, key string) (value []byte, revision uint64, found bool, err error)
	// Put sets key's value.
	Put(ctx context.Context, key string, value []byte) error
	// Create sets key's value unless it has one: ok is false when it had.
	Create(ctx context.Context, key string, value []byte) (ok bool, err error)
	// Update sets key's value if its revision is still revision: ok is
	// false when it changed.
	Update(ctx context.Context, key string, value []byte, revision uint64) (ok bool, err error)
}

// storedThumb is the bucket value of a study's preview.
type storedThumb struct {
	// Patient is the study's patient id, for read authorization.
	Patient string `json:"patient"`
	// Source is the SOP Instance UID rendered ("" for a modality icon),
	// so an unchanged choice is not rendered again.
	Source string `json:"source,omitempty"`
	// Series is the series chosen (pick), whose preview may replace an
	// icon once rendered (no store directory: previews.go).
	Series string `json:"series,omitempty"`
	// Fallback says why an icon is shown instead of an image (e.g. the
	// transfer syntax not supported), served as
	// X-Radbridge-Thumbnail-Fallback.
	Fallback    string `json:"fallback,omitempty"`
	Modality    string `json:"modality,omitempty"`
	ContentType string `json:"content_type"`
	Data        []byte `json:"data"`
}

// Config configures the service.
type Config struct {
	// Bucket keeps the previews (required).
	Bucket Bucket
	// Hub feeds the worker the events of studies (required by Run).
	Hub *fanout.Hub
	// StoreDir is the directory the receivers write instance files into
	// (part10.Path); empty: previews come from Previews.
	StoreDir string
	// MaxPixels bounds the images decoded (--thumbnail-max-pixels).
	MaxPixels int64
	// Previews, without StoreDir, holds instances kept as they arrive.
	Previews *Previews
	Logger   *slog.Logger
}

// Service renders, keeps and serves the study previews.
type Service struct {
	kv       Bucket
	hub      *fanout.Hub
	storeDir string
	// maxPixels bounds the images decoded (--thumbnail-max-pixels).
	maxPixels int64
	// previews, without storeDir, holds instances kept as they arrive.
	previews *Previews
	log      *slog.Logger
}

// New returns the service; Run and RunPreviews do its work, Handler serves
// it.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{kv: cfg.Bucket, hub: cfg.Hub, storeDir: cfg.StoreDir, maxPixels: cfg.MaxPixels, previews: cfg.Previews, log: cfg.Logger}
}

// errNoThumbnail: the study has no stored preview.
var errNoThumbnail = errors.New("no thumbnail")

func thumbKey(study string) string { return "thumb." + study }

// Run renders previews of the studies of events appended from now on until
// ctx ends.
func (t *Service) Run(ctx context.Context) error {
	if err := t.hub.WaitReady(ctx); err != nil {
		return nil
	}
	sub := t.hub.SubscribeOn("internal", t.hub.Head(), eventlog.Filter{
		Types:         []rbv1.EventType{rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.EventType_IMAGING_STUDY_UPDATED},
		ResourceTypes: []string{"ImagingStudy"},
	})
	defer sub.Close()
	for {
		es, err := sub.Next(ctx, time.Minute)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// Fell behind the hub's window: previews are best effort,
			// start again from the head.
			t.log.Warn("thumbnail worker resubscribes", "component", "thumbnails", "err", err)
			sub.Close()
			sub = t.hub.SubscribeOn("internal", t.hub.Head(), eventlog.Filter{
				Types:         []rbv1.EventType{rbv1.EventType_IMAGING_STUDY_AVAILABLE, rbv1.EventType_IMAGING_STUDY_UPDATED},
				ResourceTypes: []string{"ImagingStudy"},
			})
			continue
		}
		for _, e := range es {
			rctx, cancel := context.WithTimeout(ctx, thumbnailTimeout)
			if err := t.render(rctx, e.Full()); err != nil && ctx.Err() == nil {
				t.log.Warn("thumbnail", "component", "thumbnails", "study_uid", e.Event.GetStudyInstanceUid(), "err", err)
			}
			cancel()
		}
	}
}

// pick returns the modality and the middle instance of the first image
// series of an ImagingStudy (series come sorted by number).
func pick(res map[string]any) (modality, series, sop string) {
	ss, _ := res["series"].([]any)
	for _, s := range ss {
		se, _ := s.(map[string]any)
		m, _ := se["modality"].(map[string]any)
		code, _ := m["code"].(string)
		switch code {
		case "SR", "KO", "PR", "DOC", "SEG", "ECG", "AU":
			if modality == "" {
				modality = code
			}
			continue
		}
		insts, _ := se["instance"].([]any)
		if len(insts) == 0 {
			continue
		}
		in, _ := insts[len(insts)/2].(map[string]any)
		uid, _ := se["uid"].(string)
		sopUID, _ := in["uid"].(string)
		return code, uid, sopUID
	}
	return modality, "", ""
}

func (t *Service) render(ctx context.Context, ev *rbv1.Event) error {
	study := ev.GetStudyInstanceUid()
	if !part10.ValidUID(study) {
		return nil
	}
	modality, series, sop := pick(ev.GetResource().AsMap())
	th := storedThumb{Patient: ev.GetPatientId(), Modality: modality}
	old, oldErr := t.get(ctx, study)
	if oldErr == nil && old.Patient == th.Patient && old.Source == sop && old.Modality == modality && sop != "" {
		return nil // this instance was rendered already
	}
	if t.storeDir == "" && t.previews != nil && part10.ValidUID(series) {
		return t.fromSeries(ctx, study, series, th, old)
	}
	var renderErr error
	if t.storeDir != "" && part10.ValidUID(series) && part10.ValidUID(sop) {
		path := part10.Path(t.storeDir, study, series, sop)
		if _, err := os.Stat(path); err == nil {
			b, err := thumbnail.FromFile(ctx, path, thumbnailSide, t.maxPixels)
			if err == nil && len(b) <= thumbnailMax {
				th.Source, th.ContentType, th.Data = sop, "image/jpeg", b
			} else if err != nil && !errors.Is(err, thumbnail.ErrUnsupported) {
				renderErr = err
			}
		}
	}
	icon := th.Data == nil
	if icon {
		th.ContentType, th.Data = "image/svg+xml", thumbnail.Icon(modality)
	}
	b, err := json.Marshal(th)
	if err != nil {
		return err
	}
	if icon {
		// In a cluster another process may hold the file and have
		// rendered the image: an icon never replaces an image.
		return errors.Join(t.putIcon(ctx, thumbKey(study), th.Patient, b), renderErr)
	}
	if err := t.kv.Put(ctx, thumbKey(study), b); err != nil {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	return renderErr
}

// fromSeries stores the preview of series as the study's, or the icon
// while it renders (renderSample then upgrades it).
func (t *Service) fromSeries(ctx context.Context, study, series string, th storedThumb, old *storedThumb) error {
	th.Series = series
	sp := t.seriesPreview(ctx, series)
	if sp == nil {
		th.ContentType, th.Data = "image/svg+xml", thumbnail.Icon(th.Modality)
		b, err := json.Marshal(th)
		if err != nil {
			return err
		}
		if err := t.putIcon(ctx, thumbKey(study), th.Patient, b); err != nil {
			return err
		}
		// The preview may have been stored after the look-up above and
		// before the icon: look again.
		if sp = t.seriesPreview(ctx, series); sp == nil {
			return nil
		}
		return t.upgrade(ctx, study, sp)
	}
	if old != nil && old.Patient == th.Patient && old.Source == sp.Source && old.Series == series && old.Modality == th.Modality {
		return nil
	}
	th.Source, th.ContentType, th.Data, th.Fallback = sp.Source, sp.ContentType, sp.Data, sp.Fallback
	b, err := json.Marshal(th)
	if err != nil {
		return err
	}
	if err := t.kv.Put(ctx, thumbKey(study), b); err != nil {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	return nil
}

// putIcon stores an icon unless the study has a rendered image, with
// compare-and-set so that a concurrent image wins.
func (t *Service) putIcon(ctx context.Context, key, patient string, b []byte) error {
	v, rev, found, err := t.kv.Get(ctx, key)
	switch {
	case err == nil && !found:
		_, err = t.kv.Create(ctx, key, b)
	case err == nil:
		var old storedThumb
		if json.Unmarshal(v, &old) == nil && old.ContentType == "image/jpeg" && old.Patient == patient {
			return nil
		}
		_, err = t.kv.Update(ctx, key, b, rev)
	}
	if err != nil {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	return nil
}

func (t *Service) get(ctx context.Context, study string) (*storedThumb, error) {
	v, _, found, err := t.kv.Get(ctx, thumbKey(study))
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errNoThumbnail
	}
	var th storedThumb
	if err := json.Unmarshal(v, &th); err != nil {
		return nil, fmt.Errorf("thumbnail %s: %w", study, err)
	}
	return &th, nil
}

// Handler serves GET /v1/studies/{study_uid}/thumbnail (Pattern): 404 for
// a study without a preview or one the caller may not read.
func (t *Service) Handler(a auth.Authenticator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, pr, ok := auth.HTTP(w, r, a)
		if !ok {
			return
		}
		study := r.PathValue("study_uid")
		if !part10.ValidUID(study) {
			http.Error(w, "study_uid: not a DICOM UID", http.StatusBadRequest)
			return
		}
		th, err := t.get(ctx, study)
		if errors.Is(err, errNoThumbnail) || (err == nil && !pr.MayRead(th.Patient)) {
			http.Error(w, "no thumbnail", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, "thumbnail unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", th.ContentType)
		if th.Fallback != "" {
			w.Header().Set("X-Radbridge-Thumbnail-Fallback", th.Fallback)
		}
		w.Header().Set("Cache-Control", "private, max-age=60")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		w.Write(th.Data)
	})
}
