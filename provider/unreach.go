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
	inc := ep.peerInc
	e.fail(ep, err)
	if e.cfg.PeerGone != nil {
		e.cfg.PeerGone(peer, inc)
	}
}

// peerGone fails the established connections to peer made with
// incarnation inc (any, when 0): another of the stack's pollers learned
// that the peer's stack is gone (engineConfig.PeerGone). Connections
// still connecting are left to their own connects, which the same ICMP
// answers.
func (e *engine) peerGone(peer netip.Addr, inc uint64) {
	p := e.peers[peer]
	if p == nil {
		return
	}
	e.st.peersGone.Add(1)
	e.failPeer(p, func(c *endpoint) error {
		if c.state.synchronized() && (inc == 0 || c.peerInc == inc || c.peerInc == 0) {
			return ErrConnReset
		}
		return nil
	}, false)
}

// PeerGone resets the established connections to peer's stack made with
// its incarnation inc (any, when 0), as an ICMP port unreachable naming
// one of them would: another provider of the same stack learned that
// the stack at peer is gone (see Config.PeerGone). Connections still
// connecting are left to their connects. Any goroutine but a poller's:
// it waits for this provider's poller.
func (p *Provider) PeerGone(peer netip.Addr, inc uint64) error {
	if !p.enter() {
		return ErrNetDown
	}
	o := p.getOp(opPeerGone, 0)
	o.addr, o.ctx = netip.AddrPortFrom(peer, 0), inc
	p.call(o)
	return p.result(o)
}
