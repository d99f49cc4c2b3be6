// Package demo is a simulated hospital for trying radbridge on one machine:
// a RIS that sends HL7 v2 orders and reports over MLLP (HL7 v2.5.1 chapter 2,
// the MLLP spec) and a PACS that sends synthetic images with DICOM C-STORE
// and an Instance Availability Notification (PS3.4 annex R). Every patient,
// image and report it makes is synthetic.
//
// The instances are written by a minimal explicit VR little endian dataset
// writer (PS3.5 section 7.1.2), without Part-10 file meta: what a C-STORE
// carries.
package demo
