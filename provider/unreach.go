package provider

import (
	"encoding/binary"
	"net/netip"

	"github.com/sdx-project/sdx/internal/wire"
)

// quotedLen is how much of our sdx header an ICMP error must quote to name
// a connection: version to token (offsets 0 to 31). Linux quotes up to 548
// bytes of the datagram, so the whole fixed header and more; RFC 792
// promises only the 8 bytes of the UDP header, and a quote that short names
// nothing. The checksum is not checked: the quote may be cut short.
const quotedLen = 32

// unreachable handles an ICMP port unreachable from peer's host quoting q,
// a datagram we sent it (from the sdx header on). When q names a live
// connection to peer, with our id (src conn), the peer's id (dst conn; 0 in
// a connect request), both ports and the token, the peer has no stack on
// its sdx port any more, and every connection to the peer's address fails
// at once: ErrPortUnreach (which matches ECONNREFUSED) while it connects,
// ECONNRESET once established. Anything else is counted
// and dropped: without the token, a forged ICMP cannot kill a connection
// any more than a forged reset can.
func (e *engine) unreachable(peer netip.Addr, q []byte) {
	if len(q) < quotedLen || q[0] != wire.Version {
		e.st.dropUnreach.Add(1)
		return
	}
	op := wire.Opcode(q[1])
	srcPort := binary.BigEndian.Uint16(q[8:])
	dstPort := binary.BigEndian.Uint16(q[10:])
	srcConn := binary.BigEndian.Uint32(q[12:])
	dstConn := binary.BigEndian.Uint32(q[16:])
	token := binary.BigEndian.Uint64(q[24:])
	ep := e.lookup(srcConn)
	if ep == nil || !ep.state.isConnection() || peer != ep.raddr || token != ep.token ||
		srcPort != ep.lport || dstPort != ep.rport {
		e.st.dropUnreach.Add(1)
		return
	}
	err := ErrConnReset
	if ep.state == stateConnecting {
		if op != wire.OpConnect || dstConn != 0 {
			e.st.dropUnreach.Add(1)
			return
		}
		err = ErrPortUnreach
	} else if dstConn != ep.peerID {
		e.st.dropUnreach.Add(1)
		return
	}
	e.st.unreachIn.Add(1)
	// The peer's stack is gone, not just this connection: every
	// connection to its address ends now, not one per ICMP the peer's
	// kernel lets through its rate limit.
	if p := ep.peer; p != nil {
		e.failPeer(p, func(c *endpoint) error {
			if c.state == stateConnecting {
				return ErrPortUnreach
			}
			return ErrConnReset
		}, false)
	}
	e.fail(ep, err)
}
