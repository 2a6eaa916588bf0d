package provider

import (
	"errors"
	"os"
	"sync/atomic"
	"time"
)

// The direct verbs are the blocking verbs a stream API is built on:
// RecvWait, SendWait and WaitEnd block on one socket with a deadline, and
// a Waiter lets another goroutine make them return early (a new deadline,
// a close) without losing anything. The caller's goroutine takes the
// poller role while it waits, when the role is free, exactly as Send and
// Recv do: a request-response exchange then has no hand-off between
// goroutines, and the data is copied once, between the caller's slice and
// the provider's buffers.

// Waiter interrupts the direct verb that one goroutine is blocked in. A
// Wake that comes before the verb starts interrupts it as soon as it does,
// so a caller that changes its state, then wakes, is never missed by a
// waiter that checked the state before the change. Wake may be called
// from any goroutine; the verbs using one Waiter must not overlap.
type Waiter struct {
	p     *Provider
	woken atomic.Bool
	ch    chan struct{} // cap 1: wakes a parked verb
}

// NewWaiter returns a Waiter for the direct verbs of p.
func (p *Provider) NewWaiter() *Waiter { return &Waiter{p: p, ch: make(chan struct{}, 1)} }

// Wake makes the current (or next) direct verb using w return
// ErrInterrupted, unless its operation completes first.
func (w *Waiter) Wake() {
	w.woken.Store(true)
	select {
	case w.ch <- struct{}{}:
	default:
	}
	w.p.kick() // a holder sleeping in the link looks again
}

// take consumes a pending wake.
func (w *Waiter) take() bool {
	if !w.woken.Swap(false) {
		return false
	}
	select {
	case <-w.ch:
	default:
	}
	return true
}

// End says how a connection's end stands, for WaitEnd.
type End uint8

const (
	EndPeerFin  End = 1 << iota // the peer's disconnect arrived (all its data was received)
	EndFinAcked                 // our disconnect was acknowledged: the peer has all our data
	EndReadable                 // received data waits to be read
	EndFailed                   // the connection failed (reset, time-out): nothing more will come
	// EndPeerChecked, wanted, makes WaitEnd a health check of the peer's
	// stack: unless it was heard from within the last 2ms (or takes no
	// heartbeat), the provider asks it for an answer (a heartbeat), and
	// the wait ends when anything of the peer's arrives. A peer that
	// restarted answers as a new incarnation, and the connection fails
	// (EndFailed); one whose stack is gone draws an ICMP port
	// unreachable, which fails it too.
	EndPeerChecked
)

// RecvWait receives into b (len(b) > 0) like Recv, until deadline (zero:
// none) or until w is woken (w may be nil). On a deadline it returns 0 and
// os.ErrDeadlineExceeded, on a wake 0 and ErrInterrupted; in both cases no
// data was taken, and it is returned by the next receive.
func (p *Provider) RecvWait(s Socket, b []byte, deadline time.Time, w *Waiter) (int, error) {
	if len(b) == 0 {
		return 0, ErrInvalid
	}
	return p.direct(opRecv, s, b, 0, deadline, w)
}

// SendWait sends all of b like Send, until deadline (zero: none) or until
// w is woken (w may be nil). It returns how many bytes went into the send
// buffer: len(b) with a nil error, or fewer with os.ErrDeadlineExceeded or
// ErrInterrupted; what it returns as taken is sent, the rest is not.
func (p *Provider) SendWait(s Socket, b []byte, deadline time.Time, w *Waiter) (int, error) {
	return p.direct(opSend, s, b, 0, deadline, w)
}

// WaitEnd blocks until the connection's end has one of the conditions of
// want, or has failed, and returns where it stands; on a deadline or a
// wake it returns that with os.ErrDeadlineExceeded or ErrInterrupted.
// It is how a graceful close waits for the peer without polling.
func (p *Provider) WaitEnd(s Socket, want End, deadline time.Time, w *Waiter) (End, error) {
	n, err := p.direct(opWaitEnd, s, nil, int(want), deadline, w)
	return End(n), err
}

