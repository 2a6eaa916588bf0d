package provider

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/internal/timerheap"
	"github.com/sdx-project/sdx/internal/wire"
)

// engineConfig is the part of Config the protocol core uses, already
// validated and with defaults filled in.
type engineConfig struct {
	SendBuffer int // bytes of unacknowledged plus unsent data per connection
	RecvBuffer int // bytes of received, unread data per connection: the window
	Buffers    int // datagram-sized buffers in the pool, shared by all connections
	MaxConns   int // endpoints (sockets plus not yet accepted connections)
	MaxBacklog int

	InitialRTO, MinRTO, MaxRTO time.Duration
	AckDelay                   time.Duration
	Timeout                    time.Duration // dead-peer bound
	Pacing                     bool          // spread a window over the round trip (see pace)
	PeerTimeout                time.Duration // liveness bound of a peer stack with heartbeats; 0: no heartbeats
}

func defaultEngineConfig() engineConfig {
	return engineConfig{
		SendBuffer: 256 << 10,
		RecvBuffer: 256 << 10,
		Buffers:    8192,
		MaxConns:   4096,
		MaxBacklog: 1024,
		InitialRTO: 20 * time.Millisecond,
		MinRTO:     5 * time.Millisecond,
		MaxRTO:     time.Second,
		AckDelay:   200 * time.Microsecond,
		Timeout:    10 * time.Second,

		PeerTimeout: 800 * time.Millisecond,
	}
}

// Connection ids: the low idBits index the endpoint table (plus one, so
// id 0 is never valid), the high bits are the slot's generation.
const (
	idBits   = 20
	idMask   = 1<<idBits - 1
	maxConns = idMask - 1

	ephemeralLo = 49152
	ephemeralHi = 65535

	rxBatch = 64 // datagrams taken from the link per Receive call

	// ackEvery is how many in-order segments a receiver takes before it
	// acknowledges them unasked; fewer wait at most AckDelay, or for a
	// frame of ours to carry the ack. A sender that needs an ack sooner
	// asks for it (FlagAckReq, see sendData), so a stream costs one ack
	// per ackEvery segments, not one per two.
	ackEvery = 16
)

// Events the engine reports about an endpoint; the SPI reacts to them after
// each engine step.
const (
	evConnected uint8 = 1 << iota // a connect completed (successfully or not: see err)
	evIncoming                    // a listener got a connection in its backlog
	evReadable                    // in-order data or end of stream arrived
	evWritable                    // send space was freed
	evFailed                      // the connection failed (reset, time-out)
	evPeerHeard                   // the peer's stack was heard from, as a check asked (see checkPeer)
)

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
	state    State
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

	// Listener.
	backlog    []*endpoint
	backlogMax int         // also the most half-open connections
	half       []*endpoint // half-open children: accept sent, the connector not yet heard again
	acceptWait int         // accepts the SPI has pending: they take connections at once
	parent     *endpoint   // a child not yet accepted: its listener
	halfOpen   bool        // a child in its listener's half list
	tries      int         // accepts a half-open child has sent
	cookie     uint64      // a connector's cookie from the listener's retry; 0: none
	confirming bool        // a connector not yet heard from since the accept: its answer may be lost

	// The connect request's round trip, the handshake's RTT sample.
	synSent int64 // when the connect request went out
	synOnce bool  // it went out once: its answer is an RTT sample

	// ECN (RFC 3168, docs/PROTOCOL.md): ecnOK, both ends announced
	// wire.FlagECN, so our data goes out ECT(0) and our acks carry ceIn,
	// the count of data frames that arrived marked CE (mod 256); lastCE,
	// the latest data frame did.
	ecnOK   bool
	ceIn    uint8
	lastCE  bool
	ceTotal uint64 // CE-marked data frames received, for ConnInfo

	sender   // the send side: see sender.go
	receiver // the receive side: see receiver.go

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

