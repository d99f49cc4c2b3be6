package dicomweb

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"radbridge/ingest/ingesttest"
	"radbridge/internal/testkit"
)

const ctClass = "1.2.840.10008.5.1.4.1.1.2"

func elem(dst []byte, group, element uint16, vr, v string) []byte {
	if len(v)%2 == 1 {
		v += "\x00"
	}
	dst = binary.LittleEndian.AppendUint16(dst, group)
	dst = binary.LittleEndian.AppendUint16(dst, element)
	dst = append(dst, vr...)
	switch vr {
	case "OB", "OW":
		dst = append(dst, 0, 0)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
	default:
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(v)))
	}
	return append(dst, v...)
}

// ctPart10 builds an explicit VR little endian CT instance with pixel data.
func ctPart10(study, series, sop string) []byte {
	var meta []byte
	meta = elem(meta, 2, 0x0002, "UI", ctClass)
	meta = elem(meta, 2, 0x0003, "UI", sop)
	meta = elem(meta, 2, 0x0010, "UI", "1.2.840.10008.1.2.1")
	b := make([]byte, 128, 1024)
	b = append(b, "DICM"...)
	b = elem(b, 2, 0, "UL", "")
	b = b[:len(b)-2]
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	b = elem(b, 0x0008, 0x0016, "UI", ctClass)
	b = elem(b, 0x0008, 0x0018, "UI", sop)
	b = elem(b, 0x0008, 0x0050, "SH", "ACC1")
	b = elem(b, 0x0008, 0x0060, "CS", "CT")
	b = elem(b, 0x0010, 0x0010, "PN", "Doe^Jane")
	b = elem(b, 0x0010, 0x0020, "LO", "MRN1")
	b = elem(b, 0x0020, 0x000D, "UI", study)
	b = elem(b, 0x0020, 0x000E, "UI", series)
	b = elem(b, 0x0020, 0x0013, "IS", "7")
	return elem(b, 0x7FE0, 0x0010, "OW", strings.Repeat("\x01\x02", 4096))
}

type part struct {
	contentType string
	body        []byte
}

func multipartBody(t testing.TB, parts ...part) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.body)
	}
	mw.Close()
	return `multipart/related; type="application/dicom"; boundary=` + mw.Boundary(), buf.Bytes()
}

