package app_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"radbridge/dicom/dimse"
	"radbridge/dicom/scu"
	"radbridge/internal/testkit"
)

// Per-input caps: each hostile input goes through the real
// port, gets the protocol's precise refusal, costs a bounded amount of
// memory, and a well-behaved peer is served right after.

// peakHeap runs f and returns the highest HeapInuse above the level before
// it, sampled every 5 ms while f runs. It also logs the process's peak RSS
// above its RSS before f (Linux: VmHWM after resetting it through
// /proc/self/clear_refs), for BENCHMARKS.md.
func peakHeap(t *testing.T, f func()) (peak uint64) {
	runtime.GC()
	base := heapInUse()
	rssBase, resetOK := vmKB("VmRSS:"), os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if h := heapInUse(); h > base && h-base > peak {
				peak = h - base
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	if hwm := vmKB("VmHWM:"); resetOK && hwm > 0 {
		t.Logf("peak RSS +%.1f MiB (%.1f MiB before)", float64(max(0, hwm-rssBase))/1024, float64(rssBase)/1024)
	}
	return peak
}

// vmKB reads a kB field of /proc/self/status (0 if unavailable).
func vmKB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// TestHL7OrderGroupCap: an ORM with 15,000 ORC/OBR groups (under 1 MiB)
// sent with mllp_send is answered AR, ERR 207 naming the limit, located at
// the first group beyond it; nothing is recorded (no event for that
// patient), and an ordinary order right after gets AA and its event.
func TestHL7OrderGroupCap(t *testing.T) {
	bin := testkit.Peer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	var b strings.Builder
	b.WriteString("MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310083000||ORM^O01|BOMB-1|P|2.3\nPID|1||BOMB-P||DOE^JOHN\n")
	for i := 0; i < 15000; i++ {
		fmt.Fprintf(&b, "ORC|NW|P%d|F%d\nOBR|%d|P%d|F%d|71250^CT\n", i, i, i+1, i, i)
	}
	if b.Len() >= 1<<20 {
		t.Fatalf("the message is %d bytes, want under 1 MiB", b.Len())
	}
	file := testkit.WriteHL7(t, "bomb", b.String())
	var got string
	var errSeg []string
	peak := peakHeap(t, func() {
		ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), file)
		got = ack.Get("MSA-1")
		if e := ack.Segment("ERR"); e != nil {
			errSeg = []string{e.Field(2), e.Component(3, 1, 1), e.Field(8)}
		}
	})
	t.Logf("ORM with 15,000 order groups: peak heap +%.1f MiB", float64(peak)/(1<<20))
	if got != "AR" || len(errSeg) != 3 || errSeg[0] != "ORC^101" || errSeg[1] != "207" || !strings.Contains(errSeg[2], "15000 order groups, more than the limit of 100") {
		t.Fatalf("ACK MSA-1 %q ERR %q; want AR, ERR-2 ORC^101, ERR-3 207, ERR-8 naming the limit", got, errSeg)
	}
	if peak > 64<<20 {
		t.Errorf("peak heap +%d MiB for one refused message, want under 64 MiB", peak>>20)
	}
	// A well-behaved RIS right after: AA and its event.
	ok := testkit.WriteHL7(t, "ok", "MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310083000||ORM^O01|OK-1|P|2.3\nPID|1||WELL-P||DOE^JANE\nORC|NW|P1|F1\nOBR|1|P1|F1|71250^CT^C4||||||||||||||ACCW1||||||CT")
	if ack := testkit.MLLPSend(t, bin, d.MLLPAddr(), ok); ack.Get("MSA-1") != "AA" {
		t.Fatalf("ordinary order after the refused one: ACK %q, want AA", ack.Bytes())
	}
	waitPatientEvents(t, "http://"+d.HTTPAddr(), "WELL-P", 1)
	if n := patientEvents(t, "http://"+d.HTTPAddr(), "BOMB-P"); n != 0 {
		t.Errorf("%d events for the refused message's patient, want 0", n)
	}
}

