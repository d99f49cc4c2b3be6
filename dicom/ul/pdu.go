package ul

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// PDUType is the first byte of every PDU (PS3.8 section 9.3).
type PDUType byte

// PDU types (PS3.8 table 9-11 and following).
const (
	TypeAssociateRQ PDUType = 0x01
	TypeAssociateAC PDUType = 0x02
	TypeAssociateRJ PDUType = 0x03
	TypePDataTF     PDUType = 0x04
	TypeReleaseRQ   PDUType = 0x05
	TypeReleaseRP   PDUType = 0x06
	TypeAbort       PDUType = 0x07
)

func (t PDUType) String() string {
	switch t {
	case TypeAssociateRQ:
		return "A-ASSOCIATE-RQ"
	case TypeAssociateAC:
		return "A-ASSOCIATE-AC"
	case TypeAssociateRJ:
		return "A-ASSOCIATE-RJ"
	case TypePDataTF:
		return "P-DATA-TF"
	case TypeReleaseRQ:
		return "A-RELEASE-RQ"
	case TypeReleaseRP:
		return "A-RELEASE-RP"
	case TypeAbort:
		return "A-ABORT"
	}
	return fmt.Sprintf("PDU(0x%02x)", byte(t))
}

// Item types of the variable part of A-ASSOCIATE PDUs (PS3.8 section 9.3.2,
// 9.3.3 and annex D).
const (
	itemApplicationContext  = 0x10
	itemPresentationRQ      = 0x20
	itemPresentationAC      = 0x21
	itemAbstractSyntax      = 0x30
	itemTransferSyntax      = 0x40
	itemUserInformation     = 0x50
	itemMaxLength           = 0x51
	itemImplementationClass = 0x52
	itemAsyncOps            = 0x53
	itemRoleSelection       = 0x54
	itemImplementationVer   = 0x55
)

// ApplicationContextName is the only DICOM application context name
// (PS3.7 annex A.2.1).
const ApplicationContextName = "1.2.840.10008.3.1.1.1"

// headerLen is the fixed PDU header: type, reserved, 32-bit length.
const headerLen = 6

// PDU is one decoded protocol data unit: *AssociateRQ, *AssociateAC,
// *AssociateRJ, *PDataTF, *ReleaseRQ, *ReleaseRP or *Abort.
type PDU interface {
	Type() PDUType
	// appendBody appends the PDU's variable part (everything after the
	// 6-byte header).
	appendBody(dst []byte) ([]byte, error)
}

// AssociateRQ is an A-ASSOCIATE-RQ PDU (PS3.8 section 9.3.2).
type AssociateRQ struct {
	ProtocolVersion      uint16
	CalledAE             string
	CallingAE            string
	ApplicationContext   string
	PresentationContexts []PresentationContextRQ
	UserInfo             UserInfo
}

// AssociateAC is an A-ASSOCIATE-AC PDU (PS3.8 section 9.3.3).
type AssociateAC struct {
	ProtocolVersion      uint16
	CalledAE             string
	CallingAE            string
	ApplicationContext   string
	PresentationContexts []PresentationContextAC
	UserInfo             UserInfo
}

// PresentationContextRQ is a proposed presentation context item (PS3.8
// section 9.3.2.2).
type PresentationContextRQ struct {
	ID               byte
	AbstractSyntax   string
	TransferSyntaxes []string
}

// Presentation context results in an A-ASSOCIATE-AC (PS3.8 table 9-18).
const (
	ResultAcceptance                   byte = 0
	ResultUserRejection                byte = 1
	ResultNoReason                     byte = 2
	ResultAbstractSyntaxNotSupported   byte = 3
	ResultTransferSyntaxesNotSupported byte = 4
)

// PresentationContextAC is a presentation context answer item (PS3.8
// section 9.3.3.2).
type PresentationContextAC struct {
	ID             byte
	Result         byte
	TransferSyntax string
}