// engineStats are the engine's counters, written by the poller and read by
// anyone.
type engineStats struct {
	datagramsIn, datagramsOut                            atomic.Uint64
	dataOut, retransmits, fastRetransmits, rtoExpiries   atomic.Uint64
	acksOut, probesOut, resetsOut, resetsIn, rejectsOut  atomic.Uint64
	resetsChallenged                                     atomic.Uint64
	retriesOut, cookiesIn, halfOpenExpired               atomic.Uint64
	dropMalformed, dropChecksum, dropBadToken            atomic.Uint64
	dropUnknownConn, dropOutOfWindow, dropDuplicate      atomic.Uint64
	dropNoBuffer, dropBadAck, dropBadCookie              atomic.Uint64
	reneged, recvDirect, oooIn, inPlace                  atomic.Uint64
	deadPeers, sendErrors, tooBig                        atomic.Uint64
	unreachIn, dropUnreach                               atomic.Uint64
	heartbeatsOut, heartbeatsIn, peerRestarts, peersDead atomic.Uint64
	// Congestion control (cc.go).
	lossReductions, ecnReductions, spuriousRTOs atomic.Uint64
	ceIn, ceEchoed, ecnConns                    atomic.Uint64
	cwndLimited, poolLimited                    atomic.Uint64
	paceWaits                                   atomic.Uint64
	bursts                                      [numBurstBuckets]atomic.Uint64
	endpoints, halfOpen                         atomic.Int64 // gauges
}

// engine is the protocol core: endpoints, the connection state machine,
// reliability and flow control over a Link. It starts no goroutines and
// reads no clock: every entry point takes now, in nanoseconds from any
// fixed origin, so tests drive it with a virtual clock. It is owned by one
// goroutine at a time (the poller role).
type engine struct {
	link Link
	cfg  engineConfig
	rng  *rand.Rand
	mtu  int
	mss  int

	// The buffer pool, split in a send half and a receive half, and the
	// windows and writers waiting for it: see credit.go.
	credit

	eps     []*endpoint // by index
	gens    []uint16
	freeIdx []uint32
	nEps    int

	ports    map[uint16]*endpoint
	children map[connKey]*endpoint // accepted-side connections by connector's key
	quiet    map[connKey]int64     // closed children: duplicate connects ignored until then

	timers timerheap.Heap[*endpoint] // on wakeAt
	rxFull bool                      // the last Receive took a full batch: more may wait

	// Peer stacks: see peer.go. inc is our own incarnation, drawn at
	// start.
	inc         uint64
	peers       map[netip.Addr]*peer
	ptimers     timerheap.Heap[*peer] // on peer.wakeAt
	peerScratch []*endpoint
	changed     []*endpoint
	output      []*endpoint

	now         int64
	linkErr     error // last error of Flush
	lastSendErr error // error of the last Send, for sendCtl
	unflushed   int   // datagrams sent since the last Flush
	hdr         wire.Header
	rhdr        wire.Header
	ctl         []byte           // control frame scratch
	sackAll     []wire.SACKBlock // fillSACK's scratch: every block of one endpoint
	txCount     uint64           // segments transmitted (see seg.tx)
	inputFn     func(netip.Addr, []byte, [][]byte)
	cookies     *cookieMAC

	// A link that lends the pool its memory (see Lender): segments are
	// sent in place. rtx holds a copy to retransmit while the link still
	// sends the previous transmission; lentFreed says that the link gave
	// back a buffer nobody needs any more, and who waits for one is due
	// a wake.
	lender    Lender
	rtx       []byte
	lentFreed bool

	// ecn is the link as an ECNLink; nil when it carries no ECN field.
	ecn ECNLink

	st engineStats
}

func newEngine(link Link, cfg engineConfig, seed [32]byte) (*engine, error) {
	mtu := link.MTU()
	if mtu < wire.HeaderLen+64 {
		return nil, configErr("link MTU %d is too small: sdx needs at least %d", mtu, wire.HeaderLen+64)
	}
	if mtu > 65535 {
		mtu = 65535
	}
	e := &engine{
		link:     link,
		cfg:      cfg,
		rng:      rand.New(rand.NewChaCha8(seed)),
		mtu:      mtu,
		mss:      mtu - wire.HeaderLen,
		eps:      make([]*endpoint, 0, 64),
		ports:    make(map[uint16]*endpoint),
		children: make(map[connKey]*endpoint),
		quiet:    make(map[connKey]int64),
		peers:    make(map[netip.Addr]*peer),
		ctl:      make([]byte, wire.HeaderLen+wire.SACKLen*wire.MaxSACK),
	}
	pool := newBufPool(cfg.Buffers, mtu)
	if l, ok := link.(Lender); ok {
		if regions, per, stride, head := l.Lent(); len(regions) > 0 && per > 0 && stride-head >= mtu {
			pool = newBufPoolLent(cfg.Buffers, mtu, regions, per, stride, head)
			e.lender = l
			e.rtx = make([]byte, mtu)
			l.SetLentDone(e.lentDone)
		}
	}
	e.credit = newCredit(pool, mtu-wire.HeaderLen)
	e.ecn, _ = link.(ECNLink)
	e.inputFn = e.inputPieces
	link.SetUnreachable(e.unreachable)
	var key [16]byte
	for i := range key {
		key[i] = byte(e.rng.Uint32())
	}
	e.cookies = newCookieMAC(key)
	e.inc = e.rng.Uint64() | 1
	return e, nil
}

