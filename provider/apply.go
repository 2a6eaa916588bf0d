package provider

import "net/netip"

// The poller's side of the SPI: operations applied to their sockets'
// endpoints, progress on engine events (completions of pending sends,
// receives and accepts) and event notifications.

// complete finishes o exactly once: a posted op is returned to the pool
// before its completion is queued; a blocking caller is handed its result.
func (p *Provider) complete(o *op, n int, err error) {
	if o.completed {
		panic("provider: operation completed twice")
	}
	o.completed = true
	o.n, o.err = n, err
	if q := o.cq; q != nil {
		c := Completion{Socket: o.s, Context: o.ctx, Bytes: n, Err: err, Accepted: o.res, Peer: o.peer}
		switch o.kind {
		case opSend:
			c.Verb = VerbSend
		case opRecv:
			c.Verb = VerbRecv
		case opAccept:
			c.Verb = VerbAccept
		case opConnect:
			c.Verb = VerbConnect
		}
		p.ops.put(o)
		p.role.posted.Add(-1)
		q.push(c)
		return
	}
	o.done.Store(true)
	if o.waiting.Load() {
		p.role.yield = true // the goroutine we wake needs a CPU
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
}

// apply carries out a submitted op.
func (p *Provider) apply(o *op) {
	e := p.eng
	switch o.kind {
	case opSocket:
		ep, err := e.newEndpoint()
		if err != nil {
			p.complete(o, 0, err)
			return
		}
		sock := &socket{ep: ep}
		sock.refs.Store(1)
		ep.sock = sock
		s, err := p.allocSlot(sock)
		if err != nil {
			e.release(ep)
			p.complete(o, 0, err)
			return
		}
		o.res = s
		p.complete(o, 0, nil)
		return
	case opClose:
		p.freeSlots = append(p.freeSlots, uint32(o.s.index()))
		p.slots[o.s.index()].sock.CompareAndSwap(o.sock, nil)
		p.nSockets.Add(-1)
		var err error
		if o.arg == 1 {
			err = p.closeSocket(o.sock)
		}
		p.complete(o, 0, err)
		return
	case opCancel:
		p.withdraw(o.target)
		p.complete(o, 0, nil)
		return
	case opSnapshot:
		p.snapshot(o.snap)
		p.complete(o, 0, nil)
		return
	case opPeerGone:
		e.peerGone(o.addr.Addr(), o.ctx)
		p.complete(o, 0, nil)
		return
	case opDup:
		sock := p.resolve(o.s)
		if sock == nil {
			p.complete(o, 0, ErrNotSock)
			return
		}
		// Live under refMu means no close of o.s has dropped its
		// reference yet, so refs >= 1: the duplicate comes first.
		sock.refMu.Lock()
		if p.resolve(o.s) != sock {
			sock.refMu.Unlock()
			p.complete(o, 0, ErrNotSock) // the close came first
			return
		}
		s, err := p.allocSlot(sock)
		if err == nil {
			sock.refs.Add(1)
		}
		sock.refMu.Unlock()
		o.res = s
		p.complete(o, 0, err)
		return
	}
	var sock *socket
	switch o.kind {
	case opSend, opRecv, opAccept, opConnect, opWaitEnd:
		// These belong to the socket their descriptor named when they
		// were issued, not to the descriptor: a close of that descriptor
		// that was not the last leaves them be, whether it came before
		// this or after. Once the last close has begun they are aborted.
		sock = o.sock
		if sock == nil {
			p.complete(o, 0, ErrNotSock) // the descriptor was dead already
			return
		}
		if sock.closing.Load() {
			p.complete(o, 0, ErrAborted)
			return
		}
	default:
		sock = p.resolve(o.s)
		if sock == nil {
			p.complete(o, 0, ErrNotSock)
			return
		}
	}
	ep := sock.ep
	o.sock = sock // a direct verb's cancel finds the op through it
	switch o.kind {
	case opBind:
		if a := o.addr.Addr(); a.IsValid() && !a.IsUnspecified() && a != p.link.LocalAddr() {
			p.complete(o, 0, ErrAddrNotAvail)
			return
		}
		p.complete(o, 0, e.bind(ep, o.addr.Port()))
	case opListen:
		if ep.state == stateClosed {
			p.complete(o, 0, ErrInvalid)
			return
		}
		p.complete(o, 0, e.listen(ep, o.arg))
		if ep.backlogLen() > 0 {
			p.progress(sock, evIncoming)
		}
	case opShutdown:
		p.complete(o, 0, e.shutdown(ep))
	case opGetName:
		if ep.state.hasPort() {
			o.local = netip.AddrPortFrom(p.link.LocalAddr(), ep.lport)
		} else {
			o.local = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		}
		if ep.state.hasPeer() {
			o.peer = netip.AddrPortFrom(ep.raddr, ep.rport)
		}
		p.complete(o, 0, nil)
	case opConnInfo:
		if ep.state != stateEstablished {
			p.complete(o, 0, ErrNotConn)
			return
		}
		o.info = connInfo(ep)
		p.complete(o, 0, nil)
	case opEventSelect:
		if o.evSet != 0 && o.evFn == nil {
			p.complete(o, 0, ErrInvalid)
			return
		}
		sock.evMask, sock.evFn, sock.evDesc = o.evSet, o.evFn, o.s
		sock.readEv, sock.writeEv = false, false
		p.complete(o, 0, nil)
		// Report what is already true.
		switch {
		case ep.backlogLen() > 0:
			p.notify(sock, FDAccept, nil)
		case ep.state == stateEstablished:
			p.notify(sock, FDWrite, nil)
			if e.readable(ep) {
				sock.readEv = true
				p.notify(sock, FDRead, nil)
			}
		}
	case opConnect:
		if sock.connect != nil {
			p.complete(o, 0, ErrAlready)
			return
		}
		if err := e.connect(ep, o.addr); err != nil {
			p.complete(o, 0, err)
			return
		}
		sock.connect = o
	case opAccept:
		if ep.state != stateListening {
			p.complete(o, 0, ErrInvalid)
			return
		}
		sock.accepts.push(o)
		p.progressAccepts(sock)
	case opSend:
		if !ep.state.hasPeer() {
			p.complete(o, 0, ErrNotConn)
			return
		}
		sock.sends.push(o)
		p.progressSends(sock)
	case opRecv:
		if !ep.state.hasPeer() {
			p.complete(o, 0, ErrNotConn)
			return
		}
		sock.recvs.push(o)
		sock.readEv = false
		p.progressRecvs(sock)
	case opWaitEnd:
		switch {
		case !ep.state.hasPeer():
			p.complete(o, 0, ErrNotConn)
		case sock.endWait != nil:
			p.complete(o, 0, ErrAlready)
		default:
			sock.endWait = o
			if End(o.arg)&EndPeerChecked != 0 {
				p.eng.checkPeer(ep) // until the peer is heard from, endOf says not checked
			}
			p.progressEnd(sock)
		}
	default:
		panic("provider: unknown op")
	}
}

// processChanged reacts to what the engine reported about endpoints.
func (p *Provider) processChanged() {
	e := p.eng
	for len(e.changed) > 0 {
		ep := e.changed[0]
		n := copy(e.changed, e.changed[1:])
		e.changed[n] = nil
		e.changed = e.changed[:n]
		ev := ep.ev
		ep.ev, ep.changedQ = 0, false
		if ep.released || ep.sock == nil {
			continue
		}
		p.progress(ep.sock, ev)
	}
}

// progress moves a socket's pending operations forward after events ev
// and posts its notifications.
func (p *Provider) progress(sock *socket, ev uint8) {
	if sock.closing.Load() {
		// Closure has begun: what is pending completes with ErrAborted
		// when the close arrives, nothing completes before it.
		return
	}
	ep := sock.ep
	if ev&evConnected != 0 {
		if o := sock.connect; o != nil {
			sock.connect = nil
			p.complete(o, 0, ep.err)
		}
		p.notify(sock, FDConnect, ep.err)
		if ep.state == stateEstablished {
			p.notify(sock, FDWrite, nil)
		}
	}
	if ev&evIncoming != 0 {
		p.progressAccepts(sock)
		if ep.backlogLen() > 0 {
			p.notify(sock, FDAccept, nil)
		}
	}
	if ev&(evReadable|evConnected) != 0 {
		p.progressRecvs(sock)
		if ev&evReadable != 0 && sock.recvs.n == 0 && (ep.rcv.rqLen > 0 || ep.rcv.eof) && !sock.readEv {
			sock.readEv = true
			p.notify(sock, FDRead, nil)
		}
	}
	if ev&(evWritable|evConnected) != 0 {
		p.progressSends(sock)
		if ev&evWritable != 0 && sock.writeEv && sock.sends.n == 0 && ep.state == stateEstablished {
			sock.writeEv = false
			p.notify(sock, FDWrite, nil)
		}
	}
	p.progressEnd(sock)
	if !sock.closeEv {
		switch {
		case ep.state == stateFailed && ev&evFailed != 0:
			sock.closeEv = true
			if ev&evConnected == 0 { // a failed connect is FD_CONNECT's news
				p.notify(sock, FDClose, ep.err)
			}
		case ep.rcv.eof:
			sock.closeEv = true
			p.notify(sock, FDClose, nil)
		}
	}
}

func (p *Provider) progressAccepts(sock *socket) {
	e := p.eng
	l := sock.ep
	for sock.accepts.n > 0 {
		c := e.accept(l)
		if c == nil {
			break
		}
		o := sock.accepts.pop()
		ns := &socket{ep: c}
		ns.refs.Store(1)
		c.sock = ns
		s, err := p.allocSlot(ns)
		if err != nil {
			c.sock = nil
			e.abort(c)
			p.complete(o, 0, err)
			continue
		}
		o.res = s
		o.peer = netip.AddrPortFrom(c.raddr, c.rport)
		p.complete(o, 0, nil)
	}
	if l.ln != nil {
		l.ln.acceptWait = sock.accepts.n
	}
}

func (p *Provider) progressRecvs(sock *socket) {
	e := p.eng
	ep := sock.ep
	for sock.recvs.n > 0 {
		if ep.state == stateConnecting {
			return
		}
		o := sock.recvs.head
		// What the engine delivered straight into the head's buffer
		// comes first, then what is queued.
		got := takeDirect(ep)
		var n int
		var err error
		if got < len(o.buf) {
			n, err = e.read(ep, o.buf[got:])
		}
		if got > 0 {
			n, err = n+got, nil // an error waits for the next receive
		}
		if n == 0 && err == nil && !ep.rcv.eof {
			ep.rcv.rd = o.buf // the next in-order data goes straight in
			return
		}
		sock.recvs.pop()
		p.complete(o, n, err)
	}
}

// takeDirect takes back the buffer of the receive at the head of the
// socket's queue from the engine and returns how many bytes it delivered
// into it.
func takeDirect(ep *endpoint) int {
	n := ep.rcv.rdN
	ep.rcv.rd, ep.rcv.rdN = nil, 0
	return n
}

func (p *Provider) progressSends(sock *socket) {
	e := p.eng
	ep := sock.ep
	for sock.sends.n > 0 {
		if ep.state == stateConnecting {
			return
		}
		o := sock.sends.head
		n, err := e.write(ep, o.buf[o.progress:])
		o.progress += n
		if err != nil || o.progress == len(o.buf) {
			sock.sends.pop()
			p.complete(o, o.progress, err)
			continue
		}
		sock.writeEv = true
		return
	}
}

// notify posts ev to the socket's EventSelect callback, unless it is not
// selected or the socket is closing.
func (p *Provider) notify(sock *socket, ev Event, err error) {
	if sock.evFn == nil || sock.evMask&ev == 0 || sock.closing.Load() {
		return
	}
	sock.evFn(sock.evDesc, ev, err)
}
