package provider

import "net/netip"

// The endpoint table: endpoints by connection id (with generations, so a
// stale id finds nothing), the port table, and what an endpoint holds and
// gives back when it goes (release).

// connKey names a connection as its connector sees it.
type connKey struct {
	peer  netip.Addr
	id    uint32
	token uint64
}

// endpoint is the engine's side of a socket: unbound, bound, listening or
// a connection. It is owned by the poller.
type endpoint struct {
	id       uint32
	state    epState
	released bool    // given back to the table; kept only by stale references
	err      error   // why the endpoint failed; nil otherwise
	sock     *socket // the SPI's socket; nil for a child not yet accepted

	// Segment size: the data one datagram to the peer carries, from the
	// smaller of our link's MTU and the peer's announcement. announced:
	// the peer's announcement was seen (a connector may be established
	// by another frame first, and then uses wire.MinPeerDatagram).
	mss       int
	announced bool

	// Naming.
	lport   uint16
	ownPort bool // the endpoint holds lport in the port table
	raddr   netip.Addr
	rport   uint16
	peerID  uint32
	token   uint64
	key     connKey // a child's entry in engine.children

	// The parts only some endpoints have: a listener's (listen.go), and
	// a connection's while it is set up (handshake.go). parent is the
	// listener of a child not yet accepted, in its half-open list or its
	// backlog.
	ln     *listener
	hs     *handshake
	parent *endpoint

	// ECN (RFC 3168, docs/PROTOCOL.md): ecnOK, both ends announced
	// wire.FlagECN, so our data goes out ECT(0) and our acks carry ceIn,
	// the count of data frames that arrived marked CE (mod 256); lastCE,
	// the latest data frame did.
	ecnOK   bool
	ceIn    uint8
	lastCE  bool
	ceTotal uint64 // CE-marked data frames received, for ConnInfo

	snd  sender       // the send side: see sender.go
	rcv  receiver     // the receive side: see receiver.go
	host connSendHost // the engine, as the sender sees it

	stat connCounters // per-connection figures: see snapshot.go

	// Liveness.
	peer      *peer  // the peer stack this connection belongs to (see peer.go); nil when not a connection
	peerIdx   int    // index in peer.conns
	peerInc   uint64 // the peer's incarnation its handshake announced; 0: none
	peerCheck bool   // a WaitEnd waits to hear from the peer's stack (checkPeer)
	lastHeard int64
	probeAt   int64
	lastErr   error // last error the link reported sending to the peer

	// Scheduling.
	ev       uint8
	changedQ bool
	outQ     bool
	heapIdx  int // -1: not in the timer heap
	wakeAt   int64
}

func (e *engine) newEndpoint() (*endpoint, error) {
	if e.nEps >= e.cfg.MaxConns {
		return nil, ErrMFile
	}
	var idx uint32
	if k := len(e.freeIdx); k > 0 {
		idx = e.freeIdx[k-1]
		e.freeIdx = e.freeIdx[:k-1]
	} else {
		idx = uint32(len(e.eps))
		e.eps = append(e.eps, nil)
		e.gens = append(e.gens, 0)
	}
	e.gens[idx] = (e.gens[idx] + 1) & (1<<(32-idBits) - 1)
	ep := &endpoint{
		id:      uint32(e.gens[idx])<<idBits | (idx + 1),
		heapIdx: -1,
		peerIdx: -1,
	}
	e.eps[idx] = ep
	e.nEps++
	e.st.endpoints.Store(int64(e.nEps))
	return ep, nil
}

func (e *engine) lookup(id uint32) *endpoint {
	idx := id&idMask - 1
	if id&idMask == 0 || int(idx) >= len(e.eps) {
		return nil
	}
	ep := e.eps[idx]
	if ep == nil || ep.id != id {
		return nil
	}
	return ep
}