// UserInfo holds the user information sub-items we understand (PS3.8
// annex D.1, PS3.7 annex D.3.3). Other sub-items (extended negotiation, user
// identity) are skipped on decode.
type UserInfo struct {
	// MaxPDULength is the maximum length of the variable field of P-DATA-TF
	// PDUs the sender of this item accepts; 0 means unlimited.
	MaxPDULength              uint32
	ImplementationClassUID    string
	ImplementationVersionName string
	// AsyncOps is set when an asynchronous operations window item was present.
	AsyncOps *AsyncOps
	// RoleSelections are SCP/SCU role selection items.
	RoleSelections []RoleSelection
}

// AsyncOps is the asynchronous operations window (PS3.7 annex D.3.3.3).
type AsyncOps struct{ Invoked, Performed uint16 }

// RoleSelection is an SCP/SCU role selection item (PS3.7 annex D.3.3.4).
type RoleSelection struct {
	SOPClassUID string
	SCU, SCP    byte
}

// AssociateRJ is an A-ASSOCIATE-RJ PDU (PS3.8 section 9.3.4, table 9-21).
type AssociateRJ struct {
	Result, Source, Reason byte
}

// PDataTF is a P-DATA-TF PDU (PS3.8 section 9.3.5). The PDV data slices of a
// decoded PDataTF point into the read buffer.
type PDataTF struct {
	PDVs []PDV
}

// PDV is one presentation data value item with its message control header
// (PS3.8 annex E.2).
type PDV struct {
	ContextID byte
	Command   bool // message control header bit 0
	Last      bool // message control header bit 1
	Data      []byte
}

// ReleaseRQ is an A-RELEASE-RQ PDU (PS3.8 section 9.3.6).
type ReleaseRQ struct{}

// ReleaseRP is an A-RELEASE-RP PDU (PS3.8 section 9.3.7).
type ReleaseRP struct{}

// Abort is an A-ABORT PDU (PS3.8 section 9.3.8, table 9-26).
type Abort struct {
	Source, Reason byte
}

// Type implements PDU.
func (*AssociateRQ) Type() PDUType { return TypeAssociateRQ }

// Type implements PDU.
func (*AssociateAC) Type() PDUType { return TypeAssociateAC }

// Type implements PDU.
func (*AssociateRJ) Type() PDUType { return TypeAssociateRJ }

// Type implements PDU.
func (*PDataTF) Type() PDUType { return TypePDataTF }

// Type implements PDU.
func (*ReleaseRQ) Type() PDUType { return TypeReleaseRQ }

// Type implements PDU.
func (*ReleaseRP) Type() PDUType { return TypeReleaseRP }

// Type implements PDU.
func (*Abort) Type() PDUType { return TypeAbort }

// Encode returns the wire form of p.
func Encode(p PDU) ([]byte, error) {
	return AppendPDU(nil, p)
}

// AppendPDU appends the wire form of p (header included) to dst.
func AppendPDU(dst []byte, p PDU) ([]byte, error) {
	start := len(dst)
	dst = append(dst, byte(p.Type()), 0, 0, 0, 0, 0)
	dst, err := p.appendBody(dst)
	if err != nil {
		return dst[:start], err
	}
	n := len(dst) - start - headerLen
	if uint64(n) > 0xFFFFFFFF {
		return dst[:start], fmt.Errorf("encode %v: %w", p.Type(), ErrPDUTooLarge)
	}
	binary.BigEndian.PutUint32(dst[start+2:], uint32(n))
	return dst, nil
}

func (p *AssociateRJ) appendBody(dst []byte) ([]byte, error) {
	return append(dst, 0, p.Result, p.Source, p.Reason), nil
}

func (p *Abort) appendBody(dst []byte) ([]byte, error) {
	return append(dst, 0, 0, p.Source, p.Reason), nil
}

func (*ReleaseRQ) appendBody(dst []byte) ([]byte, error) { return append(dst, 0, 0, 0, 0), nil }
func (*ReleaseRP) appendBody(dst []byte) ([]byte, error) { return append(dst, 0, 0, 0, 0), nil }

func (p *PDataTF) appendBody(dst []byte) ([]byte, error) {
	for _, v := range p.PDVs {
		if uint64(len(v.Data))+2 > 0xFFFFFFFF {
			return dst, fmt.Errorf("encode PDV: %w", ErrPDUTooLarge)
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v.Data)+2))
		var mch byte
		if v.Command {
			mch |= 1
		}
		if v.Last {
			mch |= 2
		}
		dst = append(dst, v.ContextID, mch)
		dst = append(dst, v.Data...)
	}
	return dst, nil
}

