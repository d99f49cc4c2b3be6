package ul

import (
	"errors"
	"fmt"
)

// Sentinel errors; compare with errors.Is.
var (
	ErrPDUTooLarge      = errors.New("PDU exceeds maximum length")
	ErrMalformedPDU     = errors.New("malformed PDU")
	ErrUnrecognizedPDU  = errors.New("unrecognized PDU type")
	ErrUnexpectedPDU    = errors.New("unexpected PDU")
	ErrPeerAborted      = errors.New("association aborted by peer")
	ErrReleased         = errors.New("association released")
	ErrRejected         = errors.New("association rejected")
	ErrIdleTimeout      = errors.New("association idle timeout")
	ErrARTIMExpired     = errors.New("ARTIM timer expired")
	ErrAborted          = errors.New("association aborted locally")
	ErrInvalidContextID = errors.New("PDV for a presentation context that was not accepted")
)

// A-ABORT sources (PS3.8 table 9-26).
const (
	AbortSourceServiceUser     byte = 0
	AbortSourceServiceProvider byte = 2
)

// A-ABORT reasons when the source is the service provider (PS3.8 table 9-26).
const (
	AbortNotSpecified          byte = 0
	AbortUnrecognizedPDU       byte = 1
	AbortUnexpectedPDU         byte = 2
	AbortUnrecognizedParameter byte = 4
	AbortUnexpectedParameter   byte = 5
	AbortInvalidParameterValue byte = 6
)

// A-ASSOCIATE-RJ results, sources and reasons (PS3.8 table 9-21).
const (
	RejectPermanent byte = 1
	RejectTransient byte = 2

	RejectSourceServiceUser         byte = 1 // DICOM UL service-user
	RejectSourceServiceProviderACSE byte = 2 // DICOM UL service-provider (ACSE related function)
	RejectSourceServiceProviderPres byte = 3 // DICOM UL service-provider (presentation related function)
	RejectNoReason                  byte = 1 // source 1 or 2
	RejectApplicationContextNotSupp byte = 2 // source 1
	RejectCallingAENotRecognized    byte = 3 // source 1
	RejectCalledAENotRecognized     byte = 7 // source 1
	RejectProtocolVersionNotSupp    byte = 2 // source 2
	RejectTemporaryCongestion       byte = 1 // source 3
	RejectLocalLimitExceeded        byte = 2 // source 3
)

// ProtocolError is a violation of PS3.8 by the peer; Reason is the A-ABORT
// reason (source 2, service provider) that answers it.
type ProtocolError struct {
	Reason byte
	Err    error
}

func (e *ProtocolError) Error() string { return e.Err.Error() }
func (e *ProtocolError) Unwrap() error { return e.Err }

// RejectError reports an association we rejected with A-ASSOCIATE-RJ.
type RejectError struct {
	AssociateRJ
	CallingAE, CalledAE string
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("association rejected (result %d, source %d, reason %d)", e.Result, e.Source, e.Reason)
}

// Unwrap returns ErrRejected.
func (e *RejectError) Unwrap() error { return ErrRejected }

// abortReasonFor picks the A-ABORT reason for an error (0 when not a
// protocol error).
func abortReasonFor(err error) byte {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return AbortNotSpecified
}
