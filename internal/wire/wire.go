// Package wire is the codec of the sdx header, which follows the UDP
// header of every sdx frame; docs/PROTOCOL.md gives the layout.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
)

// The sdx header follows the UDP header of every sdx frame; docs/PROTOCOL.md
// gives the layout with byte offsets and the reasons for it. All fields are
// big-endian.
//
//	 0  version      u8    Version
//	 1  opcode       u8    Opcode
//	 2  flags        u8    FlagAck, ...
//	 3  nsack        u8    SACK blocks after the fixed header, 0..MaxSACK
//	 4  checksum     u32   CRC-32C of the datagram with this field zero
//	 8  src port     u16   sdx port of the sender's socket
//	10  dst port     u16   sdx port of the receiver's socket
//	12  src conn     u32   sender's connection id
//	16  dst conn     u32   receiver's connection id (0 in a connect request)
//	20  window       u32   receive credit in bytes beyond ack
//	24  token        u64   the connection's random token
//	32  seq          u64   stream offset of the first payload byte
//	40  ack          u64   cumulative ack: next stream offset expected
//	48  payload len  u16   bytes of payload after the header
//	50  reason       u8    Reason, for reject and reset
//	51  ce count     u8    with FlagECN: CE-marked data frames received, mod 256; else zero
//	52  SACK blocks  nsack × (u32 start - ack, u32 length)
const (
	// DefaultUDPPort is the UDP port sdx frames go to unless the link is
	// configured otherwise. All sdx traffic on a link uses this one port;
	// stream ports live in the sdx header.
	DefaultUDPPort = 7359

	Version   = 1
	HeaderLen = 52 // fixed part; a header with n SACK blocks is HeaderLen+8n
	MaxSACK   = 8
	SACKLen   = 8

	// SrcPortOff and DstPortOff are the offsets of the sockets' ports,
	// which a link reads to tell connections apart without decoding.
	SrcPortOff = 8
	DstPortOff = 10
)

// The UDP source ports of sdx frames: each connection sends from its own
// port in [SrcPortMin, SrcPortMin+SrcPorts), the dynamic range (as
// RoCEv2 does), picked by the hash of its flow, so that a NIC's RSS and a
// network's ECMP spread connections over queues and paths while each
// connection keeps one path (no reordering). The destination port stays
// the sdx port. A receiver takes sdx frames from any source port.
const (
	SrcPortMin = 49152
	SrcPorts   = 16384
)

// Ports reads the sockets' ports from the header at the start of b, with
// no other check; ok is false when b is too short to hold them.
func Ports(b []byte) (src, dst uint16, ok bool) {
	if len(b) < DstPortOff+2 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(b[SrcPortOff:]), binary.BigEndian.Uint16(b[DstPortOff:]), true
}

// The payload of connect and accept announces the largest datagram (sdx
// header and data) the sender receives: its link's MTU, a u16. A peer
// that announced nothing is taken to receive MinPeerDatagram. The
// sender's incarnation, a u64, may follow (IncarnationLen bytes more): a
// peer that sends none is one that knows no heartbeat.
const (
	AnnounceLen    = 2
	IncarnationLen = 8
	// MinPeerDatagram is the datagram of a 1280-byte link MTU (IPv6's
	// minimum, the smallest MTU sdx is built for): every sdx link carries
	// it, so a frame no larger is never lost for its size.
	MinPeerDatagram = 1280 - 20 - 8
	// MinAnnounce is the smallest announcement taken: the smallest MTU
	// a provider starts on.
	MinAnnounce = HeaderLen + 64
)

// PutAnnounce writes the announcement of max into b, which must hold
// AnnounceLen bytes, and returns AnnounceLen.
func PutAnnounce(b []byte, max int) int {
	binary.BigEndian.PutUint16(b, uint16(min(max, 65535)))
	return AnnounceLen
}

// PutIncarnation writes inc after the announcement in b, which must hold
// AnnounceLen+IncarnationLen bytes, and returns IncarnationLen.
func PutIncarnation(b []byte, inc uint64) int {
	binary.BigEndian.PutUint64(b[AnnounceLen:], inc)
	return IncarnationLen
}

// Incarnation reads the sender's incarnation from a connect's or
// accept's payload: 0 when it carries none (a peer that knows no
// heartbeat). Bytes after it are reserved and ignored.
func Incarnation(payload []byte) uint64 {
	if len(payload) < AnnounceLen+IncarnationLen {
		return 0
	}
	return binary.BigEndian.Uint64(payload[AnnounceLen:])
}

// Announced reads the announcement in a connect's or accept's payload. It
// returns 0 for none (an empty payload) and false for one below
// MinAnnounce; bytes after the first AnnounceLen are reserved and ignored.
func Announced(payload []byte) (int, bool) {
	switch {
	case len(payload) == 0:
		return 0, true
	case len(payload) < AnnounceLen:
		return 0, false
	}
	n := int(binary.BigEndian.Uint16(payload))
	return n, n >= MinAnnounce
}

