package provider

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Socket is a descriptor: a value naming one reference to a socket. It
// carries the index of its slot in the descriptor table and the slot's
// generation, so a descriptor that was closed never reaches the socket
// that reuses its slot: it fails with ENOTSOCK. The zero Socket is never
// valid.
type Socket uint64

func (s Socket) index() int  { return int(uint32(s)) - 1 }
func (s Socket) gen() uint32 { return uint32(s >> 32) }

func (s Socket) String() string { return fmt.Sprintf("sock#%d.%d", uint32(s), s.gen()) }

// slot is one entry of the descriptor table. w is gen<<1 | live; a
// descriptor is valid while w == its gen<<1|1. Closing a descriptor moves w
// to (gen+1)<<1 with one compare-and-swap, so exactly one close wins and
// every later use fails.
type slot struct {
	w    atomic.Uint64
	sock atomic.Pointer[socket]
}

// socket is what descriptors refer to. refs and closing are atomic; the
// rest belongs to the poller role.
type socket struct {
	// refMu orders Duplicate's new reference (taken on the poller)
	// against CloseSocket's compare-and-swap and release (in the
	// caller), so that of a Duplicate and the last close racing, exactly
	// one comes first: see Duplicate.
	refMu   sync.Mutex
	refs    atomic.Int32 // live descriptors; changes under refMu (Cleanup: alone)
	closing atomic.Bool  // the last descriptor is being closed: no notifications

	ep *endpoint

	sends, recvs, accepts opList
	connect               *op
	endWait               *op // a pending WaitEnd

	evMask  Event
	evFn    func(Socket, Event, error)
	evDesc  Socket
	readEv  bool // FD_READ posted and not yet re-enabled by a receive
	writeEv bool // a send waited for room: post FD_WRITE when there is some
	closeEv bool // FD_CLOSE posted
}

// Event is a set of network events for EventSelect; the values are
// Winsock's.
type Event uint16

const (
	FDRead    Event = 0x01 // data (or end of stream) to receive
	FDWrite   Event = 0x02 // room to send: after connect, and after a send had to wait
	FDAccept  Event = 0x08 // a connection waits in the backlog
	FDConnect Event = 0x10 // a connect completed; err says how
	FDClose   Event = 0x20 // the connection ended: err nil for the peer's disconnect, else why
)

func (ev Event) String() string {
	names := []struct {
		e Event
		s string
	}{{FDRead, "FD_READ"}, {FDWrite, "FD_WRITE"}, {FDAccept, "FD_ACCEPT"}, {FDConnect, "FD_CONNECT"}, {FDClose, "FD_CLOSE"}}
	out := ""
	for _, n := range names {
		if ev&n.e != 0 {
			if out != "" {
				out += "|"
			}
			out += n.s
		}
	}
	if out == "" {
		return "0"
	}
	return out
}

// slotOf returns the slot of a live descriptor, nil otherwise.
func (p *Provider) slotOf(s Socket) *slot {
	i := s.index()
	if i < 0 || i >= len(p.slots) {
		return nil
	}
	sl := &p.slots[i]
	if sl.w.Load() != uint64(s.gen())<<1|1 {
		return nil
	}
	return sl
}

// liveSock returns the socket of a live descriptor, nil otherwise; any
// goroutine. The slot's socket pointer changes only after its state word
// has left this generation: if the word is the same after the load, the
// pointer is this descriptor's socket.
func (p *Provider) liveSock(s Socket) *socket {
	sl := p.slotOf(s)
	if sl == nil {
		return nil
	}
	sock := sl.sock.Load()
	if sl.w.Load() != uint64(s.gen())<<1|1 {
		return nil
	}
	return sock
}

// resolve returns the socket of a live descriptor; poller only.
func (p *Provider) resolve(s Socket) *socket {
	sl := p.slotOf(s)
	if sl == nil {
		return nil
	}
	return sl.sock.Load()
}