// release frees everything an endpoint holds and its table slot. The
// endpoint must not be used afterwards.
func (e *engine) release(ep *endpoint) {
	if ep.snd.starved {
		e.starved = removeEndpoint(e.starved, ep)
		ep.snd.starved = false
	}
	if ep.rcv.rwaiting {
		e.rwait = removeEndpoint(e.rwait, ep)
		ep.rcv.rwaiting = false
	}
	e.dropData(ep)
	e.unschedule(ep)
	e.detachPeer(ep)
	if ep.ownPort && e.ports[ep.lport] == ep {
		delete(e.ports, ep.lport)
	}
	ep.ownPort = false
	if ep.key.id != 0 {
		if e.children[ep.key] == ep {
			delete(e.children, ep.key)
		}
		// A child never confirmed needs no quiet period: a late
		// duplicate of its connect opens another half-open child, which
		// the application sees only if the connector answers. So a
		// flood of connects does not fill the quiet table.
		if ep.state != stateHalfOpen {
			e.quietKey(ep.key)
		}
		ep.key = connKey{}
	}
	if p := ep.parent; p != nil {
		if ep.state == stateHalfOpen {
			p.ln.half = removeEndpoint(p.ln.half, ep)
			e.st.halfOpen.Add(-1)
		} else {
			p.ln.backlog = removeEndpoint(p.ln.backlog, ep)
		}
		ep.parent = nil
	}
	idx := ep.id&idMask - 1
	e.eps[idx] = nil
	e.freeIdx = append(e.freeIdx, idx)
	e.nEps--
	e.st.endpoints.Store(int64(e.nEps))
	ep.state = stateClosed
	ep.released = true
	ep.snd.segs, ep.rcv.rq, ep.rcv.ooo, ep.ln, ep.hs = nil, nil, nil, nil, nil
}

// removeEndpoint removes ep from list, keeping the order.
func removeEndpoint(list []*endpoint, ep *endpoint) []*endpoint {
	for i, c := range list {
		if c == ep {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			return list[:len(list)-1]
		}
	}
	return list
}

// quietKey remembers a closed child's key for the dead-peer bound, so a
// late duplicate of its connect request does not open a ghost connection.
func (e *engine) quietKey(k connKey) {
	if len(e.quiet) >= 4*e.cfg.MaxConns {
		for q, until := range e.quiet {
			if until <= e.now {
				delete(e.quiet, q)
			}
		}
	}
	e.quiet[k] = later(e.now, int64(e.cfg.Timeout))
}

// dropData frees every buffer the endpoint holds.
func (e *engine) dropData(ep *endpoint) {
	for i := range ep.snd.slen {
		s := ep.snd.at(i)
		if s.buf != noBuf {
			e.freeBuf(s.buf)
		}
		*s = seg{}
	}
	ep.snd.shead, ep.snd.slen, ep.snd.sent = 0, 0, 0
	e.dropReceived(ep)
	for i := range ep.rcv.ooo {
		e.freeBuf(ep.rcv.ooo[i].buf)
	}
	clear(ep.rcv.ooo)
	ep.rcv.ooo = ep.rcv.ooo[:0]
	ep.rcv.finPending = false
	e.recvCommitted -= ep.rcv.counted
	ep.rcv.need, ep.rcv.counted = 0, 0
	e.sendBeyond -= ep.snd.beyond
	ep.snd.beyond = 0
	ep.snd.winWait = false
	e.wakeReceivers()
}

// dropReceived frees the endpoint's in-order data, unread.
func (e *engine) dropReceived(ep *endpoint) {
	for i := range ep.rcv.rqLen {
		r := ep.rcv.rqAt(i)
		e.freeRseg(ep, r)
		*r = rseg{}
	}
	ep.rcv.rqHead, ep.rcv.rqLen, ep.rcv.rqBytes = 0, 0, 0
}

// releaseHeld gives the link back every buffer it holds for the engine,
// with the data in it, unread: the link is about to close.
func (e *engine) releaseHeld() {
	for _, ep := range e.eps {
		if ep != nil && ep.rcv.held > 0 {
			e.dropReceived(ep)
		}
	}
}

func (e *engine) bind(ep *endpoint, port uint16) error {
	return e.bindFor(ep, port, netip.AddrPort{})
}

// bindFor is bind; an ephemeral port for a connection to peer (valid) is
// one whose flow the engine owns (engineConfig.Owns).
func (e *engine) bindFor(ep *endpoint, port uint16, peer netip.AddrPort) error {
	if ep.state != stateClosed {
		return ErrInvalid
	}
	if port == 0 {
		owns := e.cfg.Owns
		if !peer.IsValid() {
			owns = nil
		}
		start := ephemeralLo + e.rng.IntN(ephemeralHi-ephemeralLo+1)
		for i := range ephemeralHi - ephemeralLo + 1 {
			p := uint16(ephemeralLo + (start-ephemeralLo+i)%(ephemeralHi-ephemeralLo+1))
			if e.ports[p] == nil && (owns == nil || owns(p, peer)) {
				port = p
				break
			}
		}
		if port == 0 {
			return ErrAddrInUse
		}
	} else if e.ports[port] != nil {
		return ErrAddrInUse
	}
	e.ports[port] = ep
	ep.lport = port
	ep.ownPort = true
	ep.state = stateBound
	return nil
}