// Opcode says what a datagram is.
type Opcode uint8

const (
	OpConnect    Opcode = 1 // connect request: opens a connection to a listening port
	OpAccept     Opcode = 2 // connect accepted: names the acceptor's connection id
	OpReject     Opcode = 3 // connect refused: no listener, backlog full, out of resources
	OpData       Opcode = 4 // stream bytes at seq, with a piggybacked ack
	OpAck        Opcode = 5 // cumulative ack, window and SACK blocks, no data
	OpReset      Opcode = 6 // the connection is gone: the receiver fails its operations with ECONNRESET
	OpProbe      Opcode = 7 // keepalive and window probe: the receiver answers at once with a probe marked FlagAnswer
	OpDisconnect Opcode = 8 // end of the sender's stream at seq (half close)
	OpRetry      Opcode = 9 // answer to a connect under a flood: connect again with the cookie in seq
	// OpHeartbeat is the liveness frame between two stacks, one per peer
	// host, named like a frame of one of their connections: seq = the
	// sender's incarnation, ack = the receiver's as the sender knows it;
	// FlagAckReq asks for an answer, FlagAnswer marks one.
	OpHeartbeat Opcode = 10
	NumOpcodes         = 11
)

var opNames = [NumOpcodes]string{"", "connect", "accept", "reject", "data", "ack", "reset", "probe", "disconnect", "retry", "heartbeat"}

func (o Opcode) String() string {
	if o > 0 && o < NumOpcodes {
		return opNames[o]
	}
	return fmt.Sprintf("Opcode(%d)", uint8(o))
}

// Flags.
const (
	FlagAck    uint8 = 1 << 0 // ack and window are valid
	FlagAnswer uint8 = 1 << 1 // this probe (heartbeat) answers a probe (heartbeat): do not answer it
	FlagAckReq uint8 = 1 << 2 // data: the sender waits for this segment's ack; acknowledge it at once; heartbeat: answer it
	// FlagECN: in a connect or accept, the sender takes part in ECN (it
	// counts the CE marks of what it receives and reacts to the marks
	// echoed to it); in any other frame with FlagAck, CE holds the count.
	// Sent only on a connection both ends announced it on; a peer that
	// never sets it never sees it, nor a CE count.
	FlagECN uint8 = 1 << 3
)

// Reason says why a connect was rejected or a connection reset.
type Reason uint8

const (
	ReasonNone        Reason = 0
	ReasonNoListener  Reason = 1 // nothing listens on the destination port
	ReasonBacklogFull Reason = 2 // the listener's backlog is full
	ReasonNoResources Reason = 3 // the acceptor is out of sockets or memory
	ReasonClosed      Reason = 4 // the socket was closed (hard close)
	ReasonUnknownConn Reason = 5 // no such connection (closed, or never existed)
	ReasonTimedOut    Reason = 6 // the sender gave up on the connection
)

var reasonNames = [...]string{"none", "no listener", "backlog full", "no resources", "closed", "unknown connection", "timed out"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// SACKBlock is a range [Start, End) of stream offsets the receiver holds
// beyond its cumulative ack.
type SACKBlock struct {
	Start, End uint64
}

// Header is a decoded sdx header. The zero value of each field is what an
// opcode that does not use it carries.
type Header struct {
	Op         Opcode
	Flags      uint8
	Reason     Reason
	SrcPort    uint16
	DstPort    uint16
	SrcConn    uint32
	DstConn    uint32
	Window     uint32
	Token      uint64
	Seq        uint64
	Ack        uint64
	PayloadLen uint16
	NSACK      uint8
	// CE is, with FlagECN, how many data frames marked CE (congestion
	// experienced) the sender of this frame has received on the
	// connection, mod 256; zero otherwise.
	CE   uint8
	SACK [MaxSACK]SACKBlock
}

// Len returns the encoded length of the header with its SACK blocks.
func (h *Header) Len() int { return HeaderLen + SACKLen*int(h.NSACK) }

// Errors from Decode. Every one means the datagram is dropped and counted.
var (
	errShort    = errors.New("wire: datagram shorter than its header")
	errVersion  = errors.New("wire: unknown version")
	errOpcode   = errors.New("wire: unknown opcode")
	errLength   = errors.New("wire: length fields disagree with the datagram")
	errReserved = errors.New("wire: CE count without FlagECN")
	errSACK     = errors.New("wire: bad SACK block")
	ErrChecksum = errors.New("wire: bad checksum")
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	zero4      [4]byte // stands in for the checksum field while verifying
)

// Put encodes h into b, whose bytes from h.Len() on already hold
// payloadLen bytes of payload, fills in the checksum over both, and
// returns the datagram length h.Len()+payloadLen. It sets h.PayloadLen.
// b must be at least that long.
func (h *Header) Put(b []byte, payloadLen int) int {
	hl := h.Len()
	n := hl + payloadLen
	b = b[:n]
	h.PayloadLen = uint16(payloadLen)
	b[0] = Version
	b[1] = byte(h.Op)
	b[2] = h.Flags
	b[3] = h.NSACK
	binary.BigEndian.PutUint32(b[4:], 0)
	binary.BigEndian.PutUint16(b[SrcPortOff:], h.SrcPort)
	binary.BigEndian.PutUint16(b[DstPortOff:], h.DstPort)
	binary.BigEndian.PutUint32(b[12:], h.SrcConn)
	binary.BigEndian.PutUint32(b[16:], h.DstConn)
	binary.BigEndian.PutUint32(b[20:], h.Window)
	binary.BigEndian.PutUint64(b[24:], h.Token)
	binary.BigEndian.PutUint64(b[32:], h.Seq)
	binary.BigEndian.PutUint64(b[40:], h.Ack)
	binary.BigEndian.PutUint16(b[48:], h.PayloadLen)
	b[50] = byte(h.Reason)
	b[51] = 0
	if h.Flags&FlagECN != 0 {
		b[51] = h.CE
	}
	for i := range int(h.NSACK) {
		s := &h.SACK[i]
		o := HeaderLen + SACKLen*i
		binary.BigEndian.PutUint32(b[o:], uint32(s.Start-h.Ack))
		binary.BigEndian.PutUint32(b[o+4:], uint32(s.End-s.Start))
	}
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b, castagnoli))
	return n
}

