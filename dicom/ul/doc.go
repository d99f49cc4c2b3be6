// Package ul implements the DICOM upper layer protocol for TCP/IP, DICOM
// PS3.8: the PDUs (section 9.3), association negotiation as an acceptor
// (sections 7.1 and 9.3.2-9.3.4, annex D for user information) and the
// association state machine (section 9.2) with its ARTIM timer.
//
// Every read has a deadline and every length a bound: a PDU longer than the
// configured maximum is refused before its body is read, and a peer that
// violates the protocol is answered with A-ABORT carrying the PS3.8 table
// 9-26 reason. The package does not log; it returns errors.
package ul