// patientEvents counts the events of patient in the event log.
func patientEvents(t *testing.T, base, patient string) int {
	t.Helper()
	_, list := testkit.GetJSON(t, base+"/v1/events?page_size=1000&patient_id="+patient)
	evs, _ := list["events"].([]any)
	return len(evs)
}

// waitPatientEvents waits (at most 30 s) for n events of patient.
func waitPatientEvents(t *testing.T, base, patient string, n int) {
	t.Helper()
	if !testkit.Poll(30*time.Second, func() bool { return patientEvents(t, base, patient) >= n }) {
		t.Fatalf("no %d events for %s within 30s", n, patient)
	}
}

// dsWriter encodes a little-endian data set, explicit or implicit VR.
type dsWriter struct {
	b        []byte
	implicit bool
}

func (d *dsWriter) el(group, element uint16, vr string, v []byte) {
	if len(v)%2 == 1 {
		pad := byte(' ')
		if vr == "UI" || vr == "OB" {
			pad = 0
		}
		v = append(v, pad)
	}
	d.b = binary.LittleEndian.AppendUint16(d.b, group)
	d.b = binary.LittleEndian.AppendUint16(d.b, element)
	switch {
	case d.implicit:
		d.b = binary.LittleEndian.AppendUint32(d.b, uint32(len(v)))
	case vr == "OB" || vr == "OW" || vr == "SQ" || vr == "UN":
		d.b = append(d.b, vr...)
		d.b = append(d.b, 0, 0)
		d.b = binary.LittleEndian.AppendUint32(d.b, uint32(len(v)))
	default:
		d.b = append(d.b, vr...)
		d.b = binary.LittleEndian.AppendUint16(d.b, uint16(len(v)))
	}
	d.b = append(d.b, v...)
}

func (d *dsWriter) str(group, element uint16, vr, v string) { d.el(group, element, vr, []byte(v)) }

func (d *dsWriter) us(group, element uint16, v uint16) {
	d.el(group, element, "US", binary.LittleEndian.AppendUint16(nil, v))
}

// encapsulated appends Pixel Data of one JPEG frame (PS3.5 A.4): an empty
// Basic Offset Table, the frame, a sequence delimiter.
func (d *dsWriter) encapsulated(frame []byte) {
	if len(frame)%2 == 1 {
		frame = append(frame, 0)
	}
	d.b = append(d.b, 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF)
	item := func(v []byte) {
		d.b = append(d.b, 0xFE, 0xFF, 0x00, 0xE0)
		d.b = binary.LittleEndian.AppendUint32(d.b, uint32(len(v)))
		d.b = append(d.b, v...)
	}
	item(nil)
	item(frame)
	d.b = append(d.b, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
}

const (
	secondaryCapture = "1.2.840.10008.5.1.4.1.1.7"
	implicitLE       = "1.2.840.10008.1.2"
	explicitLE       = "1.2.840.10008.1.2.1"
	jpegBaselineTS   = "1.2.840.10008.1.2.4.50"
)

// imageDataset is a one-frame 8-bit MONOCHROME2 image declaring rows ×
// cols, with pixel data: a JPEG frame (encapsulated) or native bytes.
func imageDataset(patient, study, series, sop string, rows, cols uint16, jpegFrame, native []byte) []byte {
	d := &dsWriter{}
	d.str(0x0008, 0x0016, "UI", secondaryCapture)
	d.str(0x0008, 0x0018, "UI", sop)
	d.str(0x0008, 0x0060, "CS", "OT")
	d.str(0x0010, 0x0020, "LO", patient)
	d.str(0x0020, 0x000D, "UI", study)
	d.str(0x0020, 0x000E, "UI", series)
	d.str(0x0020, 0x0011, "IS", "1")
	d.str(0x0020, 0x0013, "IS", "1")
	d.us(0x0028, 0x0002, 1)
	d.str(0x0028, 0x0004, "CS", "MONOCHROME2")
	d.us(0x0028, 0x0010, rows)
	d.us(0x0028, 0x0011, cols)
	d.us(0x0028, 0x0100, 8)
	d.us(0x0028, 0x0101, 8)
	d.us(0x0028, 0x0102, 7)
	d.us(0x0028, 0x0103, 0)
	if jpegFrame != nil {
		d.encapsulated(jpegFrame)
	} else {
		d.el(0x7FE0, 0x0010, "OB", native)
	}
	return d.b
}

// smallJPEG is a real 16×16 grayscale JPEG.
func smallJPEG(t *testing.T) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 16, 16))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// jpegBomb is smallJPEG whose frame header (SOF0) declares width × height.
func jpegBomb(t *testing.T, width, height uint16) []byte {
	b := smallJPEG(t)
	i := bytes.Index(b, []byte{0xFF, 0xC0})
	if i < 0 {
		t.Fatal("no SOF0 in the JPEG")
	}
	binary.BigEndian.PutUint16(b[i+5:], height)
	binary.BigEndian.PutUint16(b[i+7:], width)
	if cfg, err := jpeg.DecodeConfig(bytes.NewReader(b)); err != nil || cfg.Width != int(width) || cfg.Height != int(height) {
		t.Fatalf("patched JPEG declares %v (%v)", cfg, err)
	}
	return b
}