func post(t testing.TB, s *Server, path, ct string, body []byte) (int, map[string]any) {
	t.Helper()
	mux := http.NewServeMux()
	for p, h := range s.Routes() {
		mux.Handle(p, h)
	}
	req := httptest.NewRequest("POST", "http://radbridge.test"+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	if rec.Code < 400 && rec.Header().Get("Content-Type") != "application/dicom+json" {
		t.Errorf("Content-Type %q", rec.Header().Get("Content-Type"))
	}
	return rec.Code, out
}

// summary lists SOP Instance UIDs (or "?") with "ok" or the failure reason.
func summary(out map[string]any) []string {
	var s []string
	for _, in := range testkit.STOWInstances(out) {
		if in.FailureReason != 0 {
			s = append(s, fmt.Sprintf("%s %04X", in.SOPInstanceUID, in.FailureReason))
		} else {
			s = append(s, in.SOPInstanceUID+" ok")
		}
	}
	return s
}

func TestStore(t *testing.T) {
	good := func(sop string) part { return part{"application/dicom", ctPart10("1.2.3", "1.2.3.1", sop)} }
	tests := []struct {
		name     string
		path     string
		parts    []part
		fail     map[string]error
		wantCode int
		want     []string
	}{
		{"all stored", "/dicomweb/studies", []part{good("1.2.3.1.1"), good("1.2.3.1.2")}, nil, 200, []string{"1.2.3.1.1 ok", "1.2.3.1.2 ok"}},
		{"study in URL", "/dicomweb/studies/1.2.3", []part{good("1.2.3.1.1")}, nil, 200, []string{"1.2.3.1.1 ok"}},
		{"no part content type", "/dicomweb/studies", []part{{"", ctPart10("1.2.3", "1.2.3.1", "1.2.3.1.1")}}, nil, 200, []string{"1.2.3.1.1 ok"}},
		{"not DICOM", "/dicomweb/studies", []part{good("1.2.3.1.1"), {"application/dicom", []byte("hello")}}, nil, 202, []string{"1.2.3.1.1 ok", "? C000"}},
		{"other part type", "/dicomweb/studies", []part{good("1.2.3.1.1"), {"text/plain", []byte("hello")}}, nil, 202, []string{"1.2.3.1.1 ok", "? C000"}},
		{"study mismatch", "/dicomweb/studies/9.9", []part{good("1.2.3.1.1")}, nil, 409, []string{"1.2.3.1.1 A900"}},
		{"bad UID", "/dicomweb/studies", []part{{"application/dicom", ctPart10("1.2.x", "1.2.3.1", "1.2.3.1.1")}}, nil, 409, []string{"1.2.3.1.1 A900"}},
		{"commit fails", "/dicomweb/studies", []part{good("1.2.3.1.1"), good("1.2.3.1.2")}, map[string]error{"1.2.3.1.2": errors.New("log down")}, 202, []string{"1.2.3.1.1 ok", "1.2.3.1.2 0110"}},
		{"truncated", "/dicomweb/studies", []part{{"application/dicom", ctPart10("1.2.3", "1.2.3.1", "1.2.3.1.1")[:200]}}, nil, 409, []string{"? C000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &ingesttest.Recorder{FailSOP: tt.fail}
			ct, body := multipartBody(t, tt.parts...)
			code, out := post(t, New(Config{Handler: h}), tt.path, ct, body)
			if code != tt.wantCode {
				t.Errorf("status %d, want %d: %v", code, tt.wantCode, out)
			}
			if diff := cmp.Diff(summary(out), tt.want); diff != "" {
				t.Errorf("response (-got +want):\n%s", diff)
			}
		})
	}
}

func TestStoredInstance(t *testing.T) {
	h := &ingesttest.Recorder{}
	dir := t.TempDir()
	file := ctPart10("1.2.3", "1.2.3.1", "1.2.3.1.1")
	ct, body := multipartBody(t, part{"application/dicom", file})
	code, out := post(t, New(Config{Handler: h, StoreDir: dir, PublicBaseURL: "https://pacs-gw.example.org/"}), "/dicomweb/studies", ct, body)
	stored := h.Instances()
	if code != 200 || len(stored) != 1 {
		t.Fatalf("status %d, %d instances: %v", code, len(stored), out)
	}
	inst := stored[0]
	got := []any{inst.CallingAE, inst.SOPClassUID, inst.AccessionNumber, inst.PatientName, inst.InstanceNumber, inst.TransferSyntaxUID, inst.Size}
	want := []any{"STOW-RS", ctClass, "ACC1", "Doe^Jane", 7, "1.2.840.10008.1.2.1", int64(len(file))}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("instance (-got +want):\n%s", diff)
	}
	written, err := os.ReadFile(filepath.Join(dir, "1.2.3", "1.2.3.1", "1.2.3.1.1.dcm"))
	if err != nil || !bytes.Equal(written, file) || inst.Path == "" {
		t.Errorf("Part-10 file: %v, equal %v, path %q", err, bytes.Equal(written, file), inst.Path)
	}
	refs := out["00081199"].(map[string]any)["Value"].([]any)
	url := refs[0].(map[string]any)["00081190"].(map[string]any)["Value"].([]any)[0]
	if url != "https://pacs-gw.example.org/dicomweb/studies/1.2.3/series/1.2.3.1/instances/1.2.3.1.1" {
		t.Errorf("RetrieveURL %v, want one under PublicBaseURL (never the request's Host, radbridge.test)", url)
	}

	// Without PublicBaseURL: no RetrieveURL at all.
	_, out = post(t, New(Config{Handler: &ingesttest.Recorder{}}), "/dicomweb/studies/1.2.3", ct, body)
	refs = out["00081199"].(map[string]any)["Value"].([]any)
	if _, ok := refs[0].(map[string]any)["00081190"]; ok {
		t.Errorf("RetrieveURL %v without PublicBaseURL", refs[0])
	}
	if _, ok := out["00081190"]; ok {
		t.Errorf("study RetrieveURL %v without PublicBaseURL", out["00081190"])
	}
}

