// Package testkit holds what radbridge's integration tests and benchmarks
// share: finding a real peer binary (DCMTK, python-hl7's mllp_send,
// Chromium), waiting for a condition with a bound instead of sleeping,
// sending HL7 v2 over MLLP with mllp_send, a RIS order, synthetic DICOM
// studies, reading STOW-RS answers, a fuzzing peer over an in-memory
// connection, small HTTP reads, and building and running the radbridge
// binary as a child process until it is ready.
//
// It imports no radbridge package but hl7, so the internal tests of the
// protocol packages can use it too. Package testkit/inproc starts the
// daemon in the test's own process.
//
// Peers follow one rule: a missing peer skips the test, except under
// CI=true, where the test command installs every peer and a missing one
// fails the test.
package testkit
