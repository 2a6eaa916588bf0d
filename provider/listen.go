package provider

import (
	"net/netip"

	"github.com/sdx-project/sdx/internal/wire"
)

// Listen and accept: the listener part of an endpoint, the connect
// requests a listener takes (half-open children, the SYN-cookie-like
// retry under a flood, see cookie.go) and the backlog accept takes from.

func (e *engine) listen(ep *endpoint, backlog int) error {
	switch ep.state {
	case stateBound:
	case stateListening:
	default:
		return ErrInvalid
	}
	if ep.ln == nil {
		ep.ln = &listener{}
	}
	ep.ln.backlogMax = min(max(backlog, 1), e.cfg.MaxBacklog)
	ep.state = stateListening
	return nil
}

// accept takes the oldest connection from a listener's backlog, nil when
// there is none.
// Connections that failed while they waited (their connector reset them
// or went silent) are released, not handed out.
func (e *engine) accept(l *endpoint) *endpoint {
	for l.state == stateListening && len(l.ln.backlog) > 0 {
		c := l.ln.backlog[0]
		l.ln.backlog = removeEndpoint(l.ln.backlog, c)
		c.parent = nil
		if c.state == stateFailed {
			e.release(c)
			continue
		}
		return c
	}
	return nil
}

// confirm moves a half-open child to its listener's backlog.
func (e *engine) confirm(c *endpoint) {
	l := c.parent
	l.ln.half = removeEndpoint(l.ln.half, c)
	e.st.halfOpen.Add(-1)
	c.state = stateEstablished
	e.sampleRTT(c)
	c.hs = nil
	c.snd.rtoAt = 0
	l.ln.backlog = append(l.ln.backlog, c)
	e.schedule(c, e.keepaliveAt(c))
	e.notify(l, evIncoming)
	if p := c.peer; p != nil {
		e.heardInc(p, c.peerInc, false)
		e.armPeer(p, e.now)
	}
	// Its window may now open past the half-open one.
	e.ackSoon(c, true)
}

func (e *engine) onConnect(from netip.Addr, h *wire.Header, ann int, inc uint64) {
	key := connKey{peer: from, id: h.SrcConn, token: h.Token}
	if c := e.children[key]; c != nil {
		if c.state.synchronized() {
			e.sendCtl(c, wire.OpAccept, wire.ReasonNone) // our accept was lost
		}
		return
	}
	if until, ok := e.quiet[key]; ok {
		if until > e.now {
			return
		}
		delete(e.quiet, key)
	}
	proven := false
	if h.Seq != 0 {
		// A repeat after our retry. A cookie that does not check (forged,
		// or older than two epochs) makes it a connect without one.
		if proven = e.cookies.check(from, h, e.now); proven {
			e.st.cookiesIn.Add(1)
		} else {
			e.st.dropBadCookie.Add(1)
		}
	}
	l := e.ports[h.DstPort]
	reason := wire.ReasonNone
	switch {
	case l == nil || l.state != stateListening:
		reason = wire.ReasonNoListener
	case len(l.ln.backlog) >= l.ln.backlogMax+l.ln.acceptWait:
		reason = wire.ReasonBacklogFull
	case !proven && len(l.ln.half) >= l.ln.backlogMax:
		// Under a flood: keep nothing, and let the connector prove
		// that it is at its address by echoing a cookie.
		e.st.retriesOut.Add(1)
		e.reply(from, h, wire.OpRetry, wire.ReasonNone, e.cookies.cookie(from, h, e.now))
		return
	}
	var c *endpoint
	if reason == wire.ReasonNone {
		var err error
		if c, err = e.newEndpoint(); err != nil {
			reason = wire.ReasonNoResources
		}
	}
	if reason != wire.ReasonNone {
		e.st.rejectsOut.Add(1)
		e.reply(from, h, wire.OpReject, reason, 0)
		return
	}
	c.mss, c.announced = e.peerMSS(ann), ann > 0
	c.ecnOK = e.ecn != nil && h.Flags&wire.FlagECN != 0
	e.initConn(c)
	c.lport = l.lport
	c.raddr, c.rport = from, h.SrcPort
	c.peerID, c.token = h.SrcConn, h.Token
	c.key = key
	c.snd.sndRight = uint64(h.Window)
	c.lastHeard = e.now
	c.parent = l
	e.children[key] = c
	e.attachPeer(c, inc)
	if proven {
		c.state = stateEstablished
		l.ln.backlog = append(l.ln.backlog, c)
		e.sendCtl(c, wire.OpAccept, wire.ReasonNone)
		e.schedule(c, e.keepaliveAt(c))
		e.notify(l, evIncoming)
		e.heardInc(c.peer, inc, false)
		e.armPeer(c.peer, e.now)
		return
	}
	// Half-open until the connector answers the accept, which is sent
	// again on the retransmission timer, maxAcceptTries times in all.
	c.state = stateHalfOpen
	c.hs = &handshake{tries: 1}
	l.ln.half = append(l.ln.half, c)
	e.st.halfOpen.Add(1)
	e.sendCtl(c, wire.OpAccept, wire.ReasonNone)
	c.hs.sent(e.now, true)
	c.snd.rtoAt = later(e.now, c.snd.rtt.rto)
	e.schedule(c, c.snd.rtoAt)
}

// listener is the part of a listening endpoint that only listeners have.
type listener struct {
	backlog    []*endpoint // children confirmed, waiting for an accept
	backlogMax int         // also the most half-open children
	half       []*endpoint // half-open children: accept sent, the connector not yet heard again
	acceptWait int         // accepts the SPI has pending: they take connections at once
}

// backlogLen is how many connections wait in ep's backlog: 0 when ep
// does not listen.
func (ep *endpoint) backlogLen() int {
	if ep.ln == nil {
		return 0
	}
	return len(ep.ln.backlog)
}
