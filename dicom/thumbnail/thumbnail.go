// Package thumbnail renders small previews of DICOM images (PS3.3 C.7.6.3
// Image Pixel module, C.11.2 VOI LUT windowing): native grayscale or RGB
// pixel data, or an encapsulated JPEG baseline frame (PS3.5 A.4.1), scaled
// to fit a square and encoded as JPEG; and, for everything else, a small
// SVG icon naming the modality. It does not log.
package thumbnail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"os"
	"strconv"
	"strings"

	dcm "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/frame"
	"github.com/suyashkumar/dicom/pkg/tag"

	"radbridge/dicom/dataset"
)

// MaxFileBytes is the largest Part-10 file decoded.
const MaxFileBytes = 64 << 20

// DefaultMaxPixels is the largest image (rows × columns, all frames for
// native pixel data) FromFile decodes when given no limit: decoding takes
// memory in proportion to the declared size, whatever the file's size (a
// 6 MB JPEG declaring 40000×40000 took 1.5 GB before this check).
const DefaultMaxPixels = 25_000_000

// ErrTooLarge: the declared image size exceeds the pixel limit; nothing
// was decoded. It wraps ErrUnsupported (the caller shows an icon).
var ErrTooLarge = fmt.Errorf("declared image size exceeds the pixel limit: %w", errUnsupported)

// errUnsupported is ErrUnsupported, declared first for ErrTooLarge.
var errUnsupported = errors.New("pixel data not supported")

// ErrUnsupported: the file's pixel data cannot be rendered (a compression
// other than JPEG baseline, a photometric interpretation other than
// MONOCHROME1/2 or RGB, no pixel data).
var ErrUnsupported = errUnsupported

// jpegBaseline is the JPEG Baseline (Process 1) transfer syntax.
const jpegBaseline = "1.2.840.10008.1.2.4.50"

// FromFile renders the first frame of the Part-10 file at path as a JPEG
// that fits in maxSide×maxSide (never enlarged). ctx bounds the work
// between decoding steps. maxPixels (0: DefaultMaxPixels) bounds the image
// decoded, by its declared size read before any decoding: Rows × Columns
// × Number of Frames for native pixel data, the frame header's width ×
// height (image.DecodeConfig) for JPEG; beyond it ErrTooLarge.
//
// The files hold what senders sent, and the DICOM library behind the
// decoding panics on some malformed input (found by FuzzFromFile: a nil
// byte order in its tag reader); such a panic is returned as an error
// wrapping ErrUnsupported instead of ending the daemon.
func FromFile(ctx context.Context, path string, maxSide int, maxPixels int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes exceed %d: %w", path, fi.Size(), MaxFileBytes, ErrUnsupported)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return fromPart10(ctx, path, b, maxSide, maxPixels)
}

// FromPart10 renders a Part-10 file held in memory (at most MaxFileBytes)
// as FromFile does; name labels its errors.
func FromPart10(ctx context.Context, name string, b []byte, maxSide int, maxPixels int64) ([]byte, error) {
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes exceed %d: %w", name, len(b), MaxFileBytes, ErrUnsupported)
	}
	return fromPart10(ctx, name, b, maxSide, maxPixels)
}