// allocSlot gives sock a new descriptor; poller only.
func (p *Provider) allocSlot(sock *socket) (Socket, error) {
	k := len(p.freeSlots)
	if k == 0 {
		return 0, ErrMFile
	}
	i := p.freeSlots[k-1]
	p.freeSlots = p.freeSlots[:k-1]
	sl := &p.slots[i]
	gen := sl.w.Load() >> 1
	sl.sock.Store(sock)
	sl.w.Store(gen<<1 | 1)
	p.nSockets.Add(1)
	return Socket(gen<<32 | uint64(i+1)), nil
}

// ---- synchronous verbs ---------------------------------------------------

// Addresses returns the addresses the provider serves (WSPIoctl
// SIO_ADDRESS_LIST_QUERY): its link's.
func (p *Provider) Addresses() []netip.Addr { return []netip.Addr{p.link.LocalAddr()} }

// call runs a synchronous verb: it submits o and waits for the poller.
// When the poller role is free the caller takes it and applies o itself,
// after what others submitted before it, without the submission ring's
// round trip: the common case of a request-response loop.
func (p *Provider) call(o *op) { p.runOp(o, 0) }

// runOp applies o, inline when it can, and waits until it is ready or the
// deadline (nanotime; 0: none) passes.
func (p *Provider) runOp(o *op, deadline int64) {
	took, idle := p.applyInline(o, deadline)
	if !took {
		p.submit(o)
		p.leave()
	}
	if !o.ready() {
		// Gave way, or submitted: another poller finishes o.
		p.awaitFrom(o, deadline, idle)
	}
}

// applyInline applies o on the caller's goroutine when the poller role is
// free, and polls until o is ready, the deadline (nanotime; 0: none)
// passes, or the caller gives way (idle, see pollLoop). It reports whether
// it took the role; if not, the caller submits o. Either way the verb has
// left (leave) once o is applied or submitted.
func (p *Provider) applyInline(o *op, deadline int64) (took, idle bool) {
	if p.stopping.Load() || !p.role.tryTake() {
		return false, false
	}
	now := p.nanotime()
	p.eng.now = now
	p.drainSubmissions()
	p.apply(o)
	p.leave()
	// What o queued goes out before the link is looked at.
	p.settle()
	if !o.ready() && (deadline == 0 || now < deadline) {
		idle = p.pollLoop(o, false, deadline)
	}
	p.releaseInline(now, o.streaming())
	return true, idle
}

// getOp takes an op from the pool for a verb that must not fail for want
// of one (Socket, Bind, CloseSocket, ...): it falls back to the heap.
func (p *Provider) getOp(kind opKind, s Socket) *op {
	o := p.ops.get()
	if o == nil {
		o = &op{heap: true, wake: make(chan struct{}, 1)}
		o.rw.ch = o.wake
	}
	o.kind, o.s = kind, s
	return o
}

// result reads a finished op's error and returns the op to the pool.
func (p *Provider) result(o *op) error {
	err := o.err
	p.ops.put(o)
	return err
}

// Socket creates a stream socket and returns its descriptor.
func (p *Provider) Socket() (Socket, error) {
	if !p.enter() {
		return 0, ErrNetDown
	}
	o := p.getOp(opSocket, 0)
	p.call(o)
	s := o.res
	return s, p.result(o)
}

// Bind gives the socket a local address: the link's address (or the
// unspecified address) and a port, 0 for an ephemeral one.
func (p *Provider) Bind(s Socket, addr netip.AddrPort) error {
	if !p.enter() {
		return ErrNotSock
	}
	// The address is checked on the poller, after the descriptor: a
	// closed descriptor is ENOTSOCK whatever the arguments.
	o := p.getOp(opBind, s)
	o.addr = addr
	p.call(o)
	return p.result(o)
}

// Listen makes a bound socket accept connections; backlog (clamped to
// [1, Config.MaxBacklog]) is how many may wait to be accepted: past it
// connect requests are rejected at once.
func (p *Provider) Listen(s Socket, backlog int) error {
	if !p.enter() {
		return ErrNotSock
	}
	o := p.getOp(opListen, s)
	o.arg = backlog
	p.call(o)
	return p.result(o)
}

