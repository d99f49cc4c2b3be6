// Package logging builds the daemon's log/slog logger: text or JSON lines
// at a level, and the handler that keeps DICOM UIDs out of the log
// (PS3.15 annex E treats them as identifying).
package logging

import (
	"io"
	"log/slog"
)

// New returns a logger writing to w at level (debug, info, warn, error;
// an unknown level is info) as JSON lines when format is "json", else as
// text.
func New(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
