package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"radbridge/auth"
	"radbridge/dicom/thumbnail"
	"radbridge/eventlog"
	"radbridge/fanout"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Study thumbnails: a worker fed by the hub renders one preview per study
// when it becomes available or changes, off the ingest path, one at a time,
// each bounded in time; the previews live in the state bucket under
// thumb.<study uid> and are served at GET /v1/studies/{study_uid}/thumbnail.

const (
	thumbnailPattern = "GET /v1/studies/{study_uid}/thumbnail"
	thumbnailSide    = 256
	thumbnailMax     = 256 << 10 // stored preview bytes
	thumbnailTimeout = 10 * time.Second
)

// dicomUID is a DICOM UID (PS3.5 9.1): digits and dots, at most 64.
var dicomUID = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)

// storedThumb is the state-bucket value of a study's preview.
type storedThumb struct {
	// Patient is the study's patient id, for read authorization.
	Patient string `json:"patient"`
	// Source is the SOP Instance UID rendered ("" for a modality icon),
	// so an unchanged choice is not rendered again.
	Source string `json:"source,omitempty"`
	// Series is the series chosen (pick), whose preview may replace an
	// icon once rendered (no --store-dir: previews.go).
	Series string `json:"series,omitempty"`
	// Fallback says why an icon is shown instead of an image (e.g. the
	// transfer syntax not supported), served as
	// X-Radbridge-Thumbnail-Fallback.
	Fallback    string `json:"fallback,omitempty"`
	Modality    string `json:"modality,omitempty"`
	ContentType string `json:"content_type"`
	Data        []byte `json:"data"`
}

type thumbnails struct {
	kv       jetstream.KeyValue
	hub      *fanout.Hub
	storeDir string
	// maxPixels bounds the images decoded (--thumbnail-max-pixels).
	maxPixels int64
	// previews, without storeDir, holds instances kept as they arrive.
	previews *previews
	log      *slog.Logger
}

func thumbKey(study string) string { return "thumb." + study }

// Run renders previews of the studies of events appended from now on until
// ctx ends.
func (t *thumbnails) Run(ctx context.Context) error {
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

func (t *thumbnails) render(ctx context.Context, ev *rbv1.Event) error {
	study := ev.GetStudyInstanceUid()
	if !dicomUID.MatchString(study) || len(study) > 64 {
		return nil
	}
	modality, series, sop := pick(ev.GetResource().AsMap())
	th := storedThumb{Patient: ev.GetPatientId(), Modality: modality}
	old, oldErr := t.get(ctx, study)
	if oldErr == nil && old.Patient == th.Patient && old.Source == sop && old.Modality == modality && sop != "" {
		return nil // this instance was rendered already
	}
	if t.storeDir == "" && t.previews != nil && dicomUID.MatchString(series) {
		return t.fromSeries(ctx, study, series, th, old)
	}
	var renderErr error
	if t.storeDir != "" && dicomUID.MatchString(series) && dicomUID.MatchString(sop) {
		path := filepath.Join(t.storeDir, study, series, sop+".dcm")
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
	if _, err := t.kv.Put(ctx, thumbKey(study), b); err != nil {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	return renderErr
}

// fromSeries stores the preview of series as the study's, or the icon
// while it renders (renderSample then upgrades it).
func (t *thumbnails) fromSeries(ctx context.Context, study, series string, th storedThumb, old *storedThumb) error {
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
	if _, err := t.kv.Put(ctx, thumbKey(study), b); err != nil {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	return nil
}

// putIcon stores an icon unless the study has a rendered image, with
// compare-and-set so that a concurrent image wins.
func (t *thumbnails) putIcon(ctx context.Context, key, patient string, b []byte) error {
	e, err := t.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		_, err = t.kv.Create(ctx, key, b)
	case err == nil:
		var old storedThumb
		if json.Unmarshal(e.Value(), &old) == nil && old.ContentType == "image/jpeg" && old.Patient == patient {
			return nil
		}
		_, err = t.kv.Update(ctx, key, b, e.Revision())
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	return nil
}

func (t *thumbnails) get(ctx context.Context, study string) (*storedThumb, error) {
	e, err := t.kv.Get(ctx, thumbKey(study))
	if err != nil {
		return nil, err
	}
	var th storedThumb
	if err := json.Unmarshal(e.Value(), &th); err != nil {
		return nil, fmt.Errorf("thumbnail %s: %w", study, err)
	}
	return &th, nil
}

// handler serves GET /v1/studies/{study_uid}/thumbnail: 404 for a study
// without a preview or one the caller may not read.
func (t *thumbnails) handler(a auth.Authenticator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, pr, ok := auth.HTTP(w, r, a)
		if !ok {
			return
		}
		study := r.PathValue("study_uid")
		if !dicomUID.MatchString(study) || len(study) > 64 {
			http.Error(w, "study_uid: not a DICOM UID", http.StatusBadRequest)
			return
		}
		th, err := t.get(ctx, study)
		if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && !pr.MayRead(th.Patient)) {
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