func fromPart10(ctx context.Context, path string, b []byte, maxSide int, maxPixels int64) (out []byte, err error) {
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("decode %s: %v: %w", path, r, ErrUnsupported)
		}
	}()
	// The library allocates an element's declared length before reading it
	// (DESIGN.md): a few bytes declaring gigabytes would take the daemon's
	// memory (found by FuzzFromFile). Every length is checked against the
	// file first, by our own walker.
	ts, body, err := dataset.SplitPart10(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", path, err, ErrUnsupported)
	}
	syn := dataset.SyntaxOf(ts)
	if syn.Deflated {
		return nil, fmt.Errorf("%s: deflated data set: %w", path, ErrUnsupported)
	}
	// The library allocates the native frames by the declared Rows and
	// Columns as it parses: check them first, on a parse without pixel
	// data (which checks every length, as dataset.Check).
	hdr, err := dataset.Parse(body, syn)
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", path, err, ErrUnsupported)
	}
	rows, _ := hdr.Int(tag.Rows)
	cols, _ := hdr.Int(tag.Columns)
	frames, ok := hdr.Int(tag.NumberOfFrames)
	if !ok || frames < 1 {
		frames = 1
	}
	if ts != jpegBaseline { // native (or unsupported): every frame is decoded
		if px := int64(rows) * int64(cols) * int64(frames); rows < 0 || cols < 0 || px > maxPixels {
			return nil, fmt.Errorf("%s: %dx%d pixels, %d frames, more than %d pixels: %w", path, cols, rows, frames, maxPixels, ErrTooLarge)
		}
	}
	ds, err := dcm.Parse(bytes.NewReader(b), int64(len(b)), nil, dcm.AllowMismatchPixelDataLength())
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	img, err := render(&ds, maxPixels)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var enc bytes.Buffer
	if err := jpeg.Encode(&enc, scale(img, maxSide), &jpeg.Options{Quality: 80}); err != nil {
		return nil, fmt.Errorf("encode JPEG: %w", err)
	}
	return enc.Bytes(), nil
}

func str(ds *dcm.Dataset, t tag.Tag) string {
	e, err := ds.FindElementByTag(t)
	if err != nil {
		return ""
	}
	if ss, ok := e.Value.GetValue().([]string); ok && len(ss) > 0 {
		return strings.TrimSpace(strings.TrimRight(ss[0], "\x00"))
	}
	return ""
}

