// Package dicomweb serves STOW-RS, the DICOMweb store transaction (DICOM
// PS3.18 section 10.5): POST /dicomweb/studies[/{study}] with a
// multipart/related body of application/dicom Part-10 files (PS3.10).
//
// The body is streamed part by part: each part's File Meta Information and
// data set header (everything before Pixel Data) are read behind length
// limits, as the C-STORE SCP does (bytes and elements); pixel data goes to
// the optional store directory or nowhere, never into memory. A request of
// more than Config.MaxParts parts is answered 413 once the part beyond the
// limit starts, and per-part warnings are rate-limited, so a body of
// millions of empty parts costs neither memory nor log. Each instance is committed
// through a Handler shaped like scp.Handler.StoreInstance, and the answer
// is the PS3.18 store instances response as DICOM JSON (PS3.18 annex F).
package dicomweb