func appendAE(dst []byte, ae string) []byte {
	var b [16]byte
	for i := range b {
		b[i] = ' '
	}
	copy(b[:], ae)
	return append(dst, b[:]...)
}

func appendItem(dst []byte, typ byte, value string) ([]byte, error) {
	if len(value) > 0xFFFF {
		return dst, fmt.Errorf("encode item 0x%02x: %w", typ, ErrPDUTooLarge)
	}
	dst = append(dst, typ, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(value)))
	return append(dst, value...), nil
}

// beginItem appends an item header with a placeholder length and returns
// the offset of the length field.
func beginItem(dst []byte, typ byte) ([]byte, int) {
	dst = append(dst, typ, 0, 0, 0)
	return dst, len(dst) - 2
}

func endItem(dst []byte, at int) ([]byte, error) {
	n := len(dst) - at - 2
	if n > 0xFFFF {
		return dst, fmt.Errorf("encode item: %w", ErrPDUTooLarge)
	}
	binary.BigEndian.PutUint16(dst[at:], uint16(n))
	return dst, nil
}

func appendAssociateFixed(dst []byte, version uint16, called, calling, appCtx string) ([]byte, error) {
	dst = binary.BigEndian.AppendUint16(dst, version)
	dst = append(dst, 0, 0)
	dst = appendAE(dst, called)
	dst = appendAE(dst, calling)
	dst = append(dst, make([]byte, 32)...)
	return appendItem(dst, itemApplicationContext, appCtx)
}

func (p *AssociateRQ) appendBody(dst []byte) ([]byte, error) {
	dst, err := appendAssociateFixed(dst, p.ProtocolVersion, p.CalledAE, p.CallingAE, p.ApplicationContext)
	if err != nil {
		return dst, err
	}
	for _, pc := range p.PresentationContexts {
		var at int
		dst, at = beginItem(dst, itemPresentationRQ)
		dst = append(dst, pc.ID, 0, 0, 0)
		if dst, err = appendItem(dst, itemAbstractSyntax, pc.AbstractSyntax); err != nil {
			return dst, err
		}
		for _, ts := range pc.TransferSyntaxes {
			if dst, err = appendItem(dst, itemTransferSyntax, ts); err != nil {
				return dst, err
			}
		}
		if dst, err = endItem(dst, at); err != nil {
			return dst, err
		}
	}
	return p.UserInfo.append(dst)
}

func (p *AssociateAC) appendBody(dst []byte) ([]byte, error) {
	dst, err := appendAssociateFixed(dst, p.ProtocolVersion, p.CalledAE, p.CallingAE, p.ApplicationContext)
	if err != nil {
		return dst, err
	}
	for _, pc := range p.PresentationContexts {
		var at int
		dst, at = beginItem(dst, itemPresentationAC)
		dst = append(dst, pc.ID, 0, pc.Result, 0)
		if dst, err = appendItem(dst, itemTransferSyntax, pc.TransferSyntax); err != nil {
			return dst, err
		}
		if dst, err = endItem(dst, at); err != nil {
			return dst, err
		}
	}
	return p.UserInfo.append(dst)
}

