package scp

import (
	"bufio"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"radbridge/dicom/dataset"
	"radbridge/dicom/dimse"
	"radbridge/ingest"
)

// Attribute tags read from a C-STORE header (PS3.6).
var (
	tSpecificCharacterSet = dataset.Tag(0x0008, 0x0005)
	tSOPClassUID          = dataset.Tag(0x0008, 0x0016)
	tSOPInstanceUID       = dataset.Tag(0x0008, 0x0018)
	tStudyDate            = dataset.Tag(0x0008, 0x0020)
	tStudyTime            = dataset.Tag(0x0008, 0x0030)
	tTimezoneOffset       = dataset.Tag(0x0008, 0x0201)
	tAccessionNumber      = dataset.Tag(0x0008, 0x0050)
	tModality             = dataset.Tag(0x0008, 0x0060)
	tReferringPhysician   = dataset.Tag(0x0008, 0x0090)
	tStudyDescription     = dataset.Tag(0x0008, 0x1030)
	tSeriesDescription    = dataset.Tag(0x0008, 0x103E)
	tPatientName          = dataset.Tag(0x0010, 0x0010)
	tPatientID            = dataset.Tag(0x0010, 0x0020)
	tIssuerOfPatientID    = dataset.Tag(0x0010, 0x0021)
	tPatientBirthDate     = dataset.Tag(0x0010, 0x0030)
	tPatientSex           = dataset.Tag(0x0010, 0x0040)
	tBodyPartExamined     = dataset.Tag(0x0018, 0x0015)
	tStudyInstanceUID     = dataset.Tag(0x0020, 0x000D)
	tSeriesInstanceUID    = dataset.Tag(0x0020, 0x000E)
	tStudyID              = dataset.Tag(0x0020, 0x0010)
	tSeriesNumber         = dataset.Tag(0x0020, 0x0011)
	tInstanceNumber       = dataset.Tag(0x0020, 0x0013)
	tNumberOfFrames       = dataset.Tag(0x0028, 0x0008)
)

// CountingReader counts the bytes read through it: the size of a received
// instance as it arrived (C-STORE here, STOW-RS in package dicomweb).
type CountingReader struct {
	R io.Reader
	N int64
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}

