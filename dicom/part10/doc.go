// Package part10 is what the receivers (the C-STORE SCP and STOW-RS) share
// about a received instance: the DICOM File Format (PS3.10 section 7: the
// preamble, "DICM" and the File Meta Information) of the files they write,
// the layout of those files in a store directory, the Instance a data set
// header describes, UID validation (PS3.5 section 9.1), and the one bound
// on header parses in the process. It does not log.
package part10