func (u *UserInfo) append(dst []byte) ([]byte, error) {
	dst, at := beginItem(dst, itemUserInformation)
	dst = append(dst, itemMaxLength, 0, 0, 4)
	dst = binary.BigEndian.AppendUint32(dst, u.MaxPDULength)
	var err error
	if u.ImplementationClassUID != "" {
		if dst, err = appendItem(dst, itemImplementationClass, u.ImplementationClassUID); err != nil {
			return dst, err
		}
	}
	if u.AsyncOps != nil {
		dst = append(dst, itemAsyncOps, 0, 0, 4)
		dst = binary.BigEndian.AppendUint16(dst, u.AsyncOps.Invoked)
		dst = binary.BigEndian.AppendUint16(dst, u.AsyncOps.Performed)
	}
	for _, rs := range u.RoleSelections {
		var rat int
		dst, rat = beginItem(dst, itemRoleSelection)
		if len(rs.SOPClassUID) > 0xFFFF-4 {
			return dst, fmt.Errorf("encode role selection: %w", ErrPDUTooLarge)
		}
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(rs.SOPClassUID)))
		dst = append(dst, rs.SOPClassUID...)
		dst = append(dst, rs.SCU, rs.SCP)
		if dst, err = endItem(dst, rat); err != nil {
			return dst, err
		}
	}
	if u.ImplementationVersionName != "" {
		if dst, err = appendItem(dst, itemImplementationVer, u.ImplementationVersionName); err != nil {
			return dst, err
		}
	}
	return endItem(dst, at)
}

// ReadPDU reads one PDU from r. buf is reused for the body when large
// enough; the returned buffer should be passed to the next call. A PDU whose
// declared length exceeds maxLen is refused with ErrPDUTooLarge before any
// body byte is read or allocated. The returned PDU (P-DATA-TF data in
// particular) may point into the returned buffer.
func ReadPDU(r io.Reader, buf []byte, maxLen uint32) (PDU, []byte, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, buf, fmt.Errorf("read PDU header: %w", err)
	}
	typ := PDUType(hdr[0])
	n := binary.BigEndian.Uint32(hdr[2:])
	if typ < TypeAssociateRQ || typ > TypeAbort {
		return nil, buf, &ProtocolError{Reason: AbortUnrecognizedPDU, Err: fmt.Errorf("read PDU header: type 0x%02x: %w", hdr[0], ErrUnrecognizedPDU)}
	}
	if n > maxLen {
		return nil, buf, &ProtocolError{Reason: AbortInvalidParameterValue, Err: fmt.Errorf("read %v: length %d > %d: %w", typ, n, maxLen, ErrPDUTooLarge)}
	}
	if uint32(cap(buf)) < n {
		buf = make([]byte, n)
	}
	body := buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, buf, fmt.Errorf("read %v body: %w", typ, err)
	}
	p, err := Decode(typ, body)
	return p, buf, err
}

// Decode decodes the body (everything after the 6-byte header) of a PDU of
// the given type. Errors are *ProtocolError carrying the A-ABORT reason.
func Decode(typ PDUType, body []byte) (PDU, error) {
	switch typ {
	case TypeAssociateRQ:
		return decodeAssociateRQ(body)
	case TypeAssociateAC:
		return decodeAssociateAC(body)
	case TypeAssociateRJ:
		if len(body) != 4 {
			return nil, malformed(typ, "length %d", len(body))
		}
		return &AssociateRJ{Result: body[1], Source: body[2], Reason: body[3]}, nil
	case TypePDataTF:
		return decodePData(body)
	case TypeReleaseRQ, TypeReleaseRP:
		if len(body) != 4 {
			return nil, malformed(typ, "length %d", len(body))
		}
		if typ == TypeReleaseRQ {
			return &ReleaseRQ{}, nil
		}
		return &ReleaseRP{}, nil
	case TypeAbort:
		if len(body) != 4 {
			return nil, malformed(typ, "length %d", len(body))
		}
		return &Abort{Source: body[2], Reason: body[3]}, nil
	}
	return nil, &ProtocolError{Reason: AbortUnrecognizedPDU, Err: fmt.Errorf("decode PDU type 0x%02x: %w", byte(typ), ErrUnrecognizedPDU)}
}

func malformed(typ PDUType, format string, args ...any) error {
	return &ProtocolError{Reason: AbortInvalidParameterValue, Err: fmt.Errorf("decode %v: %s: %w", typ, fmt.Sprintf(format, args...), ErrMalformedPDU)}
}

