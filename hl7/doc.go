// Package hl7 parses and builds HL7 version 2 messages as defined by
// HL7 v2.5.1 chapter 2 (Control): message, segment, field, repetition,
// component and sub-component structure, the delimiters declared in MSH-1
// and MSH-2, escape sequences (section 2.7), character sets (MSH-18,
// table 0211) and the acknowledgment message ACK with its MSA and ERR
// segments (sections 2.9 and 2.15), including the original and enhanced
// acknowledgment modes and the error codes of table 0357.
//
// The parser works on bytes, never on characters: positions are byte
// offsets and a multi-byte UTF-8 or ISO 8859 character never shifts a
// field. Text is decoded (escape sequences resolved, the message's
// character set converted to UTF-8) only when an accessor asks for it.
//
// Field numbering is HL7's: a segment's field 0 is its ID, MSH-1 is the
// field separator itself and MSH-2 the encoding characters. Repetitions,
// components and sub-components are numbered from 1.
//
// Messages carry patient data; Message and Segment implement
// slog.LogValuer so that logging them shows only the message type and
// control ID. The package itself never logs.
package hl7
