package provider

import (
	"net/netip"

	"github.com/sdx-project/sdx/internal/wire"
)

func (e *engine) listen(ep *endpoint, backlog int) error {
	switch ep.state {
	case StateBound:
	case StateListening:
	default:
		return ErrInvalid
	}
	ep.backlogMax = min(max(backlog, 1), e.cfg.MaxBacklog)
	ep.state = StateListening
	return nil
}

// accept takes the oldest connection from a listener's backlog, nil when
// there is none.
// Connections that failed while they waited (their connector reset them
// or went silent) are released, not handed out.
func (e *engine) accept(l *endpoint) *endpoint {
	for l.state == StateListening && len(l.backlog) > 0 {
		c := l.backlog[0]
		l.backlog = removeEndpoint(l.backlog, c)
		c.parent = nil
		if c.state == StateFailed {
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
	l.half = removeEndpoint(l.half, c)
	e.st.halfOpen.Add(-1)
	c.halfOpen = false
	if c.synOnce {
		c.snd.rtt.sample(e.now - c.synSent)
	}
	c.synOnce = false
	c.snd.rtt.settle(e.rtoBounds())
	c.snd.rtoAt, c.tries = 0, 0
	l.backlog = append(l.backlog, c)
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
		if c.state == StateEstablished {
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
	case l == nil || l.state != StateListening:
		reason = wire.ReasonNoListener
	case len(l.backlog) >= l.backlogMax+l.acceptWait:
		reason = wire.ReasonBacklogFull
	case !proven && len(l.half) >= l.backlogMax:
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
	c.state = StateEstablished
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
		l.backlog = append(l.backlog, c)
		e.sendCtl(c, wire.OpAccept, wire.ReasonNone)
		e.schedule(c, e.keepaliveAt(c))
		e.notify(l, evIncoming)
		e.heardInc(c.peer, inc, false)
		e.armPeer(c.peer, e.now)
		return
	}
	// Half-open until the connector answers the accept, which is sent
	// again on the retransmission timer, maxAcceptTries times in all.
	c.halfOpen = true
	l.half = append(l.half, c)
	e.st.halfOpen.Add(1)
	e.sendCtl(c, wire.OpAccept, wire.ReasonNone)
	c.tries = 1
	c.synSent, c.synOnce = e.now, true
	c.snd.rtoAt = later(e.now, c.snd.rtt.rto)
	e.schedule(c, c.snd.rtoAt)
}