func decodePData(body []byte) (*PDataTF, error) {
	p := &PDataTF{}
	for len(body) > 0 {
		if len(body) < 6 {
			return nil, malformed(TypePDataTF, "truncated PDV item")
		}
		n := binary.BigEndian.Uint32(body)
		if n < 2 || uint64(n) > uint64(len(body)-4) {
			return nil, malformed(TypePDataTF, "PDV item length %d", n)
		}
		mch := body[5]
		if mch&^3 != 0 {
			return nil, malformed(TypePDataTF, "message control header 0x%02x", mch)
		}
		p.PDVs = append(p.PDVs, PDV{
			ContextID: body[4],
			Command:   mch&1 != 0,
			Last:      mch&2 != 0,
			Data:      body[6 : 4+n],
		})
		body = body[4+n:]
	}
	if len(p.PDVs) == 0 {
		return nil, malformed(TypePDataTF, "no PDV item")
	}
	return p, nil
}

// trimAE removes the padding of an AE title field; leading and trailing
// spaces are not significant (PS3.5 table 6.2-1, AE).
func trimAE(b []byte) string {
	return strings.Trim(string(b), " \x00")
}

// trimUID removes a trailing NUL pad (PS3.8 annex F: UIDs in items are not
// padded, but some implementations do it anyway).
func trimUID(b []byte) string {
	return strings.TrimRight(string(b), "\x00 ")
}

type item struct {
	typ   byte
	value []byte
}

// splitItems splits a sequence of items with 16-bit lengths.
func splitItems(typ PDUType, b []byte) ([]item, error) {
	var items []item
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, malformed(typ, "truncated item")
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n > len(b)-4 {
			return nil, malformed(typ, "item 0x%02x length %d exceeds PDU", b[0], n)
		}
		items = append(items, item{typ: b[0], value: b[4 : 4+n]})
		b = b[4+n:]
	}
	return items, nil
}

type associateFixed struct {
	version         uint16
	called, calling string
	appCtx          string
	hasAppCtx       bool
	userInfo        UserInfo
	hasUserInfo     bool
	items           []item
}

func decodeAssociateFixed(typ PDUType, body []byte) (*associateFixed, error) {
	if len(body) < 68 {
		return nil, malformed(typ, "length %d < 68", len(body))
	}
	f := &associateFixed{
		version: binary.BigEndian.Uint16(body),
		called:  trimAE(body[4:20]),
		calling: trimAE(body[20:36]),
	}
	items, err := splitItems(typ, body[68:])
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		switch it.typ {
		case itemApplicationContext:
			if f.hasAppCtx {
				return nil, &ProtocolError{Reason: AbortUnexpectedParameter, Err: fmt.Errorf("decode %v: second application context: %w", typ, ErrMalformedPDU)}
			}
			f.hasAppCtx = true
			f.appCtx = trimUID(it.value)
		case itemUserInformation:
			if f.hasUserInfo {
				return nil, &ProtocolError{Reason: AbortUnexpectedParameter, Err: fmt.Errorf("decode %v: second user information item: %w", typ, ErrMalformedPDU)}
			}
			f.hasUserInfo = true
			if f.userInfo, err = decodeUserInfo(typ, it.value); err != nil {
				return nil, err
			}
		default:
			f.items = append(f.items, it)
		}
	}
	if !f.hasAppCtx {
		return nil, malformed(typ, "no application context item")
	}
	return f, nil
}

func decodeUserInfo(typ PDUType, b []byte) (UserInfo, error) {
	var u UserInfo
	subs, err := splitItems(typ, b)
	if err != nil {
		return u, err
	}
	for _, s := range subs {
		switch s.typ {
		case itemMaxLength:
			if len(s.value) != 4 {
				return u, malformed(typ, "maximum length sub-item length %d", len(s.value))
			}
			u.MaxPDULength = binary.BigEndian.Uint32(s.value)
		case itemImplementationClass:
			u.ImplementationClassUID = trimUID(s.value)
		case itemImplementationVer:
			u.ImplementationVersionName = strings.TrimRight(string(s.value), " \x00")
		case itemAsyncOps:
			if len(s.value) != 4 {
				return u, malformed(typ, "asynchronous operations window length %d", len(s.value))
			}
			u.AsyncOps = &AsyncOps{Invoked: binary.BigEndian.Uint16(s.value), Performed: binary.BigEndian.Uint16(s.value[2:])}
		case itemRoleSelection:
			if len(s.value) < 2 {
				return u, malformed(typ, "role selection length %d", len(s.value))
			}
			n := int(binary.BigEndian.Uint16(s.value))
			if len(s.value) != 2+n+2 {
				return u, malformed(typ, "role selection UID length %d", n)
			}
			u.RoleSelections = append(u.RoleSelections, RoleSelection{
				SOPClassUID: trimUID(s.value[2 : 2+n]),
				SCU:         s.value[2+n],
				SCP:         s.value[3+n],
			})
		default:
			// Extended negotiation, user identity and future sub-items are
			// not used by this implementation (PS3.7 annex D.3.3).
		}
	}
	return u, nil
}

