package provider

import (
	"errors"
	"math"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
)

// Timers: one heap entry per connection at its earliest deadline, and one
// handler per timer: expiredHalfOpen, expiredDeadPeer, expiredConnect,
// expiredAck, expiredRetransmit, expiredPace and expiredKeepalive. The
// peer stacks' heartbeat timers are in peer.go.

// later is t+d on the engine's nanosecond clock, saturating instead of
// wrapping: a deadline past the end of time never comes, where a wrapped
// one would always be due and spin the timers. Validation keeps the
// durations far below that; this is the backstop.
func later(t, d int64) int64 {
	if d > 0 && t > math.MaxInt64-d {
		return math.MaxInt64
	}
	return t + d
}

// schedule makes sure the endpoint's timers run at t or earlier. Timers
// that move later are not rescheduled: the endpoint wakes early and
// re-arms.
func (e *engine) schedule(ep *endpoint, t int64) {
	t = max(t, e.now+1)
	if ep.heapIdx >= 0 {
		if t >= ep.wakeAt {
			return
		}
		ep.wakeAt = t
		e.timers.Fix(ep.heapIdx)
		return
	}
	ep.wakeAt = t
	e.timers.Push(ep)
}

func (e *engine) unschedule(ep *endpoint) {
	if ep.heapIdx >= 0 {
		e.timers.Remove(ep.heapIdx)
	}
}

// Before and SetIndex make an endpoint a timer of the engine's heap.
func (ep *endpoint) Before(o *endpoint) bool { return ep.wakeAt < o.wakeAt }

func (ep *endpoint) SetIndex(i int) { ep.heapIdx = i }

// nextTimer returns when the earliest timer is due, and false when none is
// armed. While the link sends from lent buffers it is at most reapEvery
// away: nothing wakes a sleeping poller when the kernel is done with them.
func (e *engine) nextTimer() (int64, bool) {
	e.settleTimers()
	var t int64
	ok := e.timers.Len() > 0
	if ok {
		t = e.timers.Min().wakeAt
	}
	if e.ptimers.Len() > 0 && (!ok || e.ptimers.Min().wakeAt < t) {
		t, ok = e.ptimers.Min().wakeAt, true
	}
	if e.pool.nLinked > 0 && (!ok || t > e.now+int64(reapEvery)) {
		t, ok = e.now+int64(reapEvery), true
	}
	return t, ok
}

// reapEvery bounds how long lent buffers the link is done with wait for
// the poller to take them back.
const reapEvery = 200 * time.Microsecond

// runTimers runs the timers that are due.
func (e *engine) runTimers(now int64) bool {
	e.now = now
	fired := false
	for e.timers.Len() > 0 && e.timers.Min().wakeAt <= now {
		ep := e.timers.Pop()
		e.onTimer(ep)
		fired = true
	}
	for e.ptimers.Len() > 0 && e.ptimers.Min().wakeAt <= now {
		p := e.ptimers.Pop()
		e.onPeerTimer(p)
		fired = true
	}
	return fired
}

func (e *engine) keepaliveAt(ep *endpoint) int64 {
	idle := int64(e.cfg.Timeout) / 3
	t := later(ep.lastHeard, idle)
	if ep.probeAt > t {
		t = ep.probeAt
	}
	return min(t, later(ep.lastHeard, int64(e.cfg.Timeout)))
}

// onTimer runs the timers of ep that are due, each with its own handler
// below, and arms the next. A connection has one heap entry, at the
// earliest of its timers (see schedule).
func (e *engine) onTimer(ep *endpoint) {
	now := e.now
	switch ep.state {
	case stateHalfOpen:
		e.expiredHalfOpen(ep)
		return
	case stateConnecting, stateEstablished:
	default:
		return
	}
	if now-ep.lastHeard >= int64(e.cfg.Timeout) {
		e.expiredDeadPeer(ep)
		return
	}
	if ep.state == stateConnecting {
		if now >= ep.snd.rtoAt {
			e.expiredConnect(ep)
		}
		e.schedule(ep, min(ep.snd.rtoAt, later(ep.lastHeard, int64(e.cfg.Timeout))))
		return
	}
	if ep.rcv.ackAt != 0 && now >= ep.rcv.ackAt {
		e.expiredAck(ep)
	}
	if ep.snd.rtoAt != 0 && now >= ep.snd.rtoAt {
		e.expiredRetransmit(ep)
	}
	if ep.snd.paceWait && now >= ep.snd.paceNext-ep.snd.paceSlack() {
		e.expiredPace(ep)
	}
	if now-ep.lastHeard >= int64(e.cfg.Timeout)/3 && now >= ep.probeAt {
		e.expiredKeepalive(ep)
	}
	e.schedule(ep, e.dueAt(ep))
}

