package logging

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
)

// uidRedactor keeps DICOM UIDs out of the log (the daemon wraps its
// handler in it unless --log-patient-data):
// the DICOM confidentiality profile (PS3.15 annex E) treats Study, Series
// and SOP Instance UIDs as identifying. Every attribute whose key ends in
// _uid or _uids, at any depth (groups, LogValuers), is replaced by a
// pseudonym: an HMAC under a key drawn at start, so the lines about one
// study can be followed within a run, but not traced back to the study.
// One handler for every component, so a new log line cannot forget it.
type uidRedactor struct {
	h   slog.Handler
	key []byte
}

// RedactUIDs wraps h so that every attribute whose key ends in _uid or
// _uids is logged as a pseudonym (see uidRedactor).
func RedactUIDs(h slog.Handler) slog.Handler {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return uidRedactor{h: h, key: key}
}

func (r uidRedactor) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r uidRedactor) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, rec.Message, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(r.attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r uidRedactor) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = r.attr(a)
	}
	return uidRedactor{h: r.h.WithAttrs(red), key: r.key}
}

func (r uidRedactor) WithGroup(name string) slog.Handler {
	return uidRedactor{h: r.h.WithGroup(name), key: r.key}
}

func (r uidRedactor) attr(a slog.Attr) slog.Attr {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		g := a.Value.Group()
		red := make([]slog.Attr, len(g))
		for i, x := range g {
			red[i] = r.attr(x)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(red...)}
	}
	if strings.HasSuffix(a.Key, "_uid") || strings.HasSuffix(a.Key, "_uids") {
		m := hmac.New(sha256.New, r.key)
		m.Write([]byte(a.Value.String()))
		a.Value = slog.StringValue("uid~" + hex.EncodeToString(m.Sum(nil)[:6]))
	}
	return a
}