func num(ds *dcm.Dataset, t tag.Tag) (float64, bool) {
	e, err := ds.FindElementByTag(t)
	if err != nil {
		return 0, false
	}
	switch v := e.Value.GetValue().(type) {
	case []int:
		if len(v) > 0 {
			return float64(v[0]), true
		}
	case []float64:
		if len(v) > 0 {
			return v[0], true
		}
	case []string:
		if len(v) > 0 {
			f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimRight(v[0], "\x00")), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func render(ds *dcm.Dataset, maxPixels int64) (image.Image, error) {
	e, err := ds.FindElementByTag(tag.PixelData)
	if err != nil {
		return nil, fmt.Errorf("no pixel data: %w", ErrUnsupported)
	}
	info, ok := e.Value.GetValue().(dcm.PixelDataInfo)
	if !ok || len(info.Frames) == 0 || info.ParseErr != nil {
		return nil, fmt.Errorf("pixel data unreadable: %w", ErrUnsupported)
	}
	f := info.Frames[0]
	if f.Encapsulated {
		if ts := str(ds, tag.TransferSyntaxUID); ts != jpegBaseline {
			return nil, fmt.Errorf("transfer syntax %s: %w", ts, ErrUnsupported)
		}
		// The frame header declares the size the decoder allocates,
		// whatever the data that follows.
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(f.EncapsulatedData.Data))
		if err != nil {
			return nil, fmt.Errorf("decode JPEG frame header: %w", err)
		}
		if px := int64(cfg.Width) * int64(cfg.Height); px > maxPixels {
			return nil, fmt.Errorf("JPEG frame of %dx%d, more than %d pixels: %w", cfg.Width, cfg.Height, maxPixels, ErrTooLarge)
		}
		img, err := jpeg.Decode(bytes.NewReader(f.EncapsulatedData.Data))
		if err != nil {
			return nil, fmt.Errorf("decode JPEG frame: %w", err)
		}
		return img, nil
	}
	return native(ds, f)
}

// native windows a native frame to 8-bit gray (MONOCHROME1/2) or passes
// 8-bit RGB through.
func native(ds *dcm.Dataset, f *frame.Frame) (image.Image, error) {
	nf, err := f.GetNativeFrame()
	if err != nil {
		return nil, fmt.Errorf("native frame: %w", err)
	}
	rows, cols := nf.Rows(), nf.Cols()
	if rows <= 0 || cols <= 0 || rows > 1<<14 || cols > 1<<14 {
		return nil, fmt.Errorf("%dx%d pixels: %w", cols, rows, ErrUnsupported)
	}
	pi := str(ds, tag.PhotometricInterpretation)
	if pi == "RGB" && nf.SamplesPerPixel() == 3 {
		img, err := nf.GetImage()
		if err != nil {
			return nil, fmt.Errorf("RGB frame: %w", err)
		}
		return img, nil
	}
	if (pi != "MONOCHROME1" && pi != "MONOCHROME2") || nf.SamplesPerPixel() != 1 {
		return nil, fmt.Errorf("photometric interpretation %q: %w", pi, ErrUnsupported)
	}
	signed := false
	if v, ok := num(ds, tag.PixelRepresentation); ok && v == 1 {
		signed = true
	}
	bits := nf.BitsPerSample()
	stored := bits
	if v, ok := num(ds, tag.BitsStored); ok && v > 0 && int(v) <= bits {
		stored = int(v)
	}
	slope, intercept := 1.0, 0.0
	if v, ok := num(ds, tag.RescaleSlope); ok && v != 0 {
		slope = v
	}
	if v, ok := num(ds, tag.RescaleIntercept); ok {
		intercept = v
	}
	vals := make([]float64, rows*cols)
	lo, hi := math.Inf(1), math.Inf(-1)
	for y := 0; y < rows; y++ {
		for x := 0; x < cols; x++ {
			p, err := nf.GetPixel(x, y)
			if err != nil || len(p) == 0 {
				return nil, fmt.Errorf("pixel %d,%d: %w", x, y, ErrUnsupported)
			}
			raw := int64(p[0]) & (1<<stored - 1)
			if signed && raw&(1<<(stored-1)) != 0 {
				raw -= 1 << stored
			}
			v := float64(raw)*slope + intercept
			vals[y*cols+x] = v
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	center, width := (lo+hi)/2, hi-lo
	if c, ok := num(ds, tag.WindowCenter); ok {
		if w, ok := num(ds, tag.WindowWidth); ok && w >= 1 {
			center, width = c, w
		}
	}
	if width < 1 {
		width = 1
	}
	invert := pi == "MONOCHROME1"
	img := image.NewGray(image.Rect(0, 0, cols, rows))
	for i, v := range vals {
		g := (v - (center - width/2)) / width * 255
		g = math.Max(0, math.Min(255, g))
		if invert {
			g = 255 - g
		}
		img.Pix[i] = uint8(g + 0.5)
	}
	return img, nil
}

// scale shrinks img to fit maxSide×maxSide by area averaging (box filter);
// a smaller image is returned as is.
func scale(img image.Image, maxSide int) image.Image {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if maxSide <= 0 || (w <= maxSide && h <= maxSide) {
		return img
	}
	nw, nh := maxSide, maxSide
	if w > h {
		nh = max(1, h*maxSide/w)
	} else {
		nw = max(1, w*maxSide/h)
	}
	out := image.NewRGBA(image.Rect(0, 0, nw, nh))
	for y := 0; y < nh; y++ {
		y0, y1 := y*h/nh, max((y+1)*h/nh, y*h/nh+1)
		for x := 0; x < nw; x++ {
			x0, x1 := x*w/nw, max((x+1)*w/nw, x*w/nw+1)
			var r, g, bl, n uint64
			for sy := y0; sy < y1; sy++ {
				for sx := x0; sx < x1; sx++ {
					cr, cg, cb, _ := img.At(b.Min.X+sx, b.Min.Y+sy).RGBA()
					r, g, bl, n = r+uint64(cr), g+uint64(cg), bl+uint64(cb), n+1
				}
			}
			out.Set(x, y, color.RGBA{uint8(r / n >> 8), uint8(g / n >> 8), uint8(bl / n >> 8), 255})
		}
	}
	return out
}

// Icon is a small SVG tile naming modality (e.g. "CT"), for studies
// without a renderable image.
func Icon(modality string) []byte {
	m := strings.ToUpper(strings.TrimSpace(modality))
	if len(m) > 5 {
		m = m[:5]
	}
	if m == "" {
		m = "?"
	}
	return []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">` +
		`<rect width="256" height="256" rx="24" fill="#1f2937"/>` +
		`<text x="128" y="150" font-family="sans-serif" font-size="72" font-weight="700" text-anchor="middle" fill="#e5e7eb">` +
		html.EscapeString(m) + `</text></svg>`)
}
