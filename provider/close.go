package provider

import (
	"errors"

	"github.com/sdx-project/sdx/internal/wire"
)

// abort is the hard close: a connection sends a reset, a listener resets
// its backlog, and the endpoint's memory and port are freed at once. It
// returns ErrNetDown when the link failed to take the reset.
func (e *engine) abort(ep *endpoint) error {
	var err error
	switch ep.state {
	case StateConnecting, StateEstablished:
		if serr := e.sendCtl(ep, wire.OpReset, wire.ReasonClosed); errors.Is(serr, ErrNetDown) {
			err = serr
		}
	case StateListening:
		for len(ep.backlog)+len(ep.half) > 0 {
			c := ep.backlog
			if len(c) == 0 {
				c = ep.half
			}
			if aerr := e.abort(c[0]); aerr != nil {
				err = aerr
			}
		}
	}
	e.release(ep)
	if ferr := e.flush(); errors.Is(ferr, ErrNetDown) {
		err = ferr
	}
	return err
}

// fail ends a connection with err: its data is discarded, its timers
// stopped, and its operations will fail with err.
func (e *engine) fail(ep *endpoint, err error) {
	if ep.state == StateFailed {
		return
	}
	if ep.halfOpen {
		// Nobody has seen it: it just goes.
		e.release(ep)
		return
	}
	connecting := ep.state == StateConnecting
	ep.state = StateFailed
	ep.err = err
	e.dropData(ep)
	e.unschedule(ep)
	e.detachPeer(ep)
	ep.snd.rtoAt, ep.rcv.ackAt, ep.rcv.ackNow = 0, 0, false
	if connecting {
		e.notify(ep, evConnected)
	}
	e.notify(ep, evFailed|evReadable|evWritable)
}

// onReset takes a reset that passed the token check only if its sequence
// number is where the data we expect next starts (RFC 5961, section 3,
// on sdx's 64-bit offsets, which never wrap): a peer resets at its send
// offset, which is our receive offset once everything it sent arrived.
// A reset further inside the window we granted may be the peer's with
// data still in flight, or a stale or forged one: it is answered with an
// ack (a challenge), and a peer that really closed answers that with a
// reset at exactly the offset the ack names. Anything else is dropped.
func (e *engine) onReset(ep *endpoint, seq uint64) {
	right := max(ep.rcv.lastEdge, ep.rcv.rcvNxt) + 1 // + 1: the offset a disconnect takes
	switch {
	case seq == ep.rcv.rcvNxt:
		e.st.resetsIn.Add(1)
		e.fail(ep, ErrConnReset)
	case seq > ep.rcv.rcvNxt && seq <= right && ep.state == StateEstablished:
		e.st.resetsChallenged.Add(1)
		e.ackSoon(ep, true)
	default:
		e.st.dropOutOfWindow.Add(1)
	}
}