// direct runs a direct verb: the op is applied by the caller when it can
// take the poller role (else submitted), then waited for until deadline or
// a wake; an op that did not complete by then is withdrawn by opCancel,
// which completes it with what it had done.
func (p *Provider) direct(kind opKind, s Socket, buf []byte, arg int, deadline time.Time, w *Waiter) (int, error) {
	if !p.enter() {
		return 0, ErrNotSock
	}
	if w != nil && w.take() {
		p.leave()
		return 0, ErrInterrupted
	}
	o := p.ops.get()
	if o == nil {
		p.leave()
		return 0, ErrNoBufs
	}
	o.kind, o.s, o.buf, o.arg = kind, s, buf, arg
	o.sock = p.liveSock(s)
	o.intr = w
	var dl int64
	if !deadline.IsZero() {
		dl = max(p.nanotime()+int64(time.Until(deadline)), 1)
	}
	p.runOp(o, dl)
	o.intr = nil
	if !o.done.Load() {
		// Deadline or wake: withdraw the op. If it completes meanwhile,
		// its result stands (and a wake stays for the next call).
		reason := os.ErrDeadlineExceeded
		if w != nil && w.take() {
			reason = ErrInterrupted
		}
		p.cancel(o)
		if o.err != errWithdrawn && reason == ErrInterrupted {
			w.woken.Store(true)
		}
		if o.err == errWithdrawn {
			o.err = reason
		}
	}
	n, err := o.n, o.err
	p.result(o)
	return n, err
}

// errWithdrawn completes an op that opCancel took back; direct turns it
// into the reason the caller stopped waiting.
var errWithdrawn = errors.New("provider: operation withdrawn")

// cancel withdraws the pending op t and returns once t has completed,
// either by the cancel or by its own outcome.
func (p *Provider) cancel(t *op) {
	if !p.enter() {
		// Cleanup has begun: it aborts every pending op, t included.
		p.await(t, 0)
		return
	}
	o := p.getOp(opCancel, t.s)
	o.target = t
	p.call(o)
	p.result(o)
	if !t.ready() {
		p.await(t, 0) // stopping: Cleanup completes it
	}
}

// withdraw carries out opCancel on the poller: t leaves its socket's
// pending list and completes with what it has done so far.
func (p *Provider) withdraw(t *op) {
	if t.completed {
		return
	}
	sock := t.sock
	if sock == nil {
		return // failed when applied: already completed
	}
	var l *opList
	switch t.kind {
	case opRecv:
		l = &sock.recvs
	case opSend:
		l = &sock.sends
	case opWaitEnd:
		if sock.endWait == t {
			sock.endWait = nil
			p.complete(t, 0, errWithdrawn)
		}
		return
	default:
		return
	}
	if t.kind == opRecv && l.head == t && sock.ep != nil {
		// Data the engine delivered into its buffer is the receive's.
		if n := takeDirect(sock.ep); n > 0 {
			l.remove(t)
			p.complete(t, n, nil)
			return
		}
	}
	if l.remove(t) {
		p.complete(t, t.progress, errWithdrawn)
	}
}

// endOf reports where ep's end stands.
func (p *Provider) endOf(ep *endpoint) End {
	var e End
	if ep.rcv.eof {
		e |= EndPeerFin
	}
	if ep.snd.finAcked {
		e |= EndFinAcked
	}
	if ep.rcv.rqLen > 0 {
		e |= EndReadable
	}
	if ep.state == stateFailed {
		e |= EndFailed
	}
	if !ep.peerCheck {
		e |= EndPeerChecked
	}
	return e
}

// progressEnd completes a WaitEnd whose condition holds.
func (p *Provider) progressEnd(sock *socket) {
	o := sock.endWait
	if o == nil {
		return
	}
	if e := p.endOf(sock.ep); e&(End(o.arg)|EndFailed) != 0 {
		sock.endWait = nil
		p.complete(o, int(e), nil)
	}
}