// store serves one C-STORE (PS3.4 annex B.2, PS3.7 section 9.1.1): stream
// the data set, buffer and parse its header, copy or discard the pixel data,
// write the Part-10 file, call the handler, answer.
func (c *assoc) store(ctx context.Context, msg *dimse.Message) error {
	cmd := msg.Command
	start := time.Now()
	respond := func(st dimse.Status, comment string) error {
		if st.IsFailure() {
			c.s.c.failures.Add(1)
			if ok, left := c.s.logs.Allow("C-STORE failed"); ok {
				c.log.Warn("C-STORE failed", "status", st.String(), "comment", comment,
					"sop_instance_uid", cmd.AffectedSOPInstanceUID, "suppressed", left)
			}
		}
		return dimse.Respond(c.a, msg.ContextID, cmd, dimse.CStoreRSP, st, comment)
	}
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

	var file *partFile
	var bw *bufio.Writer
	counter := &CountingReader{R: msg.Data}
	var raw io.Reader = counter
	if c.s.cfg.StoreDir != "" {
		var err error
		file, err = createPartFile(c.s.cfg.StoreDir)
		if err != nil {
			c.log.Error("create Part-10 file", "err", err)
			if err := msg.Data.Drain(); err != nil {
				return err
			}
			return respond(dimse.StatusOutOfResources, "cannot create file")
		}
		defer file.discard()
		bw = bufio.NewWriterSize(file, 64<<10)
		_, _ = bw.Write(fileMeta(cmd.AffectedSOPClassUID, cmd.AffectedSOPInstanceUID, pc.TransferSyntax, c.peer.CallingAE))
		raw = io.TeeReader(counter, bw)
	}
	var keep *Capture
	if file == nil && c.s.cfg.Sampler != nil && !dataset.SyntaxOf(pc.TransferSyntax).Deflated {
		// Until the header says whether the sampler wants it, keep the
		// header (bounded as the parse is) and what was read ahead.
		keep = &Capture{Max: c.s.cfg.MaxHeaderBytes + 256<<10}
		keep.Buf = append(keep.Buf, fileMeta(cmd.AffectedSOPClassUID, cmd.AffectedSOPInstanceUID, pc.TransferSyntax, c.peer.CallingAE)...)
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
			if p, err := ParseInstance(header, syntax, pc.TransferSyntax, start); err == nil {
				pre = p
			}
			if pre != nil && validUID(pre.SeriesInstanceUID) {
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
		return respond(dimse.StatusCannotUnderstand, clip(herr.Error()))
	}
	inst, err := pre, error(nil)
	if inst == nil {
		inst, err = ParseInstance(header, syntax, pc.TransferSyntax, start)
	}
	if err != nil {
		return respond(dimse.StatusCannotUnderstand, clip(err.Error()))
	}
	inst.Peer, inst.Size = c.peer, counter.N

	switch {
	case inst.SOPInstanceUID != cmd.AffectedSOPInstanceUID:
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "SOP Instance UID differs from command")
	case inst.SOPClassUID != cmd.AffectedSOPClassUID:
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "SOP Class UID differs from command")
	case !validUID(inst.StudyInstanceUID):
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "missing or invalid Study Instance UID")
	case !validUID(inst.SeriesInstanceUID):
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "missing or invalid Series Instance UID")
	case !validUID(inst.SOPInstanceUID):
		return respond(dimse.StatusDataSetDoesNotMatchSOP, "invalid SOP Instance UID")
	}

	if file != nil {
		_ = bw.Flush() // the file never fails a write; commit reports the first error
		var err error
		inst.Path, err = file.commit(inst.StudyInstanceUID, inst.SeriesInstanceUID, inst.SOPInstanceUID)
		if err != nil {
			c.log.Error("write Part-10 file", "err", err, "sop_instance_uid", inst.SOPInstanceUID)
			return respond(dimse.StatusOutOfResources, "cannot write file")
		}
	}

	if err := c.s.h.StoreInstance(ctx, inst); err != nil {
		st, comment := handlerStatus(err)
		return respond(st, clip(comment))
	}
	c.s.c.stored.Add(1)
	c.log.Debug("instance stored", "instance", inst, "duration", time.Since(start))
	if wanted != nil && !keep.Off {
		c.s.cfg.Sampler.Take(inst, keep.Buf)
		wanted, keep.Buf = nil, nil
	}
	return respond(dimse.StatusSuccess, "")
}

// clip keeps an Error Comment within LO's 64 characters.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// validUID accepts PS3.5 section 9.1 UIDs: digits and dots, at most 64.
func validUID(u string) bool {
	if u == "" || len(u) > 64 || u[0] == '.' || u[len(u)-1] == '.' {
		return false
	}
	for i := 0; i < len(u); i++ {
		if (u[i] < '0' || u[i] > '9') && u[i] != '.' {
			return false
		}
		if u[i] == '.' && i > 0 && u[i-1] == '.' {
			return false
		}
	}
	return true
}

// personName drops trailing empty components and component groups of a PN
// value, which PS3.5 section 6.2.1 makes insignificant ("A^B^^=" is "A^B").
func personName(v string) string {
	vals := strings.Split(v, `\`)
	for i, val := range vals {
		groups := strings.Split(val, "=")
		for j, g := range groups {
			groups[j] = strings.TrimRight(g, "^ ")
		}
		for len(groups) > 0 && groups[len(groups)-1] == "" {
			groups = groups[:len(groups)-1]
		}
		vals[i] = strings.Join(groups, "=")
	}
	return strings.Join(vals, `\`)
}