// Shutdown ends the socket's sending direction after the data already
// sent: the peer's receives return end of stream (0, nil) once they have
// read everything. It is the half close a graceful disconnect builds on.
func (p *Provider) Shutdown(s Socket) error {
	if !p.enter() {
		return ErrNotSock
	}
	o := p.getOp(opShutdown, s)
	p.call(o)
	return p.result(o)
}

// GetSockName returns the socket's local address.
func (p *Provider) GetSockName(s Socket) (netip.AddrPort, error) {
	a, _, err := p.names(s)
	return a, err
}

// GetPeerName returns the connected socket's peer address; ENOTCONN if
// there is none.
func (p *Provider) GetPeerName(s Socket) (netip.AddrPort, error) {
	_, b, err := p.names(s)
	if err == nil && !b.IsValid() {
		err = ErrNotConn
	}
	return b, err
}

func (p *Provider) names(s Socket) (local, peer netip.AddrPort, err error) {
	if !p.enter() {
		return local, peer, ErrNotSock
	}
	o := p.getOp(opGetName, s)
	p.call(o)
	local, peer = o.local, o.peer
	return local, peer, p.result(o)
}

// ConnInfo returns the congestion state of a connected socket: its
// window, what limits its sender, its ECN marks. ENOTCONN for a socket
// that is not an established connection.
func (p *Provider) ConnInfo(s Socket) (ConnInfo, error) {
	if !p.enter() {
		return ConnInfo{}, ErrNotSock
	}
	o := p.getOp(opConnInfo, s)
	p.call(o)
	info := o.info
	return info, p.result(o)
}

// Duplicate returns another descriptor for the same socket. The socket
// lives until its last descriptor is closed.
//
// A Duplicate racing the close of the socket's last descriptor either
// comes first (it returns a new descriptor, and the close was not the
// last: it releases nothing) or second (it fails with ENOTSOCK, and the
// close was the last: the hard close is done when CloseSocket returns).
// The new reference is taken on the poller, under the socket's refMu,
// only while the descriptor is still live; CloseSocket kills the
// descriptor and drops its reference under the same lock.
func (p *Provider) Duplicate(s Socket) (Socket, error) {
	if !p.enter() {
		return 0, ErrNotSock
	}
	if p.slotOf(s) == nil {
		p.leave()
		return 0, ErrNotSock
	}
	o := p.getOp(opDup, s)
	p.call(o)
	d := o.res
	return d, p.result(o)
}

// EventSelect asks for fn to be called with the events of mask as they
// happen on the socket (0 turns notifications off). Events already true
// when it is called are reported at once. fn runs on the poller: it must
// return quickly and must not call blocking verbs. No notification is made
// once the socket's last descriptor is being closed.
func (p *Provider) EventSelect(s Socket, mask Event, fn func(s Socket, ev Event, err error)) error {
	if !p.enter() {
		return ErrNotSock
	}
	o := p.getOp(opEventSelect, s) // a nil fn is refused after the descriptor is checked
	o.evSet, o.evFn = mask, fn
	p.call(o)
	return p.result(o)
}

// ---- overlapped verbs ---------------------------------------------------

// post submits an overlapped op whose completion goes to cq.
func (p *Provider) post(kind opKind, s Socket, buf []byte, to netip.AddrPort, cq *CompletionQueue, ctx uint64) error {
	if !p.enter() {
		return ErrNotSock
	}
	defer p.leave()
	// The descriptor first: a closed one is ENOTSOCK whatever the
	// arguments.
	sock := p.liveSock(s)
	if sock == nil {
		return ErrNotSock
	}
	if cq == nil || kind == opRecv && len(buf) == 0 {
		return ErrInvalid
	}
	if !cq.reserve() {
		return ErrNoBufs
	}
	o := p.ops.get()
	if o == nil {
		cq.reserved.Add(-1)
		return ErrNoBufs
	}
	o.kind, o.s, o.buf, o.addr, o.cq, o.ctx = kind, s, buf, to, cq, ctx
	p.role.posted.Add(1)
	o.sock = sock
	p.submit(o)
	if !p.role.held.Load() {
		p.role.wakePoller() // nobody polls right now
	}
	return nil
}

