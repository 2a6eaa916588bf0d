// Package frame encodes and decodes the Ethernet / IPv4 / UDP headers that
// carry sdx frames. Encoding writes into a caller's buffer and decoding
// slices it, so neither allocates.
package frame

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Header sizes. sdx sends IPv4 without options and no VLAN tag; it accepts
// both on receive.
const (
	EthLen    = 14
	IPv4Len   = 20
	UDPLen    = 8
	HeaderLen = EthLen + IPv4Len + UDPLen // 42

	etherTypeIPv4 = 0x0800
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
	protoUDP      = 17
	defaultTTL    = 64
)

// Errors from Parse; each names what was wrong with the frame.
var (
	ErrShort    = errors.New("frame: truncated")
	ErrNotIPv4  = errors.New("frame: not IPv4")
	ErrNotUDP   = errors.New("frame: not UDP")
	ErrBadIPv4  = errors.New("frame: bad IPv4 header")
	ErrFragment = errors.New("frame: IPv4 fragment")
)

// Endpoint is one side of a UDP flow on an Ethernet link.
type Endpoint struct {
	MAC  [6]byte
	IP   netip.Addr // IPv4
	Port uint16
}

// The ECN field of the IPv4 header, its two low bits of the TOS byte
// (RFC 3168 section 5).
const (
	NotECT uint8 = 0 // the sender does not take part in ECN
	ECT1   uint8 = 1
	ECT0   uint8 = 2 // ECN-capable transport, the codepoint sdx sends
	CE     uint8 = 3 // congestion experienced: set by a router or qdisc
)

// Flow is the header template of a one-way flow: source and destination,
// and the ECN codepoint its frames carry (NotECT, ECT0, ...; Parse sets it
// from the frame).
type Flow struct {
	Src, Dst Endpoint
	ECN      uint8
}

// Reverse returns the flow in the other direction.
func (f Flow) Reverse() Flow { return Flow{Src: f.Dst, Dst: f.Src} }

// Encode writes the Ethernet, IPv4 and UDP headers for a payload of
// payloadLen bytes into b[:HeaderLen] and returns the full frame length.
// The IPv4 checksum is filled in; the UDP checksum is left zero (optional
// in IPv4; sdx carries its own integrity checks above).
func (f *Flow) Encode(b []byte, payloadLen int, ipID uint16) int {
	_ = b[HeaderLen-1]
	copy(b[0:6], f.Dst.MAC[:])
	copy(b[6:12], f.Src.MAC[:])
	binary.BigEndian.PutUint16(b[12:14], etherTypeIPv4)
	ip := b[EthLen : EthLen+IPv4Len]
	ip[0] = 0x45
	ip[1] = f.ECN & 3 // DSCP 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(IPv4Len+UDPLen+payloadLen))
	binary.BigEndian.PutUint16(ip[4:6], ipID)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ip[8] = defaultTTL
	ip[9] = protoUDP
	ip[10], ip[11] = 0, 0
	src, dst := f.Src.IP.As4(), f.Dst.IP.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], Checksum(ip))
	udp := b[EthLen+IPv4Len : HeaderLen]
	binary.BigEndian.PutUint16(udp[0:2], f.Src.Port)
	binary.BigEndian.PutUint16(udp[2:4], f.Dst.Port)
	binary.BigEndian.PutUint16(udp[4:6], uint16(UDPLen+payloadLen))
	udp[6], udp[7] = 0, 0
	return HeaderLen + payloadLen
}

// Checksum returns the Internet checksum (RFC 1071) of b.
func Checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Parsed is what Parse found in a frame. Payload aliases the frame.
type Parsed struct {
	Flow    Flow
	Payload []byte
}

// Parse decodes a frame's Ethernet (one VLAN tag allowed), IPv4 (options
// allowed, fragments refused) and UDP headers. It checks every length and
// the IPv4 header checksum, and never panics on any input.
func Parse(b []byte, p *Parsed) error {
	_, err := ParseHead(b, len(b), p)
	return err
}

// ParseHead is Parse for the first piece b of a frame of frameLen bytes
// spread over several buffers (a multi-buffer packet): the headers must
// lie in b. It returns the payload's length; p.Payload is its part in b,
// the rest follows in the other pieces.
func ParseHead(b []byte, frameLen int, p *Parsed) (int, error) {
	if len(b) < EthLen || frameLen < len(b) {
		return 0, ErrShort
	}
	copy(p.Flow.Dst.MAC[:], b[0:6])
	copy(p.Flow.Src.MAC[:], b[6:12])
	off, err := ipv4Offset(b)
	if err != nil {
		return 0, err
	}
	if len(b) < off+IPv4Len {
		return 0, ErrShort
	}
	ip := b[off:]
	if ip[0]>>4 != 4 {
		return 0, ErrBadIPv4
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < IPv4Len {
		return 0, ErrBadIPv4
	}
	if len(ip) < ihl {
		return 0, ErrShort
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total < ihl || total > frameLen-off {
		return 0, ErrShort
	}
	if Checksum(ip[:ihl]) != 0 {
		return 0, ErrBadIPv4
	}
	if frag := binary.BigEndian.Uint16(ip[6:8]); frag&0x3fff != 0 {
		return 0, ErrFragment
	}
	if ip[9] != protoUDP {
		return 0, ErrNotUDP
	}
	p.Flow.ECN = ip[1] & 3
	p.Flow.Src.IP = netip.AddrFrom4([4]byte(ip[12:16]))
	p.Flow.Dst.IP = netip.AddrFrom4([4]byte(ip[16:20]))
	udp := ip[ihl:]
	if total-ihl < UDPLen || len(udp) < UDPLen {
		return 0, ErrShort
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < UDPLen || ulen > total-ihl {
		return 0, ErrShort
	}
	p.Flow.Src.Port = binary.BigEndian.Uint16(udp[0:2])
	p.Flow.Dst.Port = binary.BigEndian.Uint16(udp[2:4])
	p.Payload = udp[UDPLen:min(ulen, len(udp))]
	return ulen - UDPLen, nil
}

// ipv4Offset returns where the IPv4 header of an Ethernet frame (b holds
// at least its Ethernet header) starts, after at most one 802.1Q/802.1ad
// tag; ErrNotIPv4 for any other EtherType.
func ipv4Offset(b []byte) (int, error) {
	et := binary.BigEndian.Uint16(b[12:14])
	off := EthLen
	if et == etherTypeVLAN || et == etherTypeQinQ {
		if len(b) < off+4 {
			return 0, ErrShort
		}
		et = binary.BigEndian.Uint16(b[off+2 : off+4])
		off += 4
	}
	if et != etherTypeIPv4 {
		return 0, ErrNotIPv4
	}
	return off, nil
}
