package provider

import (
	"errors"

	"github.com/sdx-project/sdx/internal/wire"
)

// The hard close and how connections end: CloseSocket (the SPI's side:
// drain, complete every pending operation, abort), engine.abort (reset
// out, memory freed), fail (reset in, dead peer) and the RFC 5961 reset
// check.

// abort is the hard close: a connection sends a reset, a listener resets
// its backlog, and the endpoint's memory and port are freed at once. It
// returns ErrNetDown when the link failed to take the reset.
func (e *engine) abort(ep *endpoint) error {
	var err error
	switch ep.state {
	case stateConnecting, stateHalfOpen, stateEstablished:
		if serr := e.sendCtl(ep, wire.OpReset, wire.ReasonClosed); errors.Is(serr, ErrNetDown) {
			err = serr
		}
	case stateListening:
		for len(ep.ln.backlog)+len(ep.ln.half) > 0 {
			c := ep.ln.backlog
			if len(c) == 0 {
				c = ep.ln.half
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
	if ep.state == stateFailed {
		return
	}
	if ep.state == stateHalfOpen {
		// Nobody has seen it: it just goes.
		e.release(ep)
		return
	}
	connecting := ep.state == stateConnecting
	ep.state = stateFailed
	ep.err = err
	e.dropData(ep)
	e.unschedule(ep)
	e.detachPeer(ep)
	ep.hs = nil
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
	case seq > ep.rcv.rcvNxt && seq <= right && ep.state.synchronized():
		e.st.resetsChallenged.Add(1)
		e.ackSoon(ep, true)
	default:
		e.st.dropOutOfWindow.Add(1)
	}
}

// CloseSocket closes the descriptor. When it is the socket's last one,
// the socket is hard-closed: its connection is reset, its port freed, its
// queued data discarded, and every pending operation completes with
// ErrAborted, all before CloseSocket returns. It returns nil, ENOTSOCK for
// a descriptor that is not live, or ENETDOWN when the link failed to take
// the reset; in every case the resources are released. It never blocks
// for the network and never reports "would block" or "in progress".
// A close that is not the last cancels nothing: operations posted through
// s belong to the socket and go on (docs/CLOSE.md, point 3).
func (p *Provider) CloseSocket(s Socket) error {
	if !p.enter() {
		return ErrNotSock
	}
	sl := p.slotOf(s)
	if sl == nil {
		p.leave()
		return ErrNotSock
	}
	sock := sl.sock.Load() // this generation's: the CAS below proves it
	if sock == nil {
		p.leave()
		return ErrNotSock
	}
	w := uint64(s.gen())<<1 | 1
	sock.refMu.Lock()
	if !sl.w.CompareAndSwap(w, w+1) {
		sock.refMu.Unlock()
		p.leave()
		return ErrNotSock
	}
	last := sock.refs.Add(-1) == 0
	if last {
		sock.closing.Store(true)
	}
	sock.refMu.Unlock()
	o := p.getOp(opClose, s)
	o.sock = sock
	if last {
		o.arg = 1
	}
	p.call(o)
	return p.result(o)
}

// closeSocket is the hard close of a socket whose last descriptor is
// gone: the engine resets the connection (or the listener's backlog) and
// frees its buffers and port; then every pending operation completes with
// ErrAborted. It returns ENETDOWN when the link failed to take the reset.
func (p *Provider) closeSocket(sock *socket) error {
	e := p.eng
	ep := sock.ep
	var err error
	if ep != nil {
		// Data the engine put into the buffer of the receive at the head
		// was handed over before the close (closure stops progress, not
		// input): that receive completes with it, as it would have
		// before the close. A hard close discards what is queued, never
		// what a receive already took.
		if got := takeDirect(ep); got > 0 {
			p.complete(sock.recvs.pop(), got, nil)
		}
		ep.sock = nil
		err = e.abort(ep)
		sock.ep = nil
	}
	// Everything tied to the socket is released; now the operations.
	aborted := p.scratch[:0]
	if o := sock.connect; o != nil {
		sock.connect = nil
		aborted = append(aborted, o)
	}
	if o := sock.endWait; o != nil {
		sock.endWait = nil
		aborted = append(aborted, o)
	}
	for _, l := range []*opList{&sock.accepts, &sock.recvs, &sock.sends} {
		for o := l.pop(); o != nil; o = l.pop() {
			aborted = append(aborted, o)
		}
	}
	sock.evFn = nil
	for i, o := range aborted {
		n := 0
		if o.kind == opSend {
			n = o.progress
		}
		p.complete(o, n, ErrAborted)
		aborted[i] = nil
	}
	p.scratch = aborted[:0]
	return err
}