// cstore sends one data set with our SCU and returns the status error (nil
// on success).
func cstore(t *testing.T, addr, ts string, sop string, ds []byte) error {
	t.Helper()
	// Generous: 32 associations at the element limit take turns to parse,
	// about 1 s each here, several under -race, and much more on a loaded
	// machine (one CI run needed over 5 minutes for the last of them); this
	// test bounds memory, not time.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, err := scu.Dial(ctx, addr, scu.Config{CallingAE: "PACS", CalledAE: "RADBRIDGE", Timeout: 15 * time.Minute,
		Contexts: []scu.Context{{AbstractSyntax: secondaryCapture, TransferSyntaxes: []string{ts}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Store(ctx, secondaryCapture, sop, ts, bytes.NewReader(ds))
	return err
}

// TestDICOMHeaderElementCap: C-STOREs of a header of 520,000 tiny
// elements (4.2 MB, under the default 4 MiB header limit) over four
// associations at once are each answered A700 with an Error Comment
// naming the limit, before the header is parsed; heap stays bounded; an
// ordinary instance right after is stored. Then 32 associations (the
// default allows them all from one host) each store a header just under
// the limit: all stored, heap bounded (the parses take turns).
func TestDICOMHeaderElementCap(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	const study = "1.2.826.0.1.3680043.10.1447.91"
	bomb := &dsWriter{implicit: true}
	bomb.str(0x0008, 0x0016, "UI", secondaryCapture)
	bomb.str(0x0008, 0x0018, "UI", study+".9.1")
	bomb.str(0x0020, 0x000D, "UI", study)
	bomb.str(0x0020, 0x000E, "UI", study+".9")
	for i := 0; i < 520000; i++ {
		bomb.el(0x0011, uint16(0x1000+i%0xE000), "UN", nil)
	}
	if len(bomb.b) >= 4<<20 {
		t.Fatalf("header of %d bytes, want under the 4 MiB header limit", len(bomb.b))
	}
	const assocs = 4
	errs := make([]error, assocs)
	peak := peakHeap(t, func() {
		var wg sync.WaitGroup
		for i := range assocs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = cstore(t, d.DICOMAddr(), implicitLE, study+".9.1", bomb.b)
			}()
		}
		wg.Wait()
	})
	t.Logf("%d associations each C-STOREing a header of 520,000 elements: peak heap +%.1f MiB (%.1f MiB per association)", assocs, float64(peak)/(1<<20), float64(peak)/assocs/(1<<20))
	for _, err := range errs {
		var se *scu.StatusError
		if !errors.As(err, &se) || se.Status != dimse.StatusOutOfResources || se.Comment != "header has more than 100000 elements" {
			t.Fatalf("C-STORE of the element bomb: %v; want status A700 with comment %q", err, "header has more than 100000 elements")
		}
	}
	if peak > assocs*32<<20 {
		t.Errorf("peak heap +%d MiB for %d refused headers, want under %d MiB", peak>>20, assocs, assocs*32)
	}
	ok := imageDataset("WELL-P", study, study+".1", study+".1.1", 16, 16, nil, make([]byte, 256))
	if err := cstore(t, d.DICOMAddr(), explicitLE, study+".1.1", ok); err != nil {
		t.Fatalf("ordinary C-STORE after the element bombs: %v", err)
	}

	// Just under the limit, from every association one host may open
	// (32): each header is parsed and stored, and the parses take turns,
	// so memory does not grow with the associations.
	under := &dsWriter{implicit: true}
	under.b = append(under.b, bomb.b[:len(bomb.b)-520000*8]...)
	for i := 0; i < 99990; i++ {
		under.el(0x0011, uint16(0x1000+i%0xE000), "UN", nil)
	}
	const many = 32
	errs = make([]error, many)
	peak = peakHeap(t, func() {
		var wg sync.WaitGroup
		for i := range many {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = cstore(t, d.DICOMAddr(), implicitLE, study+".9.1", under.b)
			}()
		}
		wg.Wait()
	})
	t.Logf("%d associations each C-STOREing a header of 99,990 elements (stored): peak heap +%.1f MiB (%.1f MiB per association)", many, float64(peak)/(1<<20), float64(peak)/many/(1<<20))
	for _, err := range errs {
		if err != nil {
			t.Fatalf("C-STORE of a header under the element limit: %v", err)
		}
	}
	if peak > 256<<20 {
		t.Errorf("peak heap +%d MiB for %d headers at the element limit, want under 256 MiB", peak>>20, many)
	}
}

