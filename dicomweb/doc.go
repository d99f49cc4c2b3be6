// Package dicomweb serves STOW-RS, the DICOMweb store transaction (DICOM
// PS3.18 section 10.5): POST /dicomweb/studies[/{study}] with a
// multipart/related body of application/dicom Part-10 files (PS3.10).
//
// The body is streamed part by part: each part's File Meta Information and
// data set header (everything before Pixel Data) are read behind length
// limits, as the C-STORE SCP does; pixel data goes to the optional store
// directory or nowhere, never into memory. Each instance is committed
// through a Handler shaped like scp.Handler.StoreInstance, and the answer
// is the PS3.18 store instances response as DICOM JSON (PS3.18 annex F).
package dicomweb
