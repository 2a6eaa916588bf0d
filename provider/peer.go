package provider

import (
	"net/netip"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
)

// A peer is another host's stack, as one unit: every connection to its
// address belongs to it, and they live and die together. The engine
// keeps one per address it has connections to (engine.peers), with:
//
//   - the peer's incarnation, a random number its stack drew when it
//     started and announced in its connects and accepts (0: the peer
//     announced none, so it knows no heartbeat). A peer that answers with
//     another incarnation than its connections were made with has
//     restarted: every one of them fails at once with ECONNRESET
//     (restart);
//   - its liveness: when anything valid was last heard from it, on any of
//     its connections, and when anything was last sent to it. Toward a
//     peer that announced an incarnation, the engine sends a heartbeat
//     (wire.OpHeartbeat) once a heartbeat interval has passed without a
//     frame to it, so an idle peer hears from us a few times a second and
//     a busy one gets nothing extra; after a little more than an interval
//     of silence from the peer it asks for answers (FlagAckReq) every
//     pollEvery; after PeerTimeout of silence the peer is dead and its
//     connections fail with ETIMEDOUT (peerDead).
//
// A peer without an incarnation gets no heartbeat and is never declared
// dead for not answering one: its connections keep the per-connection
// keepalive and dead-peer bound (Timeout), as before heartbeats. An sdx
// from before heartbeats drops one as an unknown opcode, and a stack with
// heartbeats off (engineConfig.PeerTimeout 0) behaves as it does: it
// announces no incarnation and drops heartbeats unanswered.
//
// A heartbeat is named like a frame of one of the peer's established
// connections (the representative): its ids, ports and token, so a
// receiver checks it as it checks any frame, and only a host that knows a
// connection's token can forge one. A stack that restarted knows no such
// connection and answers a heartbeat request for one with its own
// incarnation, the frame's ids and token reflected as for a reset: the
// first answer of a restarted peer ends every connection to its former
// incarnation.
//
// Owned by the poller, like the engine.
type peer struct {
	addr  netip.Addr
	inc   uint64      // the peer's incarnation; 0: unknown (it sends no heartbeat)
	conns []*endpoint // connections to addr (endpoint.peerIdx is the index)

	lastHeard int64 // anything valid from the peer, on any connection
	lastSent  int64 // anything sent to the peer
	pollAt    int64 // next heartbeat asking for an answer, while the peer is silent
	askNow    bool  // ask for an answer at once: a frame claimed another incarnation
	askedAt   int64 // when checkPeer last asked
	firstAsk  int64 // the first answer-requesting heartbeat since the peer was last heard
	asks      int   // how many since then
	checking  bool  // some connection's peerCheck is set

	heapIdx int // -1: not in engine.ptimers
	wakeAt  int64
}

// Before and SetIndex make a peer a timer of the engine's peer heap.
func (p *peer) Before(o *peer) bool { return p.wakeAt < o.wakeAt }
func (p *peer) SetIndex(i int)      { p.heapIdx = i }

// Heartbeat timing, from PeerTimeout (D): a heartbeat after an interval
// of 5D/18 without a frame to the peer; after that interval and D/16 more
// of silence from the peer, a heartbeat asking for an answer every D/20;
// dead after D, once minAsks of those went unanswered. At the default D
// of 800 ms: 222 ms (4.5 heartbeats a
// second each way while idle), 272 ms, 40 ms.
func (e *engine) hbInterval() int64  { return int64(e.cfg.PeerTimeout) * 5 / 18 }
func (e *engine) hbSuspect() int64   { return e.hbInterval() + int64(e.cfg.PeerTimeout)/16 }
func (e *engine) hbPollEvery() int64 { return int64(e.cfg.PeerTimeout) / 20 }

// minAsks is how many answer-requesting heartbeats a silent peer leaves
// unanswered before it is dead.
const minAsks = 3

func (e *engine) heartbeatsOn() bool { return e.cfg.PeerTimeout > 0 }

// attachPeer makes ep, whose raddr is set, one of its peer's connections.
// inc is the incarnation its handshake announced (0: none or not yet).
func (e *engine) attachPeer(ep *endpoint, inc uint64) {
	if ep.peer != nil {
		return
	}
	p := e.peers[ep.raddr]
	if p == nil {
		p = &peer{addr: ep.raddr, heapIdx: -1, lastHeard: e.now, lastSent: e.now}
		e.peers[ep.raddr] = p
	}
	ep.peer = p
	ep.peerIdx = len(p.conns)
	ep.peerInc = inc
	p.conns = append(p.conns, ep)
}

// detachPeer takes ep out of its peer's connections; a peer left with
// none is forgotten.
func (e *engine) detachPeer(ep *endpoint) {
	p := ep.peer
	if p == nil {
		return
	}
	last := len(p.conns) - 1
	moved := p.conns[last]
	p.conns[ep.peerIdx] = moved
	moved.peerIdx = ep.peerIdx
	p.conns[last] = nil
	p.conns = p.conns[:last]
	ep.peer, ep.peerIdx = nil, -1
	if len(p.conns) == 0 {
		if p.heapIdx >= 0 {
			e.ptimers.Remove(p.heapIdx)
		}
		if e.peers[p.addr] == p {
			delete(e.peers, p.addr)
		}
	}
}

