// Package scu is a DICOM service class user: it requests an association
// (DICOM PS3.8 section 7.1, package ul) and sends the DIMSE requests of
// DICOM PS3.7 (package dimse) that radbridge's tools and demo need:
// C-ECHO (Verification, PS3.4 annex A), C-STORE (Storage, PS3.4 annex B)
// and N-CREATE of an Instance Availability Notification (PS3.4 annex R,
// PS3.3 section C.4.23).
//
// Every presentation context is proposed with a single transfer syntax, so
// that a data set is always sent in the syntax it is encoded in: the package
// never transcodes. Every read has a deadline (Config.Timeout).
//
// The package does not log; it returns errors.
package scu
