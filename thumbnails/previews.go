package thumbnails

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"radbridge/dicom/dataset"
	"radbridge/dicom/thumbnail"
	"radbridge/ingest"
)

// Series previews without a store directory: the receivers (C-STORE,
// STOW-RS) offer each instance's header to Previews.Want; the first
// instance received of a series not yet previewed is kept in memory (at
// most previewSlots instances at a time, each at most previewMaxBytes;
// when all slots are taken the instance is not kept and a later one of its
// series may be) and rendered by one worker, off the receive path, into
// the bucket under thumbseries.<series uid>. The study worker
// (Service.render) serves the preview of the series it picks.

const (
	previewSlots    = 2
	previewMaxBytes = 32 << 20
	// previewSeen bounds the series remembered as previewed; beyond, the
	// memory is cleared (a series may then be rendered again).
	previewSeen = 10000
)

type sample struct {
	inst   *ingest.Instance
	part10 []byte
}

// Previews keeps the instances to preview as they arrive; it implements
// scp.Sampler.
type Previews struct {
	slots   chan struct{}
	queue   chan sample
	mu      sync.Mutex
	busy    map[string]bool // series held or rendering
	done    map[string]bool // series previewed
	dropped atomic.Uint64   // instances not kept: all slots taken
}

// NewPreviews returns an empty Previews.
func NewPreviews() *Previews {
	return &Previews{
		slots: make(chan struct{}, previewSlots), queue: make(chan sample, previewSlots),
		busy: map[string]bool{}, done: map[string]bool{},
	}
}

// Want reserves a slot for the first instance of a series not previewed.
func (p *Previews) Want(inst *ingest.Instance) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := inst.SeriesInstanceUID
	if p.done[s] || p.busy[s] {
		return 0, false
	}
	select {
	case p.slots <- struct{}{}:
	default:
		p.dropped.Add(1)
		return 0, false
	}
	p.busy[s] = true
	return previewMaxBytes, true
}

// Take queues a kept instance for rendering, or ends its reservation. It
// never blocks: the queue holds as many as there are slots.
func (p *Previews) Take(inst *ingest.Instance, part10 []byte) {
	if part10 == nil {
		p.release(inst.SeriesInstanceUID, false)
		return
	}
	p.queue <- sample{inst: inst, part10: part10}
}

func (p *Previews) release(series string, done bool) {
	p.mu.Lock()
	delete(p.busy, series)
	if done {
		if len(p.done) >= previewSeen {
			clear(p.done)
		}
		p.done[series] = true
	}
	p.mu.Unlock()
	<-p.slots
}

func seriesKey(series string) string { return "thumbseries." + series }

// RunPreviews renders the kept instances until ctx ends.
func (t *Service) RunPreviews(ctx context.Context) error {
	if t.previews == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-t.previews.queue:
			rctx, cancel := context.WithTimeout(ctx, thumbnailTimeout)
			err := t.renderSample(rctx, s)
			cancel()
			t.previews.release(s.inst.SeriesInstanceUID, err == nil)
			if err != nil && ctx.Err() == nil {
				t.log.Warn("series preview", "component", "thumbnails", "study_uid", s.inst.StudyInstanceUID,
					"series_uid", s.inst.SeriesInstanceUID, "err", err)
			}
		}
	}
}

// renderSample stores the preview of a kept instance's series and
// upgrades the study's preview if it waits for this series.
func (t *Service) renderSample(ctx context.Context, s sample) error {
	in := s.inst
	th := storedThumb{Source: in.SOPInstanceUID, Series: in.SeriesInstanceUID, Modality: in.Modality}
	b, err := thumbnail.FromPart10(ctx, "instance "+in.SOPInstanceUID, s.part10, thumbnailSide, t.maxPixels)
	switch {
	case err == nil && len(b) <= thumbnailMax:
		th.ContentType, th.Data = "image/jpeg", b
	case err == nil:
		th.Fallback = "preview larger than the stored limit"
	case errors.Is(err, thumbnail.ErrTooLarge):
		th.Fallback = "image larger than --thumbnail-max-pixels"
	case errors.Is(err, thumbnail.ErrUnsupported):
		th.Fallback = fallbackReason(in.TransferSyntaxUID)
		t.log.Debug("series preview: icon", "component", "thumbnails", "study_uid", in.StudyInstanceUID,
			"series_uid", in.SeriesInstanceUID, "transfer_syntax", in.TransferSyntaxUID, "err", err)
	default:
		return err
	}
	if th.Data == nil {
		th.ContentType, th.Data = "image/svg+xml", iconWithNote(in.Modality, th.Fallback)
	}
	v, err := json.Marshal(th)
	if err != nil {
		return err
	}
	if err := t.kv.Put(ctx, seriesKey(in.SeriesInstanceUID), v); err != nil {
		return fmt.Errorf("store series preview: %w", err)
	}
	return t.upgrade(ctx, in.StudyInstanceUID, &th)
}

// upgrade replaces a study's icon, stored while the preview of its series
// was rendering, with that preview (compare-and-set: a newer choice wins).
func (t *Service) upgrade(ctx context.Context, study string, sp *storedThumb) error {
	v, rev, found, err := t.kv.Get(ctx, thumbKey(study))
	if err != nil {
		return fmt.Errorf("read thumbnail: %w", err)
	}
	if !found {
		return nil // the study worker reads the series preview when the study comes
	}
	var old storedThumb
	if json.Unmarshal(v, &old) != nil || old.Series != sp.Series || old.Source != "" {
		return nil
	}
	nt := *sp
	nt.Patient, nt.Modality = old.Patient, old.Modality
	b, err := json.Marshal(nt)
	if err != nil {
		return err
	}
	if _, err := t.kv.Update(ctx, thumbKey(study), b, rev); err != nil {
		return fmt.Errorf("store thumbnail: %w", err)
	}
	return nil
}

// seriesPreview is the stored preview of a series, or nil.
func (t *Service) seriesPreview(ctx context.Context, series string) *storedThumb {
	v, _, found, err := t.kv.Get(ctx, seriesKey(series))
	if err != nil || !found {
		return nil
	}
	var th storedThumb
	if json.Unmarshal(v, &th) != nil {
		return nil
	}
	return &th
}

// fallbackReason says why a transfer syntax's pixel data gave an icon.
func fallbackReason(ts string) string {
	switch ts {
	case dataset.ImplicitVRLittleEndian, dataset.ExplicitVRLittleEndian, dataset.ExplicitVRBigEndian, "1.2.840.10008.1.2.4.50":
		return "pixel data not supported (transfer syntax " + ts + ")"
	}
	return "transfer syntax " + ts + " not supported"
}

// iconWithNote is the modality icon with note as an SVG comment.
func iconWithNote(modality, note string) []byte {
	icon := thumbnail.Icon(modality)
	if note == "" {
		return icon
	}
	note = strings.ReplaceAll(note, "--", "- -")
	return bytes.Replace(icon, []byte("</svg>"), []byte("<!-- radbridge: "+note+" --></svg>"), 1)
}
