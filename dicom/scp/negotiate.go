package scp

import (
	"strings"

	"github.com/suyashkumar/dicom/pkg/uid"

	"radbridge/dicom/dataset"
	"radbridge/dicom/ul"
)

// SOP classes served besides storage (PS3.4 annexes A, F.7 and R).
const (
	VerificationSOPClass = "1.2.840.10008.1.1"
	IANSOPClass          = "1.2.840.10008.5.1.4.33"
	MPPSSOPClass         = "1.2.840.10008.3.1.2.3.3"
)

// storageTransferSyntaxes are accepted for storage: every standard native
// and encapsulated syntax. We only read headers and never decode pixels, so
// we take what the sender has and never make it transcode (PS3.5 section
// 10, annex A).
var storageTransferSyntaxes = map[string]bool{
	dataset.ImplicitVRLittleEndian:         true,
	dataset.ExplicitVRLittleEndian:         true,
	dataset.DeflatedExplicitVRLittleEndian: true,
	dataset.ExplicitVRBigEndian:            true,
	"1.2.840.10008.1.2.1.98":               true, // encapsulated uncompressed explicit VR LE
	"1.2.840.10008.1.2.4.50":               true, // JPEG baseline
	"1.2.840.10008.1.2.4.51":               true, // JPEG extended
	"1.2.840.10008.1.2.4.57":               true, // JPEG lossless
	"1.2.840.10008.1.2.4.70":               true, // JPEG lossless SV1
	"1.2.840.10008.1.2.4.80":               true, // JPEG-LS lossless
	"1.2.840.10008.1.2.4.81":               true, // JPEG-LS near-lossless
	"1.2.840.10008.1.2.4.90":               true, // JPEG 2000 lossless
	"1.2.840.10008.1.2.4.91":               true, // JPEG 2000
	"1.2.840.10008.1.2.4.92":               true, // JPEG 2000 part 2 lossless
	"1.2.840.10008.1.2.4.93":               true, // JPEG 2000 part 2
	"1.2.840.10008.1.2.4.100":              true, // MPEG2 MP@ML
	"1.2.840.10008.1.2.4.100.1":            true,
	"1.2.840.10008.1.2.4.101":              true, // MPEG2 MP@HL
	"1.2.840.10008.1.2.4.101.1":            true,
	"1.2.840.10008.1.2.4.102":              true, // MPEG-4 AVC/H.264
	"1.2.840.10008.1.2.4.102.1":            true,
	"1.2.840.10008.1.2.4.103":              true,
	"1.2.840.10008.1.2.4.103.1":            true,
	"1.2.840.10008.1.2.4.104":              true,
	"1.2.840.10008.1.2.4.104.1":            true,
	"1.2.840.10008.1.2.4.105":              true,
	"1.2.840.10008.1.2.4.105.1":            true,
	"1.2.840.10008.1.2.4.106":              true,
	"1.2.840.10008.1.2.4.106.1":            true,
	"1.2.840.10008.1.2.4.107":              true, // HEVC/H.265
	"1.2.840.10008.1.2.4.108":              true,
	"1.2.840.10008.1.2.4.110":              true, // JPEG XL lossless
	"1.2.840.10008.1.2.4.111":              true, // JPEG XL JPEG recompression
	"1.2.840.10008.1.2.4.112":              true, // JPEG XL
	"1.2.840.10008.1.2.4.201":              true, // HTJ2K lossless
	"1.2.840.10008.1.2.4.202":              true, // HTJ2K lossless RPCL
	"1.2.840.10008.1.2.4.203":              true, // HTJ2K
	"1.2.840.10008.1.2.5":                  true, // RLE lossless
}

// nativeTransferSyntaxes are accepted for Verification, IAN and MPPS, whose
// data sets are parsed whole.
var nativeTransferSyntaxes = map[string]bool{
	dataset.ImplicitVRLittleEndian:         true,
	dataset.ExplicitVRLittleEndian:         true,
	dataset.DeflatedExplicitVRLittleEndian: true,
	dataset.ExplicitVRBigEndian:            true,
}

// otherStorageClasses are standard storage SOP classes outside
// 1.2.840.10008.5.1.4.1.1 (PS3.4 annex B.5 and its companions).
var otherStorageClasses = map[string]bool{
	"1.2.840.10008.5.1.4.34.7":  true, // RT Beams Delivery Instruction
	"1.2.840.10008.5.1.4.34.10": true, // RT Brachy Application Setup Delivery Instruction
	"1.2.840.10008.5.1.4.38.1":  true, // Hanging Protocol
	"1.2.840.10008.5.1.4.39.1":  true, // Color Palette
	"1.2.840.10008.5.1.4.43.1":  true, // Generic Implant Template
	"1.2.840.10008.5.1.4.44.1":  true, // Implant Assembly Template
	"1.2.840.10008.5.1.4.45.1":  true, // Implant Template Group
}

// IsStorageClass reports whether uid is a standard storage SOP class: any
// UID under 1.2.840.10008.5.1.4.1.1., a few listed others, or a SOP class
// the dictionary names "... Storage".
func IsStorageClass(u string) bool {
	if strings.HasPrefix(u, "1.2.840.10008.5.1.4.1.1.") || otherStorageClasses[u] {
		return true
	}
	if info, err := uid.Lookup(u); err == nil && info.Type == uid.TypeSOPClass && strings.HasSuffix(info.Name, "Storage") {
		return true
	}
	return false
}

// negotiate answers one proposed presentation context (PS3.8 table 9-18):
// the first proposed transfer syntax we support wins.
func negotiate(abstract string, proposed []string) (string, byte) {
	var set map[string]bool
	switch {
	case abstract == VerificationSOPClass, abstract == IANSOPClass, abstract == MPPSSOPClass:
		set = nativeTransferSyntaxes
	case IsStorageClass(abstract):
		set = storageTransferSyntaxes
	default:
		return "", ul.ResultAbstractSyntaxNotSupported
	}
	for _, ts := range proposed {
		if set[ts] {
			return ts, ul.ResultAcceptance
		}
	}
	return "", ul.ResultTransferSyntaxesNotSupported
}