// PostSend posts a send of b. It completes once all of b is in the
// socket's send buffer (b must not change until then), with Bytes =
// len(b). Sends complete in the order posted.
func (p *Provider) PostSend(s Socket, b []byte, cq *CompletionQueue, ctx uint64) error {
	return p.post(opSend, s, b, netip.AddrPort{}, cq, ctx)
}

// PostRecv posts a receive into b (len(b) > 0). It completes when at
// least one byte is there, with the bytes copied; Bytes 0 and Err nil mean
// end of stream.
func (p *Provider) PostRecv(s Socket, b []byte, cq *CompletionQueue, ctx uint64) error {
	return p.post(opRecv, s, b, netip.AddrPort{}, cq, ctx)
}

// PostAccept posts an accept on a listening socket. It completes with the
// new connection's descriptor in Completion.Accepted.
func (p *Provider) PostAccept(s Socket, cq *CompletionQueue, ctx uint64) error {
	return p.post(opAccept, s, nil, netip.AddrPort{}, cq, ctx)
}

// PostConnect posts a connect to the peer at to. A socket not yet bound
// gets an ephemeral port. It completes when the peer accepts (Err nil) or
// refuses (ECONNREFUSED), or after Config.Timeout (ETIMEDOUT).
func (p *Provider) PostConnect(s Socket, to netip.AddrPort, cq *CompletionQueue, ctx uint64) error {
	return p.post(opConnect, s, nil, to, cq, ctx)
}

// blocking runs an overlapped verb in its blocking form: the same op, with
// the caller waiting on it instead of a completion queue.
func (p *Provider) blocking(kind opKind, s Socket, buf []byte, to netip.AddrPort) *op {
	if !p.enter() {
		return nil
	}
	o := p.ops.get()
	if o == nil {
		p.leave()
		return nil
	}
	o.kind, o.s, o.buf, o.addr = kind, s, buf, to
	o.sock = p.liveSock(s)
	p.call(o)
	return o
}

func (p *Provider) blockingErr() error {
	if p.closed.Load() {
		return ErrNotSock
	}
	return ErrNoBufs
}

// Send sends all of b, blocking until it is in the send buffer.
func (p *Provider) Send(s Socket, b []byte) (int, error) {
	o := p.blocking(opSend, s, b, netip.AddrPort{})
	if o == nil {
		return 0, p.blockingErr()
	}
	n := o.n
	return n, p.result(o)
}

// Recv receives into b, blocking until at least one byte is there; 0, nil
// is end of stream.
func (p *Provider) Recv(s Socket, b []byte) (int, error) {
	if len(b) == 0 {
		if p.slotOf(s) == nil {
			return 0, ErrNotSock // the descriptor before the arguments
		}
		return 0, ErrInvalid
	}
	o := p.blocking(opRecv, s, b, netip.AddrPort{})
	if o == nil {
		return 0, p.blockingErr()
	}
	n := o.n
	return n, p.result(o)
}

// Accept blocks until a connection arrives on the listening socket and
// returns its descriptor and peer.
func (p *Provider) Accept(s Socket) (Socket, netip.AddrPort, error) {
	o := p.blocking(opAccept, s, nil, netip.AddrPort{})
	if o == nil {
		return 0, netip.AddrPort{}, p.blockingErr()
	}
	c, peer := o.res, o.peer
	return c, peer, p.result(o)
}

// Connect connects the socket to the peer at to and blocks until the
// outcome.
func (p *Provider) Connect(s Socket, to netip.AddrPort) error {
	o := p.blocking(opConnect, s, nil, to)
	if o == nil {
		return p.blockingErr()
	}
	return p.result(o)
}
