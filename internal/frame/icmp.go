package frame

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

const (
	protoICMP       = 1
	icmpLen         = 8
	icmpUnreach     = 3 // destination unreachable
	icmpPortUnreach = 3 // its code: port unreachable
)

// Errors from ParseUnreach, besides Parse's.
var (
	ErrNotICMP    = errors.New("frame: not ICMP")
	ErrNotUnreach = errors.New("frame: not an ICMP port unreachable")
	ErrBadICMP    = errors.New("frame: bad ICMP checksum")
	ErrBadQuote   = errors.New("frame: quoted datagram is not IPv4/UDP")
)

// Unreach is what ParseUnreach found in an ICMP port unreachable. Quoted
// aliases the frame.
type Unreach struct {
	From, To netip.Addr // the ICMP message's IPv4 source and destination
	// Quote is the datagram that drew the ICMP: its IPv4 addresses and UDP
	// ports. Quoted is as much of its UDP payload as the ICMP carries,
	// at most the UDP length says: RFC 792 guarantees none of it, Linux
	// sends up to 548 bytes of the datagram.
	Quote  Flow
	Quoted []byte
}

// ParseUnreach decodes an ICMP destination unreachable, code port
// unreachable, that quotes an IPv4/UDP datagram: Ethernet (one VLAN tag
// allowed), IPv4 (options allowed, fragments refused, header checksum
// checked), ICMP (checksum checked), then the quoted IPv4 header (version,
// IHL, protocol) and UDP header. It never panics on any input.
func ParseUnreach(b []byte, u *Unreach) error {
	if len(b) < EthLen {
		return ErrShort
	}
	off, err := ipv4Offset(b)
	if err != nil {
		return err
	}
	ip := b[off:]
	if len(ip) < IPv4Len {
		return ErrShort
	}
	if ip[0]>>4 != 4 {
		return ErrBadIPv4
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < IPv4Len {
		return ErrBadIPv4
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if len(ip) < ihl || total < ihl || total > len(ip) {
		return ErrShort
	}
	if Checksum(ip[:ihl]) != 0 {
		return ErrBadIPv4
	}
	if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
		return ErrFragment
	}
	if ip[9] != protoICMP {
		return ErrNotICMP
	}
	u.From = netip.AddrFrom4([4]byte(ip[12:16]))
	u.To = netip.AddrFrom4([4]byte(ip[16:20]))
	icmp := ip[ihl:total]
	if len(icmp) < icmpLen {
		return ErrShort
	}
	if icmp[0] != icmpUnreach || icmp[1] != icmpPortUnreach {
		return ErrNotUnreach
	}
	if Checksum(icmp) != 0 {
		return ErrBadICMP
	}
	q := icmp[icmpLen:]
	if len(q) < IPv4Len+UDPLen {
		return ErrShort
	}
	if q[0]>>4 != 4 || q[9] != protoUDP {
		return ErrBadQuote
	}
	qhl := int(q[0]&0x0f) * 4
	if qhl < IPv4Len {
		return ErrBadQuote
	}
	if len(q) < qhl+UDPLen {
		return ErrShort
	}
	u.Quote.Src.IP = netip.AddrFrom4([4]byte(q[12:16]))
	u.Quote.Dst.IP = netip.AddrFrom4([4]byte(q[16:20]))
	udp := q[qhl:]
	u.Quote.Src.Port = binary.BigEndian.Uint16(udp[0:2])
	u.Quote.Dst.Port = binary.BigEndian.Uint16(udp[2:4])
	u.Quoted = udp[UDPLen:]
	if ulen := int(binary.BigEndian.Uint16(udp[4:6])); ulen < UDPLen {
		return ErrBadQuote
	} else if n := ulen - UDPLen; n < len(u.Quoted) {
		u.Quoted = u.Quoted[:n]
	}
	return nil
}