// ---- endpoints -------------------------------------------------------

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
	if ep.starved {
		e.starved = removeEndpoint(e.starved, ep)
		ep.starved = false
	}
	if ep.rwaiting {
		e.rwait = removeEndpoint(e.rwait, ep)
		ep.rwaiting = false
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
		if !ep.halfOpen {
			e.quietKey(ep.key)
		}
		ep.key = connKey{}
	}
	if p := ep.parent; p != nil {
		if ep.halfOpen {
			p.half = removeEndpoint(p.half, ep)
			e.st.halfOpen.Add(-1)
		} else {
			p.backlog = removeEndpoint(p.backlog, ep)
		}
		ep.parent = nil
		ep.halfOpen = false
	}
	idx := ep.id&idMask - 1
	e.eps[idx] = nil
	e.freeIdx = append(e.freeIdx, idx)
	e.nEps--
	e.st.endpoints.Store(int64(e.nEps))
	ep.state = StateClosed
	ep.released = true
	ep.segs, ep.rq, ep.ooo, ep.backlog, ep.half = nil, nil, nil, nil, nil
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
	for i := range ep.slen {
		s := ep.at(i)
		if s.buf != noBuf {
			e.freeBuf(s.buf)
		}
		*s = seg{}
	}
	ep.shead, ep.slen, ep.sent = 0, 0, 0
	for i := range ep.rqLen {
		r := ep.rqAt(i)
		e.freeBuf(r.buf)
		*r = rseg{}
	}
	ep.rqHead, ep.rqLen, ep.rqBytes = 0, 0, 0
	for i := range ep.ooo {
		e.freeBuf(ep.ooo[i].buf)
	}
	clear(ep.ooo)
	ep.ooo = ep.ooo[:0]
	ep.finPending = false
	e.recvCommitted -= ep.counted
	ep.need, ep.counted = 0, 0
	e.sendBeyond -= ep.beyond
	ep.beyond = 0
	ep.winWait = false
	e.wakeReceivers()
}