// TestThumbnailPixelCap: instances whose declared size is 40000×40000 (a
// JPEG frame header; native Rows and Columns over a few bytes of pixel
// data), stored with --store-dir, reach the thumbnail worker, which
// refuses them before decoding: the study gets the modality icon and heap
// stays bounded (without the check the JPEG one took +1.5 GiB); a real
// small JPEG right after gets a JPEG preview.
func TestThumbnailPixelCap(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"), "--study-quiet-period", "1s", "--store-dir", t.TempDir())
	base := "http://" + d.HTTPAddr() + "/v1/studies/"
	thumb := func(study string) (string, []byte) {
		t.Helper()
		var code int
		var ctype string
		var b []byte
		if !testkit.Poll(30*time.Second, func() bool {
			resp, err := http.Get(base + study + "/thumbnail")
			if err != nil {
				t.Fatal(err)
			}
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			code, ctype = resp.StatusCode, resp.Header.Get("Content-Type")
			return code == http.StatusOK
		}) {
			t.Fatalf("no thumbnail for %s within 30s: %d %s", study, code, b)
		}
		return ctype, b
	}
	for _, tc := range []struct {
		name, ts, study string
		jpeg            bool
	}{
		{"JPEG frame header", jpegBaselineTS, "1.2.826.0.1.3680043.10.1447.92.1", true},
		{"native Rows and Columns", explicitLE, "1.2.826.0.1.3680043.10.1447.92.2", false},
	} {
		var frame, native []byte
		if tc.jpeg {
			frame = jpegBomb(t, 40000, 40000)
		} else {
			native = make([]byte, 64)
		}
		ds := imageDataset("BOMB-P", tc.study, tc.study+".1", tc.study+".1.1", 40000, 40000, frame, native)
		var ctype string
		peak := peakHeap(t, func() {
			if err := cstore(t, d.DICOMAddr(), tc.ts, tc.study+".1.1", ds); err != nil {
				t.Fatalf("%s: C-STORE: %v", tc.name, err)
			}
			ctype, _ = thumb(tc.study)
		})
		t.Logf("thumbnail of an image declaring 40000x40000 (%s): peak heap +%.1f MiB", tc.name, float64(peak)/(1<<20))
		if ctype != "image/svg+xml" {
			t.Errorf("%s: thumbnail %s, want the modality icon (image/svg+xml)", tc.name, ctype)
		}
		if peak > 64<<20 {
			t.Errorf("%s: peak heap +%d MiB, want under 64 MiB", tc.name, peak>>20)
		}
	}
	const study = "1.2.826.0.1.3680043.10.1447.92.3"
	ds := imageDataset("WELL-P", study, study+".1", study+".1.1", 16, 16, smallJPEG(t), nil)
	if err := cstore(t, d.DICOMAddr(), jpegBaselineTS, study+".1.1", ds); err != nil {
		t.Fatalf("ordinary JPEG C-STORE: %v", err)
	}
	if ctype, b := thumb(study); ctype != "image/jpeg" {
		t.Errorf("thumbnail of a real 16x16 JPEG: %s %q, want image/jpeg", ctype, b)
	}
}