func decodeAssociateRQ(body []byte) (*AssociateRQ, error) {
	f, err := decodeAssociateFixed(TypeAssociateRQ, body)
	if err != nil {
		return nil, err
	}
	p := &AssociateRQ{
		ProtocolVersion:    f.version,
		CalledAE:           f.called,
		CallingAE:          f.calling,
		ApplicationContext: f.appCtx,
		UserInfo:           f.userInfo,
	}
	for _, it := range f.items {
		if it.typ != itemPresentationRQ {
			return nil, &ProtocolError{Reason: AbortUnrecognizedParameter, Err: fmt.Errorf("decode A-ASSOCIATE-RQ: item type 0x%02x: %w", it.typ, ErrMalformedPDU)}
		}
		if len(it.value) < 4 {
			return nil, malformed(TypeAssociateRQ, "presentation context length %d", len(it.value))
		}
		pc := PresentationContextRQ{ID: it.value[0]}
		subs, err := splitItems(TypeAssociateRQ, it.value[4:])
		if err != nil {
			return nil, err
		}
		abstract := 0
		for _, s := range subs {
			switch s.typ {
			case itemAbstractSyntax:
				abstract++
				pc.AbstractSyntax = trimUID(s.value)
			case itemTransferSyntax:
				pc.TransferSyntaxes = append(pc.TransferSyntaxes, trimUID(s.value))
			default:
				return nil, &ProtocolError{Reason: AbortUnrecognizedParameter, Err: fmt.Errorf("decode A-ASSOCIATE-RQ: presentation context sub-item 0x%02x: %w", s.typ, ErrMalformedPDU)}
			}
		}
		if abstract != 1 || len(pc.TransferSyntaxes) == 0 {
			return nil, malformed(TypeAssociateRQ, "presentation context %d: %d abstract syntaxes, %d transfer syntaxes", pc.ID, abstract, len(pc.TransferSyntaxes))
		}
		p.PresentationContexts = append(p.PresentationContexts, pc)
	}
	if len(p.PresentationContexts) == 0 {
		return nil, malformed(TypeAssociateRQ, "no presentation context")
	}
	if !f.hasUserInfo {
		return nil, malformed(TypeAssociateRQ, "no user information item")
	}
	return p, nil
}

func decodeAssociateAC(body []byte) (*AssociateAC, error) {
	f, err := decodeAssociateFixed(TypeAssociateAC, body)
	if err != nil {
		return nil, err
	}
	p := &AssociateAC{
		ProtocolVersion:    f.version,
		CalledAE:           f.called,
		CallingAE:          f.calling,
		ApplicationContext: f.appCtx,
		UserInfo:           f.userInfo,
	}
	for _, it := range f.items {
		if it.typ != itemPresentationAC {
			return nil, &ProtocolError{Reason: AbortUnrecognizedParameter, Err: fmt.Errorf("decode A-ASSOCIATE-AC: item type 0x%02x: %w", it.typ, ErrMalformedPDU)}
		}
		if len(it.value) < 4 {
			return nil, malformed(TypeAssociateAC, "presentation context length %d", len(it.value))
		}
		pc := PresentationContextAC{ID: it.value[0], Result: it.value[2]}
		subs, err := splitItems(TypeAssociateAC, it.value[4:])
		if err != nil {
			return nil, err
		}
		for _, s := range subs {
			if s.typ == itemTransferSyntax {
				pc.TransferSyntax = trimUID(s.value)
			}
		}
		p.PresentationContexts = append(p.PresentationContexts, pc)
	}
	return p, nil
}
