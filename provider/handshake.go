package provider

import (
	"math"
	"net/netip"

	"github.com/sdx-project/sdx/internal/wire"
)

// The connector's side of the handshake (connect, retry with a cookie,
// established, confirming) and the handshake part a connection has while
// it is set up. The acceptor's side is in listen.go.

// connect starts the handshake to raddr:rport, binding an ephemeral port
// first if needed.
func (e *engine) connect(ep *endpoint, to netip.AddrPort) error {
	switch ep.state {
	case stateClosed:
		if err := e.bindFor(ep, 0, to); err != nil {
			return err
		}
	case stateBound:
		if e.cfg.Owns != nil && !e.cfg.Owns(ep.lport, to) {
			return ErrAddrNotAvail
		}
	case stateConnecting:
		return ErrAlready
	case stateHalfOpen, stateEstablished:
		return ErrIsConn
	default:
		return ErrInvalid
	}
	if !to.Addr().Is4() || to.Port() == 0 || to.Addr().IsUnspecified() {
		return ErrAddrNotAvail
	}
	ep.mss = e.mss // until the accept says otherwise
	e.initConn(ep)
	ep.raddr, ep.rport = to.Addr(), to.Port()
	ep.token = e.rng.Uint64() | 1
	ep.state = stateConnecting
	ep.lastHeard = e.now
	e.attachPeer(ep, 0)
	ep.hs = &handshake{}
	e.sendCtl(ep, wire.OpConnect, wire.ReasonNone)
	ep.hs.sent(e.now, true)
	ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
	e.schedule(ep, ep.snd.rtoAt)
	return nil
}

// initConn gives an endpoint, whose mss is set, its rings and timers.
func (e *engine) initConn(ep *endpoint) {
	e.sizeRings(ep)
	ep.host = connSendHost{e: e, ep: ep}
	ep.snd.attach(&ep.host, sendOpts{buffer: e.cfg.SendBuffer, pacing: e.cfg.Pacing, bounds: e.rtoBounds()}, &e.st, &ep.stat)
	ep.snd.cc.start(ep.mss, ep.ecnOK, e.cfg.Reno)
	if ep.ecnOK {
		e.st.ecnConns.Add(1)
	}
	ep.snd.rtt.start(e.rtoBounds())
	ep.snd.sackKnown = math.MaxUint64
	ep.rcv.lastEdge = 0 // the first frame with a window grants it
}

// sizeRings sizes the segment and receive rings for ep.mss. The rings
// must be empty.
func (e *engine) sizeRings(ep *endpoint) {
	nseg := pow2(e.cfg.SendBuffer/ep.mss + 2)
	if len(ep.snd.segs) != nseg {
		ep.snd.segs = make([]seg, nseg)
	}
	ep.rcv.oooMax = max(16, 2*(e.cfg.RecvBuffer/ep.mss+1))
	if nrq := pow2(e.cfg.RecvBuffer/ep.mss + 2 + ep.rcv.oooMax); len(ep.rcv.rq) != nrq {
		ep.rcv.rq = make([]rseg, nrq)
		ep.rcv.ooo = make([]oseg, 0, ep.rcv.oooMax)
	}
}

// peerMSS is the segment size toward a peer that announced max (0: none):
// the datagram both links carry, less the header.
func (e *engine) peerMSS(max int) int {
	if max == 0 {
		max = wire.MinPeerDatagram
	}
	return min(e.mtu, max) - wire.HeaderLen
}

func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

func (e *engine) established(ep *endpoint, h *wire.Header, ann int, inc uint64) {
	ep.peerID = h.SrcConn
	ep.state = stateEstablished
	if p := ep.peer; p != nil && inc != 0 {
		// The accept carries our token: its incarnation is the peer's.
		ep.peerInc = inc
		e.heardInc(p, inc, true)
		e.armPeer(p, e.now)
	}
	// Nothing is queued yet: the rings may change with the segment size.
	ep.mss, ep.announced = e.peerMSS(ann), ann > 0
	e.sizeRings(ep)
	ep.ecnOK = e.ecn != nil && h.Flags&wire.FlagECN != 0
	ep.snd.cc.start(ep.mss, ep.ecnOK, e.cfg.Reno)
	if ep.ecnOK {
		e.st.ecnConns.Add(1)
	}
	e.sampleRTT(ep)
	e.notify(ep, evConnected|evWritable)
	// The third frame of the handshake: the acceptor hands the
	// connection to its application only once it hears from us. Until
	// the acceptor sends anything but an accept (it answers the
	// confirmation with its window), the retransmission timer repeats
	// the confirmation as a probe: a connector with nothing to send must
	// not leave its acceptor's half-open connection to expire. The
	// handshake part stays until then: see confirming.
	e.ackSoon(ep, true)
	ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
	e.schedule(ep, min(ep.snd.rtoAt, e.keepaliveAt(ep)))
}

// onRetry answers a listener's retry: the connect request goes again at
// once, with the cookie.
func (e *engine) onRetry(ep *endpoint, h *wire.Header) {
	if h.Seq == 0 || h.Seq == ep.hs.cookie {
		return
	}
	ep.hs.cookie = h.Seq
	e.sendCtl(ep, wire.OpConnect, wire.ReasonNone)
	ep.hs.sent(e.now, true)
	ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
	e.schedule(ep, ep.snd.rtoAt)
}

// handshake is the part of a connection that only exists while it is set
// up: a connector's from its connect request until it first hears from
// the acceptor after the accept (confirming, see established), a child's
// while it is half-open (see listen.go).
type handshake struct {
	sentAt int64  // when the connect request, or the accept, last went out
	sample bool   // it went out once: its answer is an RTT sample
	cookie uint64 // a connector's cookie from the listener's retry; 0: none
	tries  int    // accepts a half-open child has sent
}

// sent notes that the handshake's frame went out now: a first
// transmission's answer is an RTT sample, a repeat's is not (Karn).
func (hs *handshake) sent(now int64, first bool) {
	hs.sentAt, hs.sample = now, first
}

// sampleRTT takes the handshake's RTT sample, if its answer is one, and
// settles the RTO.
func (e *engine) sampleRTT(ep *endpoint) {
	if hs := ep.hs; hs != nil && hs.sample {
		ep.snd.rtt.sample(e.now - hs.sentAt)
		hs.sample = false
	}
	ep.snd.rtt.settle(e.rtoBounds())
}

// confirming reports whether ep is a connector not yet heard from since
// the accept: its answer to the accept may be lost.
func (ep *endpoint) confirming() bool { return ep.hs != nil && ep.state == stateEstablished }