func TestRequestErrors(t *testing.T) {
	_, body := multipartBody(t, part{"application/dicom", ctPart10("1.2.3", "1.2.3.1", "1.2.3.1.1")})
	bigHeader := "--b\r\nX-Pad: " + strings.Repeat("a", 64<<10) + "\r\n\r\nx\r\n--b--\r\n"
	tests := []struct {
		name, ct string
		body     []byte
		want     int
	}{
		{"json", "application/json", body, 415},
		{"no type", "multipart/related; boundary=b", body, 415},
		{"other type", `multipart/related; type="application/dicom+json"; boundary=b`, body, 415},
		{"no boundary", `multipart/related; type="application/dicom"`, body, 400},
		{"wrong boundary", `multipart/related; type="application/dicom"; boundary=nope`, body, 400},
		{"no parts", `multipart/related; type="application/dicom"; boundary=b`, []byte("--b--\r\n"), 400},
		{"part header too big", `multipart/related; type="application/dicom"; boundary=b`, []byte(bigHeader), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, out := post(t, New(Config{Handler: &ingesttest.Recorder{}}), "/dicomweb/studies", tt.ct, tt.body); code != tt.want {
				t.Errorf("status %d, want %d: %v", code, tt.want, out)
			}
		})
	}
	// The body limit.
	ct, body := multipartBody(t, part{"application/dicom", ctPart10("1.2.3", "1.2.3.1", "1.2.3.1.1")})
	if code, _ := post(t, New(Config{Handler: &ingesttest.Recorder{}, MaxBodyBytes: 1000}), "/dicomweb/studies", ct, body); code != 413 {
		t.Errorf("over MaxBodyBytes: %d, want 413", code)
	}
	req := httptest.NewRequest("POST", "/dicomweb/studies", io.MultiReader(bytes.NewReader(body)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", ct)
	rec := httptest.NewRecorder()
	New(Config{Handler: &ingesttest.Recorder{}, MaxBodyBytes: 1000}).ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Errorf("chunked over MaxBodyBytes: %d, want 413", rec.Code)
	}
}

// FuzzMultipart feeds random bodies: no panic, and every answer is one of
// the documented codes.
func FuzzMultipart(f *testing.F) {
	_, body := multipartBody(f, part{"application/dicom", ctPart10("1.2.3", "1.2.3.1", "1.2.3.1.1")}, part{"application/dicom", []byte("x")})
	// multipart.Writer picks a random boundary; rewrite it to a fixed one.
	b := body[2:bytes.IndexByte(body, '\r')]
	f.Add(bytes.ReplaceAll(body, b, []byte("b")))
	f.Add([]byte("--b\r\n\r\nDICM\r\n--b--\r\n"))
	f.Add([]byte("--b\r\nContent-Type: application/dicom\r\n\r\n" + strings.Repeat("\x00", 128) + "DICM\x02\x00\x10\x00UI\xff\xff\r\n--b--\r\n"))
	s := New(Config{Handler: &ingesttest.Recorder{}, MaxBodyBytes: 1 << 20, MaxHeaderBytes: 64 << 10})
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/dicomweb/studies", bytes.NewReader(body))
		req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=b`)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 202, 409, 400, 413:
		default:
			t.Errorf("status %d", rec.Code)
		}
	})
}