// AppendDatagram appends h and payload, encoded, to dst.
func AppendDatagram(dst []byte, h *Header, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, h.Len())...)
	dst = append(dst, payload...)
	n := h.Put(dst[start:], len(payload))
	return dst[:start+n]
}

// Decode parses the datagram b into h and returns its payload, a subslice
// of b. It checks the version, the opcode, every length and the checksum;
// it never panics and never allocates.
func (h *Header) Decode(b []byte) (payload []byte, err error) {
	return h.decode(b, nil, true)
}

// DecodePieces is Decode for a datagram held in pieces: b, which holds at
// least the whole header, then more. The payload is its part in b, and
// the pieces of more after it.
func (h *Header) DecodePieces(b []byte, more [][]byte) (payload []byte, err error) {
	return h.decode(b, more, true)
}

// decode is DecodePieces with the checksum check optional, so the fuzz
// target can reach the parsing behind it.
func (h *Header) decode(b []byte, more [][]byte, verify bool) (payload []byte, err error) {
	total := len(b)
	for _, m := range more {
		total += len(m)
	}
	if len(b) < HeaderLen {
		return nil, errShort
	}
	if b[0] != Version {
		return nil, errVersion
	}
	op := Opcode(b[1])
	if op == 0 || op >= NumOpcodes {
		return nil, errOpcode
	}
	nsack := int(b[3])
	plen := int(binary.BigEndian.Uint16(b[48:]))
	hl := HeaderLen + SACKLen*nsack
	if nsack > MaxSACK || total != hl+plen || len(b) < hl {
		return nil, errLength
	}
	if b[51] != 0 && b[2]&FlagECN == 0 {
		return nil, errReserved
	}
	sum := crc32.Update(crc32.Update(crc32.Update(0, castagnoli, b[:4]), castagnoli, zero4[:]), castagnoli, b[8:])
	for _, m := range more {
		sum = crc32.Update(sum, castagnoli, m)
	}
	if verify && sum != binary.BigEndian.Uint32(b[4:]) {
		return nil, ErrChecksum
	}
	h.Op = op
	h.Flags = b[2]
	h.NSACK = uint8(nsack)
	h.SrcPort = binary.BigEndian.Uint16(b[SrcPortOff:])
	h.DstPort = binary.BigEndian.Uint16(b[DstPortOff:])
	h.SrcConn = binary.BigEndian.Uint32(b[12:])
	h.DstConn = binary.BigEndian.Uint32(b[16:])
	h.Window = binary.BigEndian.Uint32(b[20:])
	h.Token = binary.BigEndian.Uint64(b[24:])
	h.Seq = binary.BigEndian.Uint64(b[32:])
	h.Ack = binary.BigEndian.Uint64(b[40:])
	h.PayloadLen = uint16(plen)
	h.Reason = Reason(b[50])
	h.CE = b[51]
	for i := range nsack {
		o := HeaderLen + SACKLen*i
		off := binary.BigEndian.Uint32(b[o:])
		n := binary.BigEndian.Uint32(b[o+4:])
		if n == 0 {
			return nil, errSACK
		}
		h.SACK[i].Start = h.Ack + uint64(off)
		h.SACK[i].End = h.SACK[i].Start + uint64(n)
	}
	return b[hl:], nil
}

// DropOpcodes returns a memnet.Faults.Drop filter that drops every datagram
// carrying one of ops, for example only resets.
func DropOpcodes(ops ...Opcode) func(from, to netip.Addr, datagram []byte) bool {
	var set [256]bool
	for _, o := range ops {
		set[o] = true
	}
	return func(_, _ netip.Addr, d []byte) bool { return len(d) > 1 && set[d[1]] }
}
