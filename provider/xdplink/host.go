package xdplink

import (
	"net/netip"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/wire"
)

// unanswerable reports whether a is an address the link neither accepts
// frames from nor sends to: the "this network" block (first octet 0),
// loopback, multicast and everything above it (first octet 224 and up,
// the limited broadcast among them), the network or broadcast
// address of the served subnet (a /31 or /32 has none), or an address of
// the interface. An answer to such a source reaches every host on the
// segment, or ourselves. The steer program drops such sources first (bpf's
// package doc); this check stands on its own, and it also guards sends.
func (l *Link) unanswerable(a netip.Addr) bool {
	if !a.Is4() {
		return true
	}
	b := a.As4()
	if b[0] == 0 || b[0] == 127 || b[0] >= 224 {
		return true
	}
	if bits := l.subnet.Bits(); bits < 31 && l.subnet.Contains(a) {
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		host := v & (1<<(32-bits) - 1)
		if host == 0 || host == 1<<(32-bits)-1 {
			return true
		}
	}
	for _, o := range l.own {
		if a == o {
			return true
		}
	}
	return false
}

// SetUnreachable sets the function Receive hands ICMP port unreachables
// about our frames to (owner only).
func (l *Link) SetUnreachable(fn func(peer netip.Addr, quoted []byte)) { l.unreach = fn }

// unreachable hands an ICMP port unreachable in b to the engine if it is
// one about a frame we sent: to our address, from an address we may
// answer, quoting a datagram from our address and one of our source ports
// (ourSrcPort) to the ICMP's source and sdx port. It reports whether it did; anything else is
// counted and dropped.
func (l *Link) unreachable(b []byte) bool {
	u := &l.icmp
	switch err := frame.ParseUnreach(b, u); {
	case err != nil:
		l.ctr.malformed.bump()
	case u.To != l.local.IP || u.Quote.Src.IP != l.local.IP || u.Quote.Dst.IP != u.From ||
		!l.ourSrcPort(u.Quote.Src.Port) || u.Quote.Dst.Port != l.cfg.Port:
		l.ctr.notOurs.bump()
	case l.unanswerable(u.From):
		l.ctr.spoofed.bump()
	default:
		if l.in != nil {
			// The quote went from our sdx port src to the peer's dst.
			src, dst, _ := wire.Ports(u.Quoted)
			if l.handOver(u.From, src, dst, u.Quoted, nil, 0, true) {
				return true
			}
		}
		l.ctr.unreach.bump()
		if l.unreach != nil {
			l.unreach(u.From, u.Quoted)
		}
		return true
	}
	return false
}

// ourSrcPort reports whether p is a UDP source port this link sends from:
// one of the range (wire.SrcPortMin), or the sdx port itself, which sdx used
// before the range and the steering program also takes.
func (l *Link) ourSrcPort(p uint16) bool {
	return p >= wire.SrcPortMin || p == l.cfg.Port
}