// heardInc takes inc, the incarnation a frame of the peer carried. proven:
// the frame carried the token of a connection we made (an accept to our
// connect, a heartbeat naming one of our connections), so the peer's
// stack really sent it. A proven new incarnation means the peer
// restarted; one from a frame anyone could send (a connect, or the
// confirmation of our accept to it) only makes us ask the peer at once,
// by a heartbeat over a connection of the incarnation we know.
func (e *engine) heardInc(p *peer, inc uint64, proven bool) {
	switch {
	case inc == 0 || p.inc == inc:
	case p.inc == 0:
		p.inc = inc
		e.armPeer(p, e.now)
	case proven:
		e.restart(p, inc)
	default:
		p.askNow = true
		e.armPeer(p, e.now)
	}
}

// restart ends every connection to an earlier incarnation of the peer: it
// answered as inc, and its stack knows none of them.
func (e *engine) restart(p *peer, inc uint64) {
	p.inc = inc
	e.st.peerRestarts.Add(1)
	e.failPeer(p, func(c *endpoint) error {
		if c.peerInc != 0 && c.peerInc != inc {
			return ErrConnReset
		}
		return nil
	}, false)
	if len(p.conns) > 0 {
		e.armPeer(p, e.now)
	}
}

// failPeer fails every connection of p that errFor gives an error for,
// sending each a reset first when reset is set. The peer may be forgotten
// once it returns.
func (e *engine) failPeer(p *peer, errFor func(*endpoint) error, reset bool) {
	list := append(e.peerScratch[:0], p.conns...)
	for _, c := range list {
		err := errFor(c)
		if err == nil || !c.state.isConnection() {
			continue
		}
		if reset && c.state.synchronized() {
			e.st.deadPeers.Add(1)
			e.sendCtl(c, wire.OpReset, wire.ReasonTimedOut)
		}
		e.fail(c, err)
	}
	clear(list)
	e.peerScratch = list[:0]
}

// armPeer makes sure the peer's timer runs at t or earlier.
func (e *engine) armPeer(p *peer, t int64) {
	if !e.heartbeatsOn() || p.inc == 0 {
		return
	}
	t = max(t, e.now+1)
	if p.heapIdx >= 0 {
		if t < p.wakeAt {
			p.wakeAt = t
			e.ptimers.Fix(p.heapIdx)
		}
		return
	}
	p.wakeAt = t
	e.ptimers.Push(p)
}

// representative is the connection a heartbeat to p is named after: an
// established one made with the peer's current incarnation; nil if none.
func (p *peer) representative() *endpoint {
	for _, c := range p.conns {
		if c.state == stateEstablished && c.peerInc == p.inc && c.peerID != 0 {
			return c
		}
	}
	return nil
}

// onPeerTimer is the peer's heartbeat timer: dead, ask, or say we live.
// It stops when the peer has no established connection of its current
// incarnation; establishing one arms it again.
func (e *engine) onPeerTimer(p *peer) {
	now := e.now
	if !e.heartbeatsOn() || p.inc == 0 {
		return
	}
	rep := p.representative()
	if rep == nil {
		return
	}
	silent := now - p.lastHeard
	if p.firstAsk < p.lastHeard {
		p.firstAsk, p.asks = 0, 0 // heard since: a new silence
	}
	// Dead after PeerTimeout of silence, but only once the peer has had
	// its chance: minAsks requests for an answer over two poll intervals.
	// A poller that did not run for a while (a stalled process) sent
	// none meanwhile, and asks before it judges.
	if silent >= int64(e.cfg.PeerTimeout) && p.asks >= minAsks && now-p.firstAsk >= 2*e.hbPollEvery() {
		if e.rxFull {
			// More input may wait in the link: read it before deciding.
			e.armPeer(p, now+1)
			return
		}
		e.st.peersDead.Add(1)
		inc := p.inc
		e.failPeer(p, func(c *endpoint) error {
			if c.state.synchronized() && (c.peerInc == inc || c.peerInc == 0) {
				return ErrTimedOut
			}
			return nil
		}, true)
		if len(p.conns) > 0 {
			// Connections still connecting: their own timers decide.
			p.lastHeard = now
			e.armPeer(p, later(now, e.hbInterval()))
		}
		return
	}
	suspect := silent >= e.hbSuspect()
	switch {
	case p.askNow || suspect && now >= p.pollAt:
		e.sendHeartbeat(p, rep, wire.FlagAckReq)
		if p.asks == 0 {
			p.firstAsk = now
		}
		p.asks++
		p.askNow = false
		p.pollAt = later(now, e.hbPollEvery())
	case now-p.lastSent >= e.hbInterval():
		e.sendHeartbeat(p, rep, 0)
	}
	next := min(later(p.lastSent, e.hbInterval()), max(later(p.lastHeard, int64(e.cfg.PeerTimeout)), later(p.firstAsk, 2*e.hbPollEvery())))
	if suspect {
		next = min(next, p.pollAt)
	} else {
		next = min(next, later(p.lastHeard, e.hbSuspect()))
	}
	e.armPeer(p, next)
}

