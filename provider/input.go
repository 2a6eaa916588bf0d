package provider

import (
	"net/netip"

	"github.com/sdx-project/sdx/internal/wire"
)

// Input dispatch: a received datagram is decoded, matched to its
// connection (ids, token, ports, RFC 5961 checks) and handed to the
// handshake, the sender (acks) or the receiver (data).

func (e *engine) input(from netip.Addr, b []byte) { e.inputPieces(from, b, nil) }

// inputPieces is input for a datagram the link holds in pieces: b, which
// holds the whole header, then more (see Link.Receive).
func (e *engine) inputPieces(from netip.Addr, b []byte, more [][]byte) {
	e.st.datagramsIn.Add(1)
	h := &e.rhdr
	payload, err := h.DecodePieces(b, more)
	if err != nil {
		if err == wire.ErrChecksum {
			e.st.dropChecksum.Add(1)
		} else {
			e.st.dropMalformed.Add(1)
		}
		return
	}
	if h.Op == wire.OpHeartbeat {
		e.onHeartbeat(from, h)
		return
	}
	ann, inc := 0, uint64(0)
	if h.Op == wire.OpConnect || h.Op == wire.OpAccept {
		var ok bool
		if ann, ok = wire.Announced(payload); !ok {
			e.st.dropMalformed.Add(1)
			return
		}
		inc = wire.Incarnation(payload)
	}
	if h.Op == wire.OpConnect {
		e.onConnect(from, h, ann, inc)
		return
	}
	ep := e.lookup(h.DstConn)
	if ep == nil && h.Op == wire.OpReset && h.DstConn == 0 {
		// A connector that closed before it learnt our id.
		ep = e.children[connKey{peer: from, id: h.SrcConn, token: h.Token}]
		if ep != nil && ep.state.synchronized() {
			ep.peerID = h.SrcConn
		}
	}
	if ep == nil || !ep.state.isConnection() {
		e.st.dropUnknownConn.Add(1)
		if h.Op != wire.OpReset && h.Op != wire.OpReject && h.Op != wire.OpRetry {
			e.resetUnknown(from, h)
		}
		return
	}
	if from != ep.raddr || h.Token != ep.token || h.SrcPort != ep.rport || h.DstPort != ep.lport ||
		(ep.state.synchronized() && h.SrcConn != ep.peerID) {
		e.st.dropBadToken.Add(1)
		return
	}
	ep.lastHeard = e.now
	if p := ep.peer; p != nil {
		p.lastHeard = e.now
		if p.checking {
			e.peerHeard(p)
		}
	}
	switch h.Op {
	case wire.OpReject:
		if ep.state == stateConnecting {
			e.fail(ep, ErrConnRefused)
		}
		return
	case wire.OpReset:
		e.onReset(ep, h.Seq)
		return
	case wire.OpRetry:
		if ep.state == stateConnecting {
			e.onRetry(ep, h)
		}
		return
	}
	if ep.confirming() && h.Op != wire.OpAccept {
		// The acceptor has our connection: the handshake is over.
		ep.hs = nil
		if ep.snd.sent == 0 && ep.snd.slen == 0 {
			ep.snd.rtoAt = 0
		}
	}
	switch {
	case ep.state == stateHalfOpen:
		// The connector answered our accept: it is at its address.
		e.confirm(ep)
	case ep.state == stateConnecting:
		// Accept, or any valid frame of the acceptor if the accept was lost.
		e.established(ep, h, ann, inc)
	case h.Op == wire.OpAccept:
		// A repeated accept: our answer to it was lost. A probe carries
		// the ack and is answered, so it gets through where pure acks
		// do not.
		ep.rcv.probeAck = true
		e.ackSoon(ep, true)
		if !ep.announced && ann > 0 {
			// Established by another frame of the acceptor's, we used
			// the smallest segments; now we know. Larger segments fit
			// the rings sized for smaller ones.
			ep.mss = max(ep.mss, e.peerMSS(ann))
			ep.announced = true
			ep.snd.cc.setMSS(ep.mss)
		}
		if ep.peerInc == 0 && inc != 0 && ep.peer != nil {
			ep.peerInc = inc
			e.heardInc(ep.peer, inc, true)
			e.armPeer(ep.peer, e.now)
		}
	}
	if h.Flags&wire.FlagAck != 0 {
		ep.snd.onAck(h, ep.ecnOK)
		if ep.state != stateEstablished {
			return
		}
	}
	switch h.Op {
	case wire.OpData:
		if ep.ecnOK {
			e.takeCE(ep)
		}
		e.onData(ep, h.Seq, pieces{p: payload, more: more}, h.Flags&wire.FlagAckReq != 0)
	case wire.OpDisconnect:
		e.onFin(ep, h.Seq)
	case wire.OpProbe:
		e.onProbe(ep, h)
	}
	e.recommit(ep)
}

// takeCE counts a data frame that arrived marked CE. When the marks
// start or stop, the ack goes at once, so the sender hears of them
// within a round trip (RFC 8257 section 3.2 does the same for its ECE
// flag); in between, the count rides on the acks as they come.
func (e *engine) takeCE(ep *endpoint) {
	ce := e.ecn.ReceivedCE()
	if ce {
		ep.ceIn++
		ep.ceTotal++
		e.st.ceIn.Add(1)
	}
	if ce != ep.lastCE {
		ep.lastCE = ce
		ep.rcv.ackNow = true
		e.queueOutput(ep)
	}
}

// resetUnknown answers a frame for a connection we do not have with a
// reset carrying the frame's own ids and token, so its sender accepts it.
func (e *engine) resetUnknown(from netip.Addr, h *wire.Header) {
	e.st.resetsOut.Add(1)
	// The frame's ack is where its sender's receive window starts: the
	// sequence number its sender takes a reset at (see onReset).
	var seq uint64
	if h.Flags&wire.FlagAck != 0 {
		seq = h.Ack
	}
	e.reply(from, h, wire.OpReset, wire.ReasonUnknownConn, seq)
}