// part10 wraps a data set in a Part-10 file (PS3.10 7.1): preamble, DICM,
// File Meta Information in explicit VR little endian.
func part10(class, sop, ts string, ds []byte) []byte {
	m := &dsWriter{}
	m.el(0x0002, 0x0001, "OB", []byte{0, 1})
	m.str(0x0002, 0x0002, "UI", class)
	m.str(0x0002, 0x0003, "UI", sop)
	m.str(0x0002, 0x0010, "UI", ts)
	g := &dsWriter{}
	g.el(0x0002, 0x0000, "UL", binary.LittleEndian.AppendUint32(nil, uint32(len(m.b))))
	out := append(make([]byte, 128), "DICM"...)
	out = append(append(out, g.b...), m.b...)
	return append(out, ds...)
}

// TestSTOWRSPartCap: a STOW-RS body of 2,000,000 empty parts (18 MB,
// under the body limit) is answered 413 naming --stow-max-parts once the
// 10,001st part starts, without reading the rest; the per-part warnings
// are rate-limited (a few lines, not one per part); heap stays bounded; an
// ordinary STOW-RS right after stores its instance.
func TestSTOWRSPartCap(t *testing.T) {
	var logs testkit.Buffer
	d := startDaemonLog(t, filepath.Join(t.TempDir(), "data"), slog.New(slog.NewTextHandler(&logs, nil)), "--public-base-url", "https://radbridge.example.org")
	url := "http://" + d.HTTPAddr() + "/dicomweb/studies"
	const parts = 2000000
	body := bytes.Repeat([]byte("\r\n--B\r\n\r\n"), parts)
	body = append(body[2:], "\r\n--B--\r\n"...)
	ct := `multipart/related; type="application/dicom"; boundary=B`
	var code int
	var msg string
	peak := peakHeap(t, func() {
		resp, err := http.Post(url, ct, bytes.NewReader(body))
		if err != nil {
			t.Fatalf("POST of %d empty parts: %v", parts, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, msg = resp.StatusCode, string(b)
	})
	t.Logf("STOW-RS of %d empty parts (%.1f MB): peak heap +%.1f MiB", parts, float64(len(body))/1e6, float64(peak)/(1<<20))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "more than 10000 parts in one request") {
		t.Fatalf("STOW-RS of %d empty parts: %d %s; want 413 naming the limit of 10000 parts", parts, code, msg)
	}
	if peak > 64<<20 {
		t.Errorf("peak heap +%d MiB, want under 64 MiB", peak>>20)
	}
	if n := strings.Count(logs.String(), "STOW-RS instance failed"); n > 50 {
		t.Errorf("%d warning lines for one request of bad parts, want a rate-limited few", n)
	}
	const study = "1.2.826.0.1.3680043.10.1447.93"
	ds := imageDataset("WELL-P", study, study+".1", study+".1.1", 16, 16, nil, make([]byte, 256))
	var ok bytes.Buffer
	ok.WriteString("--B\r\nContent-Type: application/dicom\r\n\r\n")
	ok.Write(part10(secondaryCapture, study+".1.1", explicitLE, ds))
	ok.WriteString("\r\n--B--\r\n")
	code2, got := stow(t, url, ct, ok.Bytes())
	if code2 != http.StatusOK || got[study+".1.1"] != "ok" {
		t.Fatalf("ordinary STOW-RS after the refused one: %d %v", code2, got)
	}
}