// sendHeartbeat sends a heartbeat to p named after its connection c.
func (e *engine) sendHeartbeat(p *peer, c *endpoint, flags uint8) {
	h := &e.hdr
	*h = wire.Header{
		Op:      wire.OpHeartbeat,
		Flags:   flags,
		SrcPort: c.lport,
		DstPort: c.rport,
		SrcConn: c.id,
		DstConn: c.peerID,
		Token:   c.token,
		Seq:     e.inc,
		Ack:     p.inc,
	}
	n := h.Put(e.ctl, 0)
	e.st.heartbeatsOut.Add(1)
	e.sendRaw(c, p.addr, e.ctl[:n])
}

// onHeartbeat takes a heartbeat from the address from.
func (e *engine) onHeartbeat(from netip.Addr, h *wire.Header) {
	if !e.heartbeatsOn() {
		// A stack without heartbeats announces no incarnation and takes
		// a heartbeat as an sdx before them did: an unknown opcode.
		e.st.dropMalformed.Add(1)
		return
	}
	e.st.heartbeatsIn.Add(1)
	ep := e.lookup(h.DstConn)
	if ep == nil || !ep.state.isConnection() {
		e.st.dropUnknownConn.Add(1)
		if h.Flags&wire.FlagAnswer == 0 {
			// A heartbeat for a connection we do not have: its sender
			// knows an earlier incarnation of ours (or the connection is
			// gone). Answer with ours, the frame's ids and token
			// reflected, so its sender takes the answer.
			r := &e.hdr
			*r = wire.Header{
				Op: wire.OpHeartbeat, Flags: wire.FlagAnswer, Reason: wire.ReasonUnknownConn,
				SrcPort: h.DstPort, DstPort: h.SrcPort,
				SrcConn: h.DstConn, DstConn: h.SrcConn,
				Token: h.Token,
				Seq:   e.inc, Ack: h.Seq,
			}
			n := r.Put(e.ctl, 0)
			e.st.heartbeatsOut.Add(1)
			e.sendRaw(nil, from, e.ctl[:n])
		}
		return
	}
	if from != ep.raddr || h.Token != ep.token || h.SrcPort != ep.rport || h.DstPort != ep.lport ||
		!ep.state.synchronized() || h.SrcConn != ep.peerID {
		e.st.dropBadToken.Add(1)
		return
	}
	p := ep.peer
	if p == nil {
		return
	}
	p.lastHeard = e.now
	if p.checking {
		e.peerHeard(p)
	}
	// Only a stack that knows this connection's token sent it: the
	// incarnation it names is the peer's.
	if h.Seq != 0 && p.inc != 0 && h.Seq != p.inc {
		e.heardInc(p, h.Seq, true)
		return
	}
	e.heardInc(p, h.Seq, true)
	if h.Flags&(wire.FlagAckReq|wire.FlagAnswer) == wire.FlagAckReq {
		e.sendHeartbeat(p, ep, wire.FlagAnswer)
	}
}

// peerFresh is how recently a peer's stack must have been heard from for
// a check (checkPeer) to take it as alive without asking it.
// checkPeer's answer is in endOf: EndPeerChecked while ep.peerCheck is
// clear.
const peerFresh = int64(2 * time.Millisecond)

// checkPeer is a health check of ep's peer stack, for a WaitEnd that
// wants EndPeerChecked. It does nothing when there is nothing to ask (the
// peer was heard from within peerFresh, or it has no heartbeat, or ep is
// no established connection); otherwise it asks the peer for an answer
// (a heartbeat, at most once per peerFresh) and marks ep, which is
// notified (evPeerHeard) when anything of the peer's arrives. A peer
// that restarted answers with its new incarnation, which fails ep; one
// whose stack is gone draws a port unreachable, which does too.
func (e *engine) checkPeer(ep *endpoint) {
	p := ep.peer
	if p == nil || ep.state != stateEstablished || !e.heartbeatsOn() || p.inc == 0 || e.now-p.lastHeard < peerFresh {
		return
	}
	rep := p.representative()
	if rep == nil {
		return
	}
	if e.now-p.askedAt >= peerFresh || p.askedAt == 0 {
		p.askedAt = e.now
		e.sendHeartbeat(p, rep, wire.FlagAckReq)
	}
	ep.peerCheck = true
	p.checking = true
}

// peerHeard tells the checks waiting on p that it was heard from.
func (e *engine) peerHeard(p *peer) {
	p.checking = false
	for _, c := range p.conns {
		if c.peerCheck {
			c.peerCheck = false
			e.notify(c, evPeerHeard)
		}
	}
}