func (e *engine) bind(ep *endpoint, port uint16) error {
	if ep.state != StateClosed {
		return ErrInvalid
	}
	if port == 0 {
		start := ephemeralLo + e.rng.IntN(ephemeralHi-ephemeralLo+1)
		for i := range ephemeralHi - ephemeralLo + 1 {
			p := uint16(ephemeralLo + (start-ephemeralLo+i)%(ephemeralHi-ephemeralLo+1))
			if e.ports[p] == nil {
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
	ep.state = StateBound
	return nil
}

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

// connect starts the handshake to raddr:rport, binding an ephemeral port
// first if needed.
func (e *engine) connect(ep *endpoint, to netip.AddrPort) error {
	switch ep.state {
	case StateClosed:
		if err := e.bind(ep, 0); err != nil {
			return err
		}
	case StateBound:
	case StateConnecting:
		return ErrAlready
	case StateEstablished:
		return ErrIsConn
	default:
		return ErrInvalid
	}
	if !to.Addr().Is4() || to.Port() == 0 || to.Addr().IsUnspecified() {
		return ErrAddrNotAvail
	}
	ep.mss = e.mss // until the accept says otherwise
	e.initConn(ep)
	ep.raddr, ep.rport = to.Addr(), to.Port()
	ep.token = e.rng.Uint64() | 1
	ep.state = StateConnecting
	ep.lastHeard = e.now
	e.attachPeer(ep, 0)
	e.sendCtl(ep, wire.OpConnect, wire.ReasonNone)
	ep.synSent, ep.synOnce = e.now, true
	ep.rtoAt = later(e.now, ep.rtt.rto)
	e.schedule(ep, ep.rtoAt)
	return nil
}

// initConn gives an endpoint, whose mss is set, its rings and timers.
func (e *engine) initConn(ep *endpoint) {
	e.sizeRings(ep)
	ep.cc.start(ep.mss, ep.ecnOK)
	if ep.ecnOK {
		e.st.ecnConns.Add(1)
	}
	ep.rtt.start(e.rtoBounds())
	ep.sackKnown = math.MaxUint64
	ep.lastEdge = 0 // the first frame with a window grants it
}

// sizeRings sizes the segment and receive rings for ep.mss. The rings
// must be empty.
func (e *engine) sizeRings(ep *endpoint) {
	nseg := pow2(e.cfg.SendBuffer/ep.mss + 2)
	if len(ep.segs) != nseg {
		ep.segs = make([]seg, nseg)
	}
	ep.oooMax = max(16, 2*(e.cfg.RecvBuffer/ep.mss+1))
	if nrq := pow2(e.cfg.RecvBuffer/ep.mss + 2 + ep.oooMax); len(ep.rq) != nrq {
		ep.rq = make([]rseg, nrq)
		ep.ooo = make([]oseg, 0, ep.oooMax)
	}
}

// peerMSS is the segment size toward a peer that announced max (0: none):
// the datagram both links carry, less the header.
func (e *engine) peerMSS(max int) int {
	if max == 0 {
		max = wire.MinPeerDatagram
	}
	return min(e.mtu, max) - wire.HeaderLen
}

func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
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
	ep.rtoAt, ep.ackAt, ep.ackNow = 0, 0, false
	if connecting {
		e.notify(ep, evConnected)
	}
	e.notify(ep, evFailed|evReadable|evWritable)
}

// ---- scheduling -------------------------------------------------------

func (e *engine) notify(ep *endpoint, ev uint8) {
	ep.ev |= ev
	if !ep.changedQ {
		ep.changedQ = true
		e.changed = append(e.changed, ep)
	}
}

func (e *engine) queueOutput(ep *endpoint) {
	if !ep.outQ {
		ep.outQ = true
		e.output = append(e.output, ep)
	}
}

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
func (ep *endpoint) SetIndex(i int)          { ep.heapIdx = i }

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

// ---- the poll step ----------------------------------------------------

// poll runs one step: receive, timers, output, flush. It reports whether
// anything happened.
func (e *engine) poll(now int64) bool {
	n := e.receive(now)
	t := e.runTimers(now)
	o := e.transmit()
	return n > 0 || t || o
}

// receive takes up to rxBatch datagrams from the link and processes them.
// It takes back the lent buffers the link has sent first.
func (e *engine) receive(now int64) int {
	e.now = now
	if e.pool.nLinked > 0 {
		e.lender.Reap()
		e.wakeLent()
	}
	n := e.link.Receive(rxBatch, e.inputFn)
	e.rxFull = n >= rxBatch
	return n
}

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

// transmit sends what the endpoints in the output list have to send and
// flushes the link. It reports whether it sent anything.
func (e *engine) transmit() bool {
	n := len(e.output)
	for i := range n {
		ep := e.output[i]
		ep.outQ = false
		if ep.state == StateEstablished {
			e.sendData(ep)
		}
	}
	// Endpoints queued again (out of transmit slots) wait for the next step.
	k := copy(e.output, e.output[n:])
	clear(e.output[k:])
	e.output = e.output[:k]
	sent := e.unflushed > 0
	if sent {
		e.flush()
	}
	return sent
}

func (e *engine) flush() error {
	e.unflushed = 0
	err := e.link.Flush()
	e.linkErr = err
	e.wakeLent()
	return err
}

// sendRegion is the pool region ep's send data belongs in (see
// Lender.Region); -1 without a lender.
func (e *engine) sendRegion(ep *endpoint) int {
	if e.lender == nil {
		return -1
	}
	return e.lender.Region(ep.raddr, ep.lport, ep.rport)
}

// lentDone is the lender's call: the link no longer sends from lent
// buffer i.
func (e *engine) lentDone(i uint32) {
	if e.pool.unlink(i) {
		e.lentFreed = true
	}
}

// unlinkAll takes back every lent buffer from a link that is closed: it
// sends from none any more.
func (e *engine) unlinkAll() {
	for i := range e.pool.nLent {
		if e.pool.nLinked == 0 {
			break
		}
		if e.pool.linked[i] {
			e.pool.unlink(uint32(i))
		}
	}
}

// wakeLent wakes writers and receivers waiting for a buffer when the link
// gave one back.
func (e *engine) wakeLent() {
	if !e.lentFreed {
		return
	}
	e.lentFreed = false
	if len(e.starved) > 0 {
		e.wakeWriters(0)
	}
	if len(e.rwait) > 0 {
		e.wakeReceivers()
	}
}

// ---- input ------------------------------------------------------------

func (e *engine) input(from netip.Addr, b []byte) { e.inputPieces(from, b, nil) }

// inputPieces is input for a datagram the link holds in pieces: b, which
// holds the whole header, then more (see Link.Receive).
func (e *engine) inputPieces(from netip.Addr, b []byte, more [][]byte) {
	e.st.datagramsIn.Add(1)
	h := &e.rhdr
	payload, err := h.DecodePieces(b, more)
	if err != nil {
		if err == wire.ErrChecksum {
			e.st.dropChecksum.Add(1)
		} else {
			e.st.dropMalformed.Add(1)
		}
		return
	}
	if h.Op == wire.OpHeartbeat {
		e.onHeartbeat(from, h)
		return
	}
	ann, inc := 0, uint64(0)
	if h.Op == wire.OpConnect || h.Op == wire.OpAccept {
		var ok bool
		if ann, ok = wire.Announced(payload); !ok {
			e.st.dropMalformed.Add(1)
			return
		}
		inc = wire.Incarnation(payload)
	}
	if h.Op == wire.OpConnect {
		e.onConnect(from, h, ann, inc)
		return
	}
	ep := e.lookup(h.DstConn)
	if ep == nil && h.Op == wire.OpReset && h.DstConn == 0 {
		// A connector that closed before it learnt our id.
		ep = e.children[connKey{peer: from, id: h.SrcConn, token: h.Token}]
		if ep != nil && ep.state == StateEstablished {
			ep.peerID = h.SrcConn
		}
	}
	if ep == nil || !ep.state.IsConnection() {
		e.st.dropUnknownConn.Add(1)
		if h.Op != wire.OpReset && h.Op != wire.OpReject && h.Op != wire.OpRetry {
			e.resetUnknown(from, h)
		}
		return
	}
	if from != ep.raddr || h.Token != ep.token || h.SrcPort != ep.rport || h.DstPort != ep.lport ||
		(ep.state == StateEstablished && h.SrcConn != ep.peerID) {
		e.st.dropBadToken.Add(1)
		return
	}
	ep.lastHeard = e.now
	if p := ep.peer; p != nil {
		p.lastHeard = e.now
		if p.checking {
			e.peerHeard(p)
		}
	}
	switch h.Op {
	case wire.OpReject:
		if ep.state == StateConnecting {
			e.fail(ep, ErrConnRefused)
		}
		return
	case wire.OpReset:
		e.onReset(ep, h.Seq)
		return
	case wire.OpRetry:
		if ep.state == StateConnecting {
			e.onRetry(ep, h)
		}
		return
	}
	if ep.confirming && h.Op != wire.OpAccept {
		// The acceptor has our connection.
		ep.confirming = false
		if ep.sent == 0 && ep.slen == 0 {
			ep.rtoAt = 0
		}
	}
	switch {
	case ep.halfOpen:
		// The connector answered our accept: it is at its address.
		e.confirm(ep)
	case ep.state == StateConnecting:
		// Accept, or any valid frame of the acceptor if the accept was lost.
		e.established(ep, h, ann, inc)
	case h.Op == wire.OpAccept:
		// A repeated accept: our answer to it was lost. A probe carries
		// the ack and is answered, so it gets through where pure acks
		// do not.
		ep.probeAck = true
		e.ackSoon(ep, true)
		if !ep.announced && ann > 0 {
			// Established by another frame of the acceptor's, we used
			// the smallest segments; now we know. Larger segments fit
			// the rings sized for smaller ones.
			ep.mss = max(ep.mss, e.peerMSS(ann))
			ep.announced = true
			ep.cc.setMSS(ep.mss)
		}
		if ep.peerInc == 0 && inc != 0 && ep.peer != nil {
			ep.peerInc = inc
			e.heardInc(ep.peer, inc, true)
			e.armPeer(ep.peer, e.now)
		}
	}
	if h.Flags&wire.FlagAck != 0 {
		e.onAck(ep, h)
		if ep.state != StateEstablished {
			return
		}
	}
	switch h.Op {
	case wire.OpData:
		if ep.ecnOK {
			e.takeCE(ep)
		}
		e.onData(ep, h.Seq, pieces{p: payload, more: more}, h.Flags&wire.FlagAckReq != 0)
	case wire.OpDisconnect:
		e.onFin(ep, h.Seq)
	case wire.OpProbe:
		e.onProbe(ep, h)
	}
	e.recommit(ep)
}

// takeCE counts a data frame that arrived marked CE. When the marks
// start or stop, the ack goes at once, so the sender hears of them
// within a round trip (RFC 8257 section 3.2 does the same for its ECE
// flag); in between, the count rides on the acks as they come.
func (e *engine) takeCE(ep *endpoint) {
	ce := e.ecn.ReceivedCE()
	if ce {
		ep.ceIn++
		ep.ceTotal++
		e.st.ceIn.Add(1)
	}
	if ce != ep.lastCE {
		ep.lastCE = ce
		ep.ackNow = true
		e.queueOutput(ep)
	}
}

func (e *engine) established(ep *endpoint, h *wire.Header, ann int, inc uint64) {
	ep.peerID = h.SrcConn
	ep.state = StateEstablished
	if p := ep.peer; p != nil && inc != 0 {
		// The accept carries our token: its incarnation is the peer's.
		ep.peerInc = inc
		e.heardInc(p, inc, true)
		e.armPeer(p, e.now)
	}
	// Nothing is queued yet: the rings may change with the segment size.
	ep.mss, ep.announced = e.peerMSS(ann), ann > 0
	e.sizeRings(ep)
	ep.ecnOK = e.ecn != nil && h.Flags&wire.FlagECN != 0
	ep.cc.start(ep.mss, ep.ecnOK)
	if ep.ecnOK {
		e.st.ecnConns.Add(1)
	}
	if ep.synOnce {
		ep.rtt.sample(e.now - ep.synSent)
	}
	ep.rtt.settle(e.rtoBounds())
	ep.synOnce = false
	e.notify(ep, evConnected|evWritable)
	// The third frame of the handshake: the acceptor hands the
	// connection to its application only once it hears from us. Until
	// the acceptor sends anything but an accept (it answers the
	// confirmation with its window), the retransmission timer repeats
	// the confirmation as a probe: a connector with nothing to send must
	// not leave its acceptor's half-open connection to expire.
	e.ackSoon(ep, true)
	ep.confirming = true
	ep.rtoAt = later(e.now, ep.rtt.rto)
	e.schedule(ep, min(ep.rtoAt, e.keepaliveAt(ep)))
}

// onRetry answers a listener's retry: the connect request goes again at
// once, with the cookie.
func (e *engine) onRetry(ep *endpoint, h *wire.Header) {
	if h.Seq == 0 || h.Seq == ep.cookie {
		return
	}
	ep.cookie = h.Seq
	e.sendCtl(ep, wire.OpConnect, wire.ReasonNone)
	ep.synSent, ep.synOnce = e.now, true
	ep.rtoAt = later(e.now, ep.rtt.rto)
	e.schedule(ep, ep.rtoAt)
}

// confirm moves a half-open child to its listener's backlog.
func (e *engine) confirm(c *endpoint) {
	l := c.parent
	l.half = removeEndpoint(l.half, c)
	e.st.halfOpen.Add(-1)
	c.halfOpen = false
	if c.synOnce {
		c.rtt.sample(e.now - c.synSent)
	}
	c.synOnce = false
	c.rtt.settle(e.rtoBounds())
	c.rtoAt, c.tries = 0, 0
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
	c.sndRight = uint64(h.Window)
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
	c.rtoAt = later(e.now, c.rtt.rto)
	e.schedule(c, c.rtoAt)
}

// resetUnknown answers a frame for a connection we do not have with a
// reset carrying the frame's own ids and token, so its sender accepts it.
func (e *engine) resetUnknown(from netip.Addr, h *wire.Header) {
	e.st.resetsOut.Add(1)
	// The frame's ack is where its sender's receive window starts: the
	// sequence number its sender takes a reset at (see onReset).
	var seq uint64
	if h.Flags&wire.FlagAck != 0 {
		seq = h.Ack
	}
	e.reply(from, h, wire.OpReset, wire.ReasonUnknownConn, seq)
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
	right := max(ep.lastEdge, ep.rcvNxt) + 1 // + 1: the offset a disconnect takes
	switch {
	case seq == ep.rcvNxt:
		e.st.resetsIn.Add(1)
		e.fail(ep, ErrConnReset)
	case seq > ep.rcvNxt && seq <= right && ep.state == StateEstablished:
		e.st.resetsChallenged.Add(1)
		e.ackSoon(ep, true)
	default:
		e.st.dropOutOfWindow.Add(1)
	}
}

// reply sends a control frame back to the sender of h; seq is a retry's
// cookie.
func (e *engine) reply(to netip.Addr, h *wire.Header, op wire.Opcode, reason wire.Reason, seq uint64) {
	r := &e.hdr
	*r = wire.Header{
		Op: op, Reason: reason,
		SrcPort: h.DstPort, DstPort: h.SrcPort,
		SrcConn: h.DstConn, DstConn: h.SrcConn,
		Token: h.Token,
		Seq:   seq,
	}
	n := r.Put(e.ctl, 0)
	e.sendRaw(nil, to, e.ctl[:n])
}

// ---- output -----------------------------------------------------------

// fillHeader fills e.hdr for a frame on ep's connection.
func (e *engine) fillHeader(ep *endpoint, op wire.Opcode, reason wire.Reason) {
	h := &e.hdr
	*h = wire.Header{
		Op:      op,
		Reason:  reason,
		SrcPort: ep.lport,
		DstPort: ep.rport,
		SrcConn: ep.id,
		DstConn: ep.peerID,
		Token:   ep.token,
		Seq:     ep.sndNxt,
	}
	if op != wire.OpReset {
		h.Window = e.window(ep)
		e.grant(ep, h.Window)
	}
	if ep.state == StateEstablished && op != wire.OpReset {
		h.Flags = wire.FlagAck
		h.Ack = ep.rcvNxt
		if ep.ecnOK {
			h.Flags |= wire.FlagECN
			h.CE = ep.ceIn
		}
	}
}

// opAnswer is sendCtl's name for a probe that answers a probe (OpProbe
// with FlagAnswer); it never goes on the wire as an opcode.
const opAnswer wire.Opcode = 0x80 | wire.OpProbe

// sendCtl sends a frame without data on ep's connection: connect, accept,
// ack (with SACK blocks), probe, answer (with SACK blocks) or reset. It
// returns the link's error.
func (e *engine) sendCtl(ep *endpoint, op wire.Opcode, reason wire.Reason) error {
	e.fillHeader(ep, op, reason)
	h := &e.hdr
	switch op {
	case wire.OpConnect:
		h.DstConn = 0
		h.Seq = ep.cookie
	case wire.OpAccept:
		h.Flags = wire.FlagAck
	case wire.OpAck:
		e.sackAll = ep.fillSACK(h, e.sackAll)
		e.st.acksOut.Add(1)
	case opAnswer:
		h.Op = wire.OpProbe
		h.Flags |= wire.FlagAnswer
		e.sackAll = ep.fillSACK(h, e.sackAll)
		e.st.probesOut.Add(1) // on the wire it is a probe
	case wire.OpProbe:
		e.st.probesOut.Add(1)
	case wire.OpReset:
		e.st.resetsOut.Add(1)
	}
	plen := 0
	if op == wire.OpConnect || op == wire.OpAccept {
		plen = wire.PutAnnounce(e.ctl[h.Len():], e.mtu)
		if e.heartbeatsOn() {
			plen += wire.PutIncarnation(e.ctl[h.Len():], e.inc)
		}
		if e.ecn != nil {
			// We take part in ECN (see ECNLink); an acceptor answers for
			// itself, whatever the connector said.
			h.Flags |= wire.FlagECN
		}
	}
	n := h.Put(e.ctl, plen)
	e.lastSendErr = nil
	if !e.sendRaw(ep, ep.raddr, e.ctl[:n]) {
		// Out of transmit slots even after a flush: the frame is not
		// sent, and an ack stays owed.
		return ErrNoBufs
	}
	e.acked(ep)
	return e.lastSendErr
}

// sendRaw hands a datagram to the link, flushing once if the link is out
// of transmit slots. It reports false only in that case.
func (e *engine) sendRaw(ep *endpoint, to netip.Addr, b []byte) bool {
	return e.sendBuf(ep, to, b, noBuf, false)
}

// sendBuf is sendRaw for a datagram b in pool buffer buf: one the link
// lent is sent in place, where the link can (see Lender), and the link
// then holds it until its transmission completes.
func (e *engine) sendBuf(ep *endpoint, to netip.Addr, b []byte, buf uint32, ect bool) bool {
	err := e.linkSend(to, b, buf, ect)
	if errors.Is(err, ErrNoBufs) {
		e.flush()
		err = e.linkSend(to, b, buf, ect)
		if errors.Is(err, ErrNoBufs) {
			return false
		}
	}
	e.st.datagramsOut.Add(1)
	e.unflushed++
	if ep != nil && ep.peer != nil {
		ep.peer.lastSent = e.now
	}
	if err != nil {
		e.st.sendErrors.Add(1)
		e.lastSendErr = err
		if ep != nil {
			ep.lastErr = err
		}
	}
	return true
}

// linkSend sends b, in place from lent buffer buf where it can, marked
// ECT(0) when ect (only on an ECNLink).
func (e *engine) linkSend(to netip.Addr, b []byte, buf uint32, ect bool) error {
	if buf == noBuf || !e.pool.inLent(buf) {
		return e.send(to, b, ect)
	}
	held, err := e.lender.SendLent(to, buf, len(b), ect)
	if held {
		e.pool.link(buf)
		e.st.inPlace.Add(1)
	}
	return err
}

// send is the link's Send, or SendECT when ect.
func (e *engine) send(to netip.Addr, b []byte, ect bool) error {
	if ect {
		return e.ecn.SendECT(to, b)
	}
	return e.link.Send(to, b)
}

// ---- timers -----------------------------------------------------------

func (e *engine) keepaliveAt(ep *endpoint) int64 {
	idle := int64(e.cfg.Timeout) / 3
	t := later(ep.lastHeard, idle)
	if ep.probeAt > t {
		t = ep.probeAt
	}
	return min(t, later(ep.lastHeard, int64(e.cfg.Timeout)))
}

func (e *engine) onTimer(ep *endpoint) {
	now := e.now
	if !ep.state.IsConnection() {
		return
	}
	if ep.halfOpen {
		if now >= ep.rtoAt && ep.tries >= maxAcceptTries || now-ep.lastHeard >= int64(e.cfg.Timeout) {
			// Nobody at the connect's address, or nobody who answers:
			// drop it without a word.
			e.st.halfOpenExpired.Add(1)
			e.release(ep)
			return
		}
		if now >= ep.rtoAt {
			e.sendCtl(ep, wire.OpAccept, wire.ReasonNone)
			ep.tries++
			ep.synOnce = false
			ep.rtt.backoff(e.rtoBounds())
			ep.rtoAt = later(now, ep.rtt.rto)
		}
		e.schedule(ep, min(ep.rtoAt, later(ep.lastHeard, int64(e.cfg.Timeout))))
		return
	}
	if now-ep.lastHeard >= int64(e.cfg.Timeout) {
		e.st.deadPeers.Add(1)
		// ETIMEDOUT, also when the link could not resolve the peer
		// (EHOSTUNREACH from Send): no answer is no answer. Only our own
		// link being down is reported as such.
		err := ErrTimedOut
		switch {
		case errors.Is(e.linkErr, ErrNetDown):
			err = e.linkErr
		case errors.Is(ep.lastErr, ErrNetDown):
			err = ep.lastErr
		}
		if ep.state == StateEstablished {
			e.sendCtl(ep, wire.OpReset, wire.ReasonTimedOut)
		}
		e.fail(ep, err)
		return
	}
	if ep.state == StateConnecting {
		if now >= ep.rtoAt {
			e.sendCtl(ep, wire.OpConnect, wire.ReasonNone)
			ep.synOnce = false // Karn: no sample from a repeated request
			ep.rtt.backoff(e.rtoBounds())
			ep.rtoAt = later(now, ep.rtt.rto)
			e.st.rtoExpiries.Add(1)
			ep.stat.rtoExpiries++
		}
		e.schedule(ep, min(ep.rtoAt, later(ep.lastHeard, int64(e.cfg.Timeout))))
		return
	}
	if ep.ackAt != 0 && now >= ep.ackAt {
		ep.ackAt = 0
		e.ackSoon(ep, true)
	}
	if ep.rtoAt != 0 && now >= ep.rtoAt {
		e.onRTO(ep)
	}
	if ep.paceWait && now >= ep.paceNext-ep.paceSlack() {
		ep.paceWait = false
		e.queueOutput(ep)
	}
	idle := int64(e.cfg.Timeout) / 3
	if now-ep.lastHeard >= idle && now >= ep.probeAt {
		e.sendCtl(ep, wire.OpProbe, wire.ReasonNone)
		ep.probeAt = later(now, int64(e.cfg.Timeout)/6)
	}
	e.schedule(ep, e.dueAt(ep))
}

// dueAt is when the earliest timer of a connection past its handshake is
// due: keepalive, retransmission, delayed ack or pacing.
func (e *engine) dueAt(ep *endpoint) int64 {
	next := e.keepaliveAt(ep)
	if ep.rtoAt != 0 {
		next = min(next, ep.rtoAt)
	}
	if ep.ackAt != 0 {
		next = min(next, ep.ackAt)
	}
	if ep.paceWait {
		next = min(next, ep.paceNext-ep.paceSlack())
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
		if ep.halfOpen || ep.state != StateEstablished {
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
