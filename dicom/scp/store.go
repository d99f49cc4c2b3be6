package scp

import (
	"bufio"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
	"radbridge/dicom/part10"
	"radbridge/ingest"
)

// store serves one C-STORE (PS3.4 annex B.2, PS3.7 section 9.1.1): stream
// the data set, buffer and parse its header, copy or discard the pixel data,
// write the Part-10 file, call the handler, answer.
func (c *assoc) store(ctx context.Context, msg *dimse.Message) error {
	cmd := msg.Command
	start := time.Now()
	// fail answers a failure whose cause (detail) the peer is not told:
	// it is logged with the failure.
	fail := func(st dimse.Status, comment string, detail error) error {
		if st.IsFailure() {
			c.s.c.failures.Add(1)
			if ok, left := c.s.logs.Allow("C-STORE failed"); ok {
				c.log.Warn("C-STORE failed", withDetail(detail, "status", st.String(), "comment", comment,
					"sop_instance_uid", cmd.AffectedSOPInstanceUID, "suppressed", left)...)
			}
		}
		return dimse.Respond(c.a, msg.ContextID, cmd, dimse.CStoreRSP, st, comment)
	}
	respond := func(st dimse.Status, comment string) error { return fail(st, comment, nil) }
	if msg.Data == nil {
		return respond(dimse.StatusCannotUnderstand, "C-STORE-RQ without data set")
	}
	pc, _ := c.a.Context(msg.ContextID)
	if cmd.AffectedSOPClassUID != pc.AbstractSyntax {
		if err := msg.Data.Drain(); err != nil {
			return err
		}
		return respond(dimse.StatusSOPClassNotSupported, "SOP class differs from presentation context")
	}

	var file *part10.File
	var bw *bufio.Writer
	counter := &part10.CountingReader{R: msg.Data}
	var raw io.Reader = counter
	if c.s.cfg.StoreDir != "" {
		var err error
		file, err = part10.Create(c.s.cfg.StoreDir)
		if err != nil {
			c.log.Error("create Part-10 file", "err", err)
			if err := msg.Data.Drain(); err != nil {
				return err
			}
			return respond(dimse.StatusOutOfResources, "cannot create file")
		}
		defer file.Discard()
		bw = bufio.NewWriterSize(file, 64<<10)
		_, _ = bw.Write(part10.FileMeta(cmd.AffectedSOPClassUID, cmd.AffectedSOPInstanceUID, pc.TransferSyntax, c.peer.CallingAE))
		raw = io.TeeReader(counter, bw)
	}
	var keep *part10.Capture
	if file == nil && c.s.cfg.Sampler != nil && !dataset.SyntaxOf(pc.TransferSyntax).Deflated {
		// Until the header says whether the sampler wants it, keep the
		// header (bounded as the parse is) and what was read ahead.
		keep = &part10.Capture{Max: c.s.cfg.MaxHeaderBytes + 256<<10}
		keep.Buf = append(keep.Buf, part10.FileMeta(cmd.AffectedSOPClassUID, cmd.AffectedSOPInstanceUID, pc.TransferSyntax, c.peer.CallingAE)...)
		raw = io.TeeReader(counter, keep)
	}

	syntax := dataset.SyntaxOf(pc.TransferSyntax)
	parseSrc := raw
	if syntax.Deflated {
		parseSrc = flate.NewReader(raw)
		syntax = dataset.Syntax{}
	}
	header, herr := dataset.ReadHeaderLimits(parseSrc, syntax, dataset.Limits{Bytes: c.s.cfg.MaxHeaderBytes, Elements: c.s.cfg.MaxElements})
	var wanted, pre *ingest.Instance
	if keep != nil {
		if herr == nil {
			// Parsed once: a failure is parsed again and answered below.
			if p, err := part10.ParseInstance(header, syntax, pc.TransferSyntax, start); err == nil {
				pre = p
			}
			if pre != nil && part10.ValidUID(pre.SeriesInstanceUID) {
				if max, ok := c.s.cfg.Sampler.Want(pre); ok {
					wanted, keep.Max = pre, max
					// Every path below ends the reservation.
					defer func() {
						if wanted != nil {
							c.s.cfg.Sampler.Take(wanted, nil)
						}
					}()
				}
			}
		}
		if wanted == nil {
			keep.Stop()
		}
	}
	// Whatever happened to the header, read the data set to its end so the
	// association stays in step; pixel data goes to the file or nowhere.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return fmt.Errorf("C-STORE data set: %w", err)
	}
	c.s.c.bytes.Add(uint64(counter.N))
	if herr != nil {
		if errors.Is(herr, dataset.ErrHeaderTooLarge) {
			return respond(dimse.StatusOutOfResources, fmt.Sprintf("header exceeds %d bytes", c.s.cfg.MaxHeaderBytes))
		}
		if errors.Is(herr, dataset.ErrTooManyElements) {
			return respond(dimse.StatusOutOfResources, fmt.Sprintf("header has more than %d elements", c.s.cfg.MaxElements))
		}
		return fail(dimse.StatusCannotUnderstand, commentUnparseable, herr)
	}
	inst, err := pre, error(nil)
	if inst == nil {
		inst, err = part10.ParseInstance(header, syntax, pc.TransferSyntax, start)
	}
	if err != nil {
		return fail(dimse.StatusCannotUnderstand, commentUnparseable, err)
	}
	inst.Peer, inst.Size = c.peer, counter.N

	switch {
	case inst.SOPInstanceUID != cmd.AffectedSOPInstanceUID:
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "SOP Instance UID differs from command")
	case inst.SOPClassUID != cmd.AffectedSOPClassUID:
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "SOP Class UID differs from command")
	case !part10.ValidUID(inst.StudyInstanceUID):
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "missing or invalid Study Instance UID")
	case !part10.ValidUID(inst.SeriesInstanceUID):
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "missing or invalid Series Instance UID")
	case !part10.ValidUID(inst.SOPInstanceUID):
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "invalid SOP Instance UID")
	}

	if file != nil {
		// The file, its name and its directories are durable before the
		// instance is recorded, never in parallel with the record: a crash
		// between a durable record and a file still in the page cache
		// would leave a recorded instance, which the mapper reports with
		// its path, whose file is missing or incomplete after the restart;
		// a retry by the peer could rewrite the file, but not unreport
		// the instance in between, and a peer need not retry at all.
		_ = bw.Flush() // the file never fails a write; Commit reports the first error
		var err error
		inst.Path, err = file.Commit(inst.StudyInstanceUID, inst.SeriesInstanceUID, inst.SOPInstanceUID)
		if err != nil {
			c.log.Error("write Part-10 file", "err", err, "sop_instance_uid", inst.SOPInstanceUID)
			return respond(dimse.StatusOutOfResources, "cannot write file")
		}
	}

	if err := c.s.h.StoreInstance(ctx, inst); err != nil {
		st, comment, detail := handlerStatus(err)
		return fail(st, clip(comment), detail)
	}
	c.s.c.stored.Add(1)
	c.log.Debug("instance stored", "instance", inst, "duration", time.Since(start))
	if wanted != nil && !keep.Off {
		c.s.cfg.Sampler.Take(inst, keep.Buf)
		wanted, keep.Buf = nil, nil
	}
	return respond(dimse.StatusSuccess, "")
}

// Error Comments (0000,0902) of the failures whose cause is ours or a
// parser's: a peer learns the failure class from them, never our error
// text (which is logged instead).
const (
	commentUnparseable = "data set cannot be parsed"
	commentNotRecorded = "not recorded, retry later"
)

// withDetail appends detail, when there is one, to log attributes as err.
func withDetail(detail error, attrs ...any) []any {
	if detail != nil {
		attrs = append(attrs, "err", detail)
	}
	return attrs
}

// clip keeps an Error Comment within LO's 64 characters.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}