// expiredHalfOpen is a half-open child's timer: the accept goes again,
// up to maxAcceptTries times, and then, or when the connector has been
// silent for the dead-peer bound, the child is dropped without a word:
// nobody is at the connect's address, or nobody who answers.
func (e *engine) expiredHalfOpen(ep *endpoint) {
	now := e.now
	if now >= ep.snd.rtoAt && ep.hs.tries >= maxAcceptTries || now-ep.lastHeard >= int64(e.cfg.Timeout) {
		e.st.halfOpenExpired.Add(1)
		e.release(ep)
		return
	}
	if now >= ep.snd.rtoAt {
		e.sendCtl(ep, wire.OpAccept, wire.ReasonNone)
		ep.hs.tries++
		ep.hs.sent(now, false)
		ep.snd.rtt.backoff(e.rtoBounds())
		ep.snd.rtoAt = later(now, ep.snd.rtt.rto)
	}
	e.schedule(ep, min(ep.snd.rtoAt, later(ep.lastHeard, int64(e.cfg.Timeout))))
}

// expiredDeadPeer ends a connection whose peer has been silent for the
// dead-peer bound (Config.Timeout): ETIMEDOUT, also when the link could
// not resolve the peer (EHOSTUNREACH from Send), since no answer is no
// answer. Only our own link being down is reported as such.
func (e *engine) expiredDeadPeer(ep *endpoint) {
	e.st.deadPeers.Add(1)
	err := ErrTimedOut
	switch {
	case errors.Is(e.linkErr, ErrNetDown):
		err = e.linkErr
	case errors.Is(ep.lastErr, ErrNetDown):
		err = ep.lastErr
	}
	if ep.state == stateEstablished {
		e.sendCtl(ep, wire.OpReset, wire.ReasonTimedOut)
	}
	e.fail(ep, err)
}

// expiredConnect repeats an unanswered connect request, with the backed
// off RTO.
func (e *engine) expiredConnect(ep *endpoint) {
	e.sendCtl(ep, wire.OpConnect, wire.ReasonNone)
	ep.hs.sent(e.now, false) // Karn: no sample from a repeated request
	ep.snd.rtt.backoff(e.rtoBounds())
	ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
	e.st.rtoExpiries.Add(1)
	ep.stat.rtoExpiries++
}

// expiredAck sends the delayed ack (Config.AckDelay) no frame of ours
// carried in time.
func (e *engine) expiredAck(ep *endpoint) {
	ep.rcv.ackAt = 0
	e.ackSoon(ep, true)
}

// expiredPace lets the segments pacing held back go (see paceGap).
func (e *engine) expiredPace(ep *endpoint) {
	ep.snd.paceWait = false
	e.queueOutput(ep)
}

// expiredKeepalive probes a peer silent for a third of the dead-peer
// bound, again every sixth of it: its answer keeps the connection.
func (e *engine) expiredKeepalive(ep *endpoint) {
	e.sendCtl(ep, wire.OpProbe, wire.ReasonNone)
	ep.probeAt = later(e.now, int64(e.cfg.Timeout)/6)
}

// dueAt is when the earliest timer of a connection past its handshake is
// due: keepalive, retransmission, delayed ack or pacing.
func (e *engine) dueAt(ep *endpoint) int64 {
	next := e.keepaliveAt(ep)
	if ep.snd.rtoAt != 0 {
		next = min(next, ep.snd.rtoAt)
	}
	if ep.rcv.ackAt != 0 {
		next = min(next, ep.rcv.ackAt)
	}
	if ep.snd.paceWait {
		next = min(next, ep.snd.paceNext-ep.snd.paceSlack())
	}
	return next
}

// settleTimers moves the earliest entries of the timer heap that are
// earlier than anything their connection has due (a delayed ack that a
// data frame carried, a retransmission timer that an ack stopped: schedule
// only ever brings a wake-up forward) to when something is due, so that a
// sleeping poller is not woken for nothing. It looks at a few entries
// only: the ones a sleep would end on.
func (e *engine) settleTimers() {
	for range 4 {
		if e.timers.Len() == 0 {
			return
		}
		ep := e.timers.Min()
		if ep.state != stateEstablished {
			return
		}
		due := max(e.dueAt(ep), e.now+1)
		if due <= ep.wakeAt {
			return
		}
		ep.wakeAt = due
		e.timers.Fix(ep.heapIdx)
	}
}

// rtoBounds are the configured limits of the retransmission timeout.
func (e *engine) rtoBounds() rtoBounds {
	return rtoBounds{initial: int64(e.cfg.InitialRTO), min: int64(e.cfg.MinRTO), max: int64(e.cfg.MaxRTO)}
}

// expiredRetransmit is the retransmission timer, the sender's (see
// sender.expiredRetransmit); it is also the persist timer of a closed
// window and of a confirming connector.
func (e *engine) expiredRetransmit(ep *endpoint) {
	ep.snd.expiredRetransmit(ep.confirming(), ep.lastHeard)
}
