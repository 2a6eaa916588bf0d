package provider

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"
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
)

// seg is a segment of send data in its buffer: the payload sits at
// HeaderLen in the buffer, so the header is encoded in place.
type seg struct {
	seq    uint64
	sentAt int64 // last transmission; 0 before the first
	buf    uint32
	n      uint16
	fin    bool // a disconnect marker: no data, one offset of sequence space
	sacked bool
	rtx    bool   // marked lost: retransmit at the next output
	resent bool   // retransmitted at least once (no RTT sample: Karn)
	fast   bool   // already fast-retransmitted in this loss episode
	tx     uint64 // engine.txCount at its latest transmission: orders them, ties of the clock included
}

func (s *seg) end() uint64 {
	if s.fin {
		return s.seq + 1
	}
	return s.seq + uint64(s.n)
}

// rseg is received in-order data in a buffer: bytes [off, end).
type rseg struct {
	buf      uint32
	off, end uint16
}

// oseg is received data beyond a hole.
type oseg struct {
	seq uint64
	buf uint32
	n   uint16
}

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
	// by another frame first, and then uses minPeerDatagram).
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

	// Send side: segs is a ring; the first sent segments from shead are in
	// flight, the rest queued.
	segs     []seg
	shead    int
	sent     int // segments transmitted and not yet acknowledged
	slen     int // segments in the ring
	sndUna   uint64
	sndNxt   uint64 // highest offset transmitted + 1
	sndEnd   uint64 // end of queued data
	sndRight uint64 // the peer's window edge: we may send below it
	dupAcks  int
	finQd    bool // Shutdown called: no more data
	finAcked bool
	starved  bool // a write found no buffer; retry when one is freed
	winWait  bool // a write stopped at its share beyond the peer's window
	beyond   int  // bytes queued beyond the peer's window edge (in engine.sendBeyond)

	// Small segments (below the MSS): smallEnd is the end of the latest
	// one sent, holdEnd of the latest one sent with FlagAckReq. While
	// that one is unacknowledged, a further small segment waits and
	// gathers the writes that follow (held) until its ack or a full
	// segment. See sendData.
	smallEnd, holdEnd uint64
	held              bool

	// sackKnown: below this offset the peer's latest SACK report listed
	// every block it holds, so a segment there that no block covers is
	// missing; above it the report may have left blocks out (see
	// fillSACK), and no loss is inferred there.
	sackKnown uint64

	// Retransmission timer, RFC 6298.
	rtt     rttStats
	rtoAt   int64 // 0: stopped
	synSent int64 // when the connect request went out
	synOnce bool  // it went out once: its answer is an RTT sample

	// Receive side.
	rcvNxt     uint64
	rq         []rseg // ring of in-order data
	rqHead     int
	rqLen      int
	rqBytes    int
	ooo        []oseg // sorted by seq
	oooMax     int
	lastOOO    uint64
	finPending bool
	finSeq     uint64
	eof        bool
	ackNow     bool
	ackAt      int64  // delayed ack due; 0: none
	dupIn      int    // duplicates received since new data: our acks may be getting lost
	probeAck   bool   // send the owed ack as a probe (see onData)
	answer     bool   // the owed ack answers a probe: it goes out as an answer (see onProbe)
	unacked    int    // in-order segments not yet acknowledged
	lastEdge   uint64 // right edge of the window we granted: it never moves left
	need       int    // receive buffers the granted window would still take (see recommit)
	counted    int    // the part of need counted in recvCommitted: at most the fair share
	rwaiting   bool   // in engine.rwait: its window was held back for want of buffers

	// Liveness.
	lastHeard int64
	probeAt   int64
	lastErr   error // last error the link reported sending to the peer
	// Frames that vanish for their size: bigLost counts timer expiries
	// that found the same large segment unacknowledged although the peer
	// answered the probe sent at the previous one (bigAt). See
	// lostForSize.
	bigLost int
	bigAt   int64

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
	datagramsIn, datagramsOut                           atomic.Uint64
	dataOut, retransmits, fastRetransmits, rtoExpiries  atomic.Uint64
	acksOut, probesOut, resetsOut, resetsIn, rejectsOut atomic.Uint64
	resetsChallenged                                    atomic.Uint64
	retriesOut, cookiesIn, halfOpenExpired              atomic.Uint64
	dropMalformed, dropChecksum, dropBadToken           atomic.Uint64
	dropUnknownConn, dropOutOfWindow, dropDuplicate     atomic.Uint64
	dropNoBuffer, dropBadAck, dropBadCookie             atomic.Uint64
	reneged                                             atomic.Uint64
	deadPeers, sendErrors, tooBig                       atomic.Uint64
	unreachIn, dropUnreach                              atomic.Uint64
	endpoints, halfOpen                                 atomic.Int64 // gauges
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

	timers  []*endpoint // min-heap on wakeAt
	changed []*endpoint
	output  []*endpoint

	now         int64
	linkErr     error // last error of Flush
	lastSendErr error // error of the last Send, for sendCtl
	unflushed   int   // datagrams sent since the last Flush
	hdr         Header
	rhdr        Header
	ctl         []byte      // control frame scratch
	sackAll     []SACKBlock // fillSACK's scratch: every block of one endpoint
	txCount     uint64      // segments transmitted (see seg.tx)
	inputFn     func(netip.Addr, []byte)
	cookies     *cookieMAC

	st engineStats
}

func newEngine(link Link, cfg engineConfig, seed [32]byte) (*engine, error) {
	mtu := link.MTU()
	if mtu < HeaderLen+64 {
		return nil, configErr("link MTU %d is too small: sdx needs at least %d", mtu, HeaderLen+64)
	}
	if mtu > 65535 {
		mtu = 65535
	}
	e := &engine{
		link:     link,
		cfg:      cfg,
		rng:      rand.New(rand.NewChaCha8(seed)),
		mtu:      mtu,
		mss:      mtu - HeaderLen,
		credit:   newCredit(newBufPool(cfg.Buffers, mtu), mtu-HeaderLen),
		eps:      make([]*endpoint, 0, 64),
		ports:    make(map[uint16]*endpoint),
		children: make(map[connKey]*endpoint),
		quiet:    make(map[connKey]int64),
		ctl:      make([]byte, HeaderLen+sackLen*MaxSACK),
	}
	e.inputFn = e.input
	link.SetUnreachable(e.unreachable)
	var key [16]byte
	for i := range key {
		key[i] = byte(e.rng.Uint32())
	}
	e.cookies = newCookieMAC(key)
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
		s := &ep.segs[(ep.shead+i)&(len(ep.segs)-1)]
		if s.buf != noBuf {
			e.freeBuf(s.buf)
		}
		*s = seg{}
	}
	ep.shead, ep.slen, ep.sent = 0, 0, 0
	for i := range ep.rqLen {
		r := &ep.rq[(ep.rqHead+i)&(len(ep.rq)-1)]
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
	e.sendCtl(ep, OpConnect, ReasonNone)
	ep.synSent, ep.synOnce = e.now, true
	ep.rtoAt = later(e.now, ep.rtt.rto)
	e.schedule(ep, ep.rtoAt)
	return nil
}

// initConn gives an endpoint, whose mss is set, its rings and timers.
func (e *engine) initConn(ep *endpoint) {
	e.sizeRings(ep)
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
		max = minPeerDatagram
	}
	return min(e.mtu, max) - HeaderLen
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

// write copies as much of b into the send buffer as fits and returns how
// many bytes it took.
func (e *engine) write(ep *endpoint, b []byte) (int, error) {
	switch {
	case ep.state == StateFailed:
		return 0, ep.err
	case ep.state != StateEstablished:
		return 0, ErrNotConn
	case ep.finQd:
		return 0, ErrShutdown
	}
	n := 0
	mask := len(ep.segs) - 1
	for n < len(b) && int(ep.sndEnd-ep.sndUna) < e.cfg.SendBuffer {
		room := e.cfg.SendBuffer - int(ep.sndEnd-ep.sndUna)
		if ep.slen > ep.sent {
			// The newest segment is not yet transmitted: fill it up.
			s := &ep.segs[(ep.shead+ep.slen-1)&mask]
			if int(s.n) < ep.mss {
				k := copy(e.pool.buf(s.buf)[HeaderLen+int(s.n):HeaderLen+ep.mss], b[n:min(len(b), n+room)])
				s.n += uint16(k)
				n += k
				ep.sndEnd += uint64(k)
				continue
			}
		}
		if ep.slen == len(ep.segs) {
			break
		}
		if e.sendHeld() >= e.sendCap {
			e.starve(ep)
			break
		}
		if !e.mayQueue(ep) {
			break
		}
		buf, _ := e.pool.get(placeSendQueued)
		k := copy(e.pool.buf(buf)[HeaderLen:HeaderLen+ep.mss], b[n:min(len(b), n+room)])
		ep.segs[(ep.shead+ep.slen)&mask] = seg{seq: ep.sndEnd, buf: buf, n: uint16(k)}
		ep.slen++
		n += k
		ep.sndEnd += uint64(k)
		e.rebeyond(ep)
	}
	if n > 0 {
		e.rebeyond(ep)
		e.queueOutput(ep)
	}
	return n, nil
}

// writable reports whether write would take at least one byte, or fail.
func (e *engine) writable(ep *endpoint) bool {
	if ep.state != StateEstablished || ep.finQd {
		return true
	}
	return int(ep.sndEnd-ep.sndUna) < e.cfg.SendBuffer && (ep.slen < len(ep.segs) || ep.slen > ep.sent) &&
		e.sendHeld() < e.sendCap
}

// shutdown ends the send direction: a disconnect marker follows the data.
func (e *engine) shutdown(ep *endpoint) error {
	switch {
	case ep.state == StateFailed:
		return ep.err
	case ep.state != StateEstablished:
		return ErrNotConn
	case ep.finQd:
		return nil
	}
	if ep.slen == len(ep.segs) {
		return ErrNoBufs
	}
	ep.segs[(ep.shead+ep.slen)&(len(ep.segs)-1)] = seg{seq: ep.sndEnd, buf: noBuf, fin: true}
	ep.slen++
	ep.sndEnd++
	ep.finQd = true
	e.queueOutput(ep)
	return nil
}

// read copies received in-order data into b. It returns 0, nil at the end
// of the stream and 0, err when the connection failed; 0, nil with
// readable false means nothing is there yet.
func (e *engine) read(ep *endpoint, b []byte) (int, error) {
	if ep.state == StateFailed {
		return 0, ep.err
	}
	if ep.state != StateEstablished {
		return 0, ErrNotConn
	}
	n := 0
	mask := len(ep.rq) - 1
	for n < len(b) && ep.rqLen > 0 {
		r := &ep.rq[ep.rqHead]
		k := copy(b[n:], e.pool.buf(r.buf)[r.off:r.end])
		r.off += uint16(k)
		n += k
		ep.rqBytes -= k
		if r.off == r.end {
			e.freeBuf(r.buf)
			*r = rseg{}
			ep.rqHead = (ep.rqHead + 1) & mask
			ep.rqLen--
		}
	}
	if len(ep.ooo) > 0 && ep.ooo[0].seq <= ep.rcvNxt {
		e.pullOOO(ep)
		e.checkFin(ep)
	}
	e.recommit(ep)
	if n > 0 {
		// Window update: the edge we advertised was less than an MSS
		// away, or would move by at least half the new window.
		edge := ep.rcvNxt + uint64(e.window(ep))
		if grow := edge - ep.lastEdge; edge > ep.lastEdge && grow >= uint64(ep.mss) &&
			(ep.lastEdge-ep.rcvNxt < uint64(ep.mss) || grow >= (edge-ep.rcvNxt)/2) {
			e.ackSoon(ep, true)
		}
	}
	return n, nil
}

// readable reports whether read would return data, end of stream or an
// error.
func (e *engine) readable(ep *endpoint) bool {
	return ep.rqLen > 0 || ep.eof || ep.state == StateFailed
}

// abort is the hard close: a connection sends a reset, a listener resets
// its backlog, and the endpoint's memory and port are freed at once. It
// returns ErrNetDown when the link failed to take the reset.
func (e *engine) abort(ep *endpoint) error {
	var err error
	switch ep.state {
	case StateConnecting, StateEstablished:
		if e.sendCtl(ep, OpReset, ReasonClosed) == ErrNetDown {
			err = ErrNetDown
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
	if ferr := e.flush(); ferr == ErrNetDown {
		err = ErrNetDown
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

// ackSoon asks for an ack: at once (now true) or within AckDelay.
func (e *engine) ackSoon(ep *endpoint, now bool) {
	if now {
		ep.ackNow = true
		e.queueOutput(ep)
		return
	}
	if ep.ackAt == 0 {
		ep.ackAt = later(e.now, int64(e.cfg.AckDelay))
		e.schedule(ep, ep.ackAt)
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
		e.heapUp(ep.heapIdx)
		return
	}
	ep.wakeAt = t
	ep.heapIdx = len(e.timers)
	e.timers = append(e.timers, ep)
	e.heapUp(ep.heapIdx)
}

func (e *engine) unschedule(ep *endpoint) {
	i := ep.heapIdx
	if i < 0 {
		return
	}
	last := len(e.timers) - 1
	e.heapSwap(i, last)
	e.timers[last] = nil
	e.timers = e.timers[:last]
	ep.heapIdx = -1
	if i < last {
		e.heapDown(i)
		e.heapUp(i)
	}
}

func (e *engine) heapSwap(i, j int) {
	e.timers[i], e.timers[j] = e.timers[j], e.timers[i]
	e.timers[i].heapIdx = i
	e.timers[j].heapIdx = j
}

func (e *engine) heapUp(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if e.timers[p].wakeAt <= e.timers[i].wakeAt {
			return
		}
		e.heapSwap(i, p)
		i = p
	}
}

func (e *engine) heapDown(i int) {
	n := len(e.timers)
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && e.timers[l].wakeAt < e.timers[m].wakeAt {
			m = l
		}
		if r < n && e.timers[r].wakeAt < e.timers[m].wakeAt {
			m = r
		}
		if m == i {
			return
		}
		e.heapSwap(i, m)
		i = m
	}
}

// nextTimer returns when the earliest timer is due, and false when none is
// armed.
func (e *engine) nextTimer() (int64, bool) {
	if len(e.timers) == 0 {
		return 0, false
	}
	return e.timers[0].wakeAt, true
}

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
func (e *engine) receive(now int64) int {
	e.now = now
	return e.link.Receive(rxBatch, e.inputFn)
}

// runTimers runs the timers that are due.
func (e *engine) runTimers(now int64) bool {
	e.now = now
	fired := false
	for len(e.timers) > 0 && e.timers[0].wakeAt <= now {
		ep := e.timers[0]
		e.unschedule(ep)
		e.onTimer(ep)
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
	return err
}

// ---- input ------------------------------------------------------------

func (e *engine) input(from netip.Addr, b []byte) {
	e.st.datagramsIn.Add(1)
	h := &e.rhdr
	payload, err := h.Decode(b)
	if err != nil {
		if err == errChecksum {
			e.st.dropChecksum.Add(1)
		} else {
			e.st.dropMalformed.Add(1)
		}
		return
	}
	ann := 0
	if h.Op == OpConnect || h.Op == OpAccept {
		var ok bool
		if ann, ok = announced(payload); !ok {
			e.st.dropMalformed.Add(1)
			return
		}
	}
	if h.Op == OpConnect {
		e.onConnect(from, h, ann)
		return
	}
	ep := e.lookup(h.DstConn)
	if ep == nil && h.Op == OpReset && h.DstConn == 0 {
		// A connector that closed before it learnt our id.
		ep = e.children[connKey{peer: from, id: h.SrcConn, token: h.Token}]
		if ep != nil && ep.state == StateEstablished {
			ep.peerID = h.SrcConn
		}
	}
	if ep == nil || !ep.state.IsConnection() {
		e.st.dropUnknownConn.Add(1)
		if h.Op != OpReset && h.Op != OpReject && h.Op != OpRetry {
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
	switch h.Op {
	case OpReject:
		if ep.state == StateConnecting {
			e.fail(ep, ErrConnRefused)
		}
		return
	case OpReset:
		e.onReset(ep, h.Seq)
		return
	case OpRetry:
		if ep.state == StateConnecting {
			e.onRetry(ep, h)
		}
		return
	}
	if ep.confirming && h.Op != OpAccept {
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
		e.established(ep, h, ann)
	case h.Op == OpAccept:
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
		}
	}
	if h.Flags&FlagAck != 0 {
		e.onAck(ep, h)
		if ep.state != StateEstablished {
			return
		}
	}
	switch h.Op {
	case OpData:
		e.onData(ep, h.Seq, payload, h.Flags&FlagAckReq != 0)
	case OpDisconnect:
		e.onFin(ep, h.Seq)
	case OpProbe:
		e.onProbe(ep, h)
	}
	e.recommit(ep)
}

func (e *engine) established(ep *endpoint, h *Header, ann int) {
	ep.peerID = h.SrcConn
	ep.state = StateEstablished
	// Nothing is queued yet: the rings may change with the segment size.
	ep.mss, ep.announced = e.peerMSS(ann), ann > 0
	e.sizeRings(ep)
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
func (e *engine) onRetry(ep *endpoint, h *Header) {
	if h.Seq == 0 || h.Seq == ep.cookie {
		return
	}
	ep.cookie = h.Seq
	e.sendCtl(ep, OpConnect, ReasonNone)
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
	// Its window may now open past the half-open one.
	e.ackSoon(c, true)
}

func (e *engine) onConnect(from netip.Addr, h *Header, ann int) {
	key := connKey{peer: from, id: h.SrcConn, token: h.Token}
	if c := e.children[key]; c != nil {
		if c.state == StateEstablished {
			e.sendCtl(c, OpAccept, ReasonNone) // our accept was lost
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
	reason := ReasonNone
	switch {
	case l == nil || l.state != StateListening:
		reason = ReasonNoListener
	case len(l.backlog) >= l.backlogMax+l.acceptWait:
		reason = ReasonBacklogFull
	case !proven && len(l.half) >= l.backlogMax:
		// Under a flood: keep nothing, and let the connector prove
		// that it is at its address by echoing a cookie.
		e.st.retriesOut.Add(1)
		e.reply(from, h, OpRetry, ReasonNone, e.cookies.cookie(from, h, e.now))
		return
	}
	var c *endpoint
	if reason == ReasonNone {
		var err error
		if c, err = e.newEndpoint(); err != nil {
			reason = ReasonNoResources
		}
	}
	if reason != ReasonNone {
		e.st.rejectsOut.Add(1)
		e.reply(from, h, OpReject, reason, 0)
		return
	}
	c.mss, c.announced = e.peerMSS(ann), ann > 0
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
	if proven {
		l.backlog = append(l.backlog, c)
		e.sendCtl(c, OpAccept, ReasonNone)
		e.schedule(c, e.keepaliveAt(c))
		e.notify(l, evIncoming)
		return
	}
	// Half-open until the connector answers the accept, which is sent
	// again on the retransmission timer, maxAcceptTries times in all.
	c.halfOpen = true
	l.half = append(l.half, c)
	e.st.halfOpen.Add(1)
	e.sendCtl(c, OpAccept, ReasonNone)
	c.tries = 1
	c.synSent, c.synOnce = e.now, true
	c.rtoAt = later(e.now, c.rtt.rto)
	e.schedule(c, c.rtoAt)
}

// resetUnknown answers a frame for a connection we do not have with a
// reset carrying the frame's own ids and token, so its sender accepts it.
func (e *engine) resetUnknown(from netip.Addr, h *Header) {
	e.st.resetsOut.Add(1)
	// The frame's ack is where its sender's receive window starts: the
	// sequence number its sender takes a reset at (see onReset).
	var seq uint64
	if h.Flags&FlagAck != 0 {
		seq = h.Ack
	}
	e.reply(from, h, OpReset, ReasonUnknownConn, seq)
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
func (e *engine) reply(to netip.Addr, h *Header, op Opcode, reason Reason, seq uint64) {
	r := &e.hdr
	*r = Header{
		Op: op, Reason: reason,
		SrcPort: h.DstPort, DstPort: h.SrcPort,
		SrcConn: h.DstConn, DstConn: h.SrcConn,
		Token: h.Token,
		Seq:   seq,
	}
	n := r.Put(e.ctl, 0)
	e.sendRaw(nil, to, e.ctl[:n])
}

// onAck processes the ack, window and SACK blocks of a frame.
func (e *engine) onAck(ep *endpoint, h *Header) {
	ack := h.Ack
	if ack > ep.sndNxt {
		e.st.dropBadAck.Add(1)
		return
	}
	grew := false
	if edge := ack + uint64(h.Window); edge > ep.sndRight {
		ep.sndRight = edge
		grew = true
	}
	mask := len(ep.segs) - 1
	if ack > ep.sndUna {
		var sample int64 = -1
		freed, repaired := false, false
		for ep.sent > 0 {
			s := &ep.segs[ep.shead]
			if s.end() > ack {
				break
			}
			if s.resent {
				// The ack moved because a hole was repaired: it came
				// when the retransmission arrived, late for every
				// segment above it, SACKed or not (a SACK report may
				// leave blocks out). No sample from this ack.
				repaired = true
			} else if !s.sacked {
				// A SACKed segment's cumulative ack comes late, when
				// the hole before it is filled: no sample from it.
				sample = e.now - s.sentAt
			}
			if s.fin {
				ep.finAcked = true
				e.notify(ep, evWritable) // a graceful close waits for it
			}
			if s.buf != noBuf {
				e.freeBuf(s.buf)
				freed = true
			}
			*s = seg{}
			ep.shead = (ep.shead + 1) & mask
			ep.sent--
			ep.slen--
		}
		ep.sndUna = ack
		ep.dupAcks = 0
		ep.bigLost, ep.bigAt = 0, 0
		if sample >= 0 && !repaired {
			ep.rtt.sample(sample)
		}
		ep.rtt.settle(e.rtoBounds())
		if ep.sent > 0 {
			ep.rtoAt = later(e.now, ep.rtt.rto)
			e.schedule(ep, ep.rtoAt)
		} else {
			ep.rtoAt = 0
		}
		if freed {
			e.notify(ep, evWritable)
		}
	} else if ack == ep.sndUna && ep.sent > 0 && h.Op == OpAck && !grew {
		ep.dupAcks++
		if ep.dupAcks == 3 {
			for i := range ep.sent {
				s := &ep.segs[(ep.shead+i)&mask]
				if !s.sacked {
					if !s.fast && !s.rtx {
						s.rtx, s.fast = true, true
						e.st.fastRetransmits.Add(1)
						e.queueOutput(ep)
					}
					break
				}
			}
		}
	}
	if h.Op == OpAck || h.Op == OpProbe && h.Flags&FlagAnswer != 0 {
		// A SACK report (data frames carry none): full, it may have left
		// out blocks above the highest of its ascending part.
		ep.sackKnown = math.MaxUint64
		if h.NSACK == MaxSACK {
			ep.sackKnown = 0
			for _, b := range h.SACK[1:h.NSACK] {
				ep.sackKnown = max(ep.sackKnown, b.End)
			}
		}
		e.unSACK(ep, h)
	}
	if h.NSACK > 0 && ep.sent > 0 {
		e.onSACK(ep, h)
	}
	if ep.slen > ep.sent {
		e.queueOutput(ep) // new credit, or a persist timer to arm
	}
	if ep.beyond > 0 || ep.winWait {
		e.rebeyond(ep)
	}
}

// unSACK clears the SACK mark of every segment that a SACK report should
// list, being below sackKnown, and does not: the receiver dropped it
// (renege), and it must be sent again.
func (e *engine) unSACK(ep *endpoint, h *Header) {
	mask := len(ep.segs) - 1
	for i := range ep.sent {
		s := &ep.segs[(ep.shead+i)&mask]
		if !s.sacked || s.end() > ep.sackKnown {
			continue
		}
		listed := false
		for _, b := range h.SACK[:h.NSACK] {
			if s.seq >= b.Start && s.end() <= b.End {
				listed = true
				break
			}
		}
		if !listed {
			s.sacked = false
		}
	}
}

// onSACK marks SACKed segments and retransmits, once, each unSACKed
// segment with three SACKed segments above it.
func (e *engine) onSACK(ep *endpoint, h *Header) {
	mask := len(ep.segs) - 1
	var sample int64 = -1
	for b := range int(h.NSACK) {
		blk := h.SACK[b]
		for i := range ep.sent {
			s := &ep.segs[(ep.shead+i)&mask]
			if !s.sacked && s.seq >= blk.Start && s.end() <= blk.End {
				s.sacked = true
				// Only the first block holds the segment whose arrival
				// sent this ack; the others may be reported long after
				// theirs (fillSACK), which is no round trip.
				if r := e.now - s.sentAt; b == 0 && !s.resent && (sample < 0 || r < sample) {
					sample = r // the newest segment: the freshest round trip
				}
			}
		}
	}
	if sample >= 0 {
		ep.rtt.sample(sample)
	}
	above := 0
	var newest uint64 // the latest transmission the receiver has SACKed
	for i := range ep.sent {
		if s := &ep.segs[(ep.shead+i)&mask]; s.sacked {
			newest = max(newest, s.tx)
		}
	}
	for i := ep.sent - 1; i >= 0; i-- {
		s := &ep.segs[(ep.shead+i)&mask]
		if s.sacked {
			above++
			continue
		}
		if s.fast && !s.rtx && s.tx < newest && s.end() <= ep.sackKnown {
			// Its fast retransmission was lost: something sent after
			// it has arrived. Again now, not at the next timer expiry,
			// which at 20% loss is most of the recovery time.
			s.rtx = true
			e.st.fastRetransmits.Add(1)
			e.queueOutput(ep)
			continue
		}
		if above >= 3 && !s.fast && !s.rtx && s.end() <= ep.sackKnown {
			s.rtx, s.fast = true, true
			e.st.fastRetransmits.Add(1)
			e.queueOutput(ep)
		}
	}
}

// onData stores a data segment and decides when to ack it: at once when
// the sender asked (req), after a hole, or every ackEvery segments; else
// within AckDelay, or on the next frame we send.
func (e *engine) onData(ep *endpoint, seq uint64, p []byte, req bool) {
	if len(p) == 0 {
		return
	}
	end := seq + uint64(len(p))
	if end <= ep.rcvNxt {
		e.st.dropDuplicate.Add(1)
		e.dupAck(ep) // our ack may have been lost
		return
	}
	ep.dupIn = 0
	if seq < ep.rcvNxt {
		p = p[ep.rcvNxt-seq:]
		seq = ep.rcvNxt
	}
	if end > max(ep.lastEdge, ep.rcvNxt) || (ep.finPending && end > ep.finSeq) || ep.eof {
		e.st.dropOutOfWindow.Add(1)
		e.ackSoon(ep, true)
		return
	}
	if seq == ep.rcvNxt {
		if !e.appendInOrder(ep, p) && (!e.renege(ep) || !e.appendInOrder(ep, p)) {
			e.st.dropNoBuffer.Add(1)
			return
		}
		ep.rcvNxt = end
		hadHole := len(ep.ooo) > 0
		e.pullOOO(ep)
		e.checkFin(ep)
		e.notify(ep, evReadable)
		ep.unacked++
		e.ackSoon(ep, hadHole || req || ep.unacked >= ackEvery)
		return
	}
	// Beyond a hole.
	i := 0
	for i < len(ep.ooo) && ep.ooo[i].seq < seq {
		i++
	}
	if i > 0 && ep.ooo[i-1].seq+uint64(ep.ooo[i-1].n) >= end ||
		i < len(ep.ooo) && ep.ooo[i].seq == seq && uint64(ep.ooo[i].n) >= uint64(len(p)) {
		e.st.dropDuplicate.Add(1)
		e.ackSoon(ep, true)
		return
	}
	if len(ep.ooo) >= ep.oooMax || e.uncommitted() <= 0 {
		// Out-of-order data takes only buffers no window is counting on.
		e.st.dropNoBuffer.Add(1)
		e.ackSoon(ep, true)
		return
	}
	buf, ok := e.pool.get(placeOutOfOrder)
	if !ok {
		e.st.dropNoBuffer.Add(1)
		e.ackSoon(ep, true)
		return
	}
	copy(e.pool.buf(buf), p)
	ep.ooo = append(ep.ooo, oseg{})
	copy(ep.ooo[i+1:], ep.ooo[i:])
	ep.ooo[i] = oseg{seq: seq, buf: buf, n: uint16(len(p))}
	ep.lastOOO = seq
	e.ackSoon(ep, true)
}

// onProbe answers a probe at once, unless it is itself an answer. The
// answer is a probe marked FlagAnswer, not a pure ack: the prober is
// waiting for it (a window that opened, a sign of life), and where every
// pure ack is lost an ack would never come, while the peer probes on
// until the dead-peer bound. An answer is never answered, so two ends
// cannot probe each other for ever.
func (e *engine) onProbe(ep *endpoint, h *Header) {
	if h.Flags&FlagAnswer != 0 {
		return // its ack and window were taken in onAck
	}
	ep.answer = true
	e.ackSoon(ep, true)
}

// dupAck answers data the sender repeats. The first repeat gets an ack;
// from the second on, the sender evidently does not hear our acks, so the
// ack goes out as a probe, a frame that also carries ack and window and
// that the peer answers: an ack path that has lost every pure ack still
// delivers acks.
func (e *engine) dupAck(ep *endpoint) {
	ep.dupIn++
	if ep.dupIn >= 2 {
		ep.probeAck = true
	}
	e.ackSoon(ep, true)
}

// renege drops the endpoint's out-of-order data to make room for the
// in-order segment that the pool had no buffer for: otherwise data beyond
// holes could hold every buffer while the segments that fill the holes
// find none. The sender clears its SACK marks after a second timer expiry
// (RFC 2018 section 8) and so retransmits what was dropped. It reports
// whether it freed anything.
func (e *engine) renege(ep *endpoint) bool {
	if len(ep.ooo) == 0 {
		return false
	}
	for i := range ep.ooo {
		e.freeBuf(ep.ooo[i].buf)
	}
	clear(ep.ooo)
	ep.ooo = ep.ooo[:0]
	e.st.reneged.Add(1)
	return true
}

// appendInOrder copies in-order data into the receive queue, filling the
// last buffer's free space first.
func (e *engine) appendInOrder(ep *endpoint, p []byte) bool {
	mask := len(ep.rq) - 1
	need := 0
	if ep.rqLen > 0 {
		t := &ep.rq[(ep.rqHead+ep.rqLen-1)&mask]
		need = max(len(p)-(e.pool.size-int(t.end)), 0)
	} else {
		need = len(p)
	}
	nbufs := e.buffersFor(need)
	if nbufs > e.pool.nfree() || ep.rqLen+nbufs > len(ep.rq) {
		return false
	}
	// Buffers come from what the window has counted, or from what the
	// receive half has uncommitted: data filling the uncounted part of
	// an old window (see recommit) never takes the send half's.
	if !e.mayTake(nbufs, ep.counted) {
		return false
	}
	if ep.rqLen > 0 {
		t := &ep.rq[(ep.rqHead+ep.rqLen-1)&mask]
		k := copy(e.pool.buf(t.buf)[t.end:], p)
		t.end += uint16(k)
		p = p[k:]
		ep.rqBytes += k
	}
	for len(p) > 0 {
		buf, _ := e.pool.get(placeRecvQueued)
		k := copy(e.pool.buf(buf), p)
		ep.rq[(ep.rqHead+ep.rqLen)&mask] = rseg{buf: buf, end: uint16(k)}
		ep.rqLen++
		p = p[k:]
		ep.rqBytes += k
	}
	return true
}

// pullOOO moves out-of-order segments that the cumulative ack has reached
// into the receive queue.
func (e *engine) pullOOO(ep *endpoint) {
	mask := len(ep.rq) - 1
	k := 0
	for k < len(ep.ooo) && ep.ooo[k].seq <= ep.rcvNxt {
		o := ep.ooo[k]
		end := o.seq + uint64(o.n)
		if end <= ep.rcvNxt {
			e.freeBuf(o.buf)
			k++
			continue
		}
		if ep.rqLen == len(ep.rq) {
			break // the reader frees room; SACKed data is never dropped
		}
		k++
		off := uint16(ep.rcvNxt - o.seq)
		e.pool.move(o.buf, placeRecvQueued)
		ep.rq[(ep.rqHead+ep.rqLen)&mask] = rseg{buf: o.buf, off: off, end: o.n}
		ep.rqLen++
		ep.rqBytes += int(o.n - off)
		ep.rcvNxt = end
	}
	if k > 0 {
		n := copy(ep.ooo, ep.ooo[k:])
		clear(ep.ooo[n:])
		ep.ooo = ep.ooo[:n]
	}
}

func (e *engine) onFin(ep *endpoint, seq uint64) {
	if ep.eof || seq < ep.rcvNxt {
		e.dupAck(ep)
		return
	}
	ep.finPending, ep.finSeq = true, seq
	e.checkFin(ep)
	e.ackSoon(ep, true)
}

func (e *engine) checkFin(ep *endpoint) {
	if ep.finPending && !ep.eof && ep.rcvNxt == ep.finSeq {
		ep.eof = true
		ep.rcvNxt++
		e.notify(ep, evReadable)
	}
}

// ---- output -----------------------------------------------------------

// sendData transmits retransmissions, then new segments within the peer's
// window, then a pure ack if one is still owed. It reports whether it sent
// anything.
func (e *engine) sendData(ep *endpoint) bool {
	mask := len(ep.segs) - 1
	sent := false
	acked := false
	for i := range ep.sent {
		s := &ep.segs[(ep.shead+i)&mask]
		if !s.rtx || s.sacked {
			s.rtx = false
			continue
		}
		// A retransmission asks for its ack at once: the sender is
		// recovering, and it may be the last segment of a burst.
		if !e.sendSeg(ep, s, true) {
			e.queueOutput(ep)
			return sent
		}
		s.rtx = false
		s.resent = true
		e.st.retransmits.Add(1)
		sent, acked = true, true
	}
	// The sender asks for an ack at once (FlagAckReq) on the segment
	// that takes what it has in flight past half of what it may have
	// (its send buffer or the peer's window): the ack then comes back
	// while the other half is still going out.
	var half uint64
	if ep.sndRight > ep.sndUna {
		half = min(uint64(e.cfg.SendBuffer), ep.sndRight-ep.sndUna) / 2
	}
	for ep.sent < ep.slen {
		s := &ep.segs[(ep.shead+ep.sent)&mask]
		if !s.fin && s.seq+uint64(s.n) > ep.sndRight {
			break
		}
		req := s.seq-ep.sndUna < half && s.end()-ep.sndUna >= half
		if !s.fin && int(s.n) < ep.mss && ep.sent+1 == ep.slen {
			// The newest segment, not full: the tail of what was
			// written. It goes at once, unless a small segment sent
			// with FlagAckReq is unacknowledged: then it waits for that
			// ack, which the peer sends at once, and gathers the writes
			// made meanwhile (Nagle's rule as Minshall refined it, with
			// the ack asked for). A lone message never waits; the
			// second of two in a row goes at once too, asking for its
			// ack, and the third waits at most for that.
			if ep.holdEnd > ep.sndUna {
				ep.held = true
				break
			}
			if ep.smallEnd > ep.sndUna || ep.held {
				req = true
				ep.holdEnd = s.end()
			}
			ep.held = false
			ep.smallEnd = s.end()
		}
		if s.buf != noBuf {
			e.pool.move(s.buf, placeInFlight)
		}
		if !e.sendSeg(ep, s, req) {
			if s.buf != noBuf {
				e.pool.move(s.buf, placeSendQueued)
			}
			e.queueOutput(ep)
			return sent
		}
		ep.sent++
		ep.sndNxt = max(ep.sndNxt, s.end())
		sent, acked = true, true
	}
	if ep.sent > 0 && ep.rtoAt == 0 {
		ep.rtoAt = later(e.now, ep.rtt.rto)
		e.schedule(ep, ep.rtoAt)
	}
	if ep.sent == 0 && ep.slen > 0 && ep.rtoAt == 0 {
		// Window closed with data waiting: probe with the RTO's backoff.
		ep.rtoAt = later(e.now, ep.rtt.rto)
		e.schedule(ep, ep.rtoAt)
	}
	if ep.ackNow && !acked {
		op := OpAck
		switch {
		case ep.probeAck:
			op = OpProbe // asks for an answer, which answers a probe too
		case ep.answer:
			op = opAnswer
		}
		if e.sendCtl(ep, op, ReasonNone) == ErrNoBufs {
			e.queueOutput(ep)
			return sent
		}
		sent = true
	}
	return sent
}

// sendSeg encodes a segment's header in place and sends it, with
// FlagAckReq when req. It reports false when the link is out of transmit
// slots even after a flush.
func (e *engine) sendSeg(ep *endpoint, s *seg, req bool) bool {
	if s.fin {
		e.fillHeader(ep, OpDisconnect, ReasonNone)
		e.hdr.Seq = s.seq
		n := e.hdr.Put(e.ctl, 0)
		if !e.sendRaw(ep, ep.raddr, e.ctl[:n]) {
			return false
		}
	} else {
		e.fillHeader(ep, OpData, ReasonNone)
		e.hdr.Seq = s.seq
		if req {
			e.hdr.Flags |= FlagAckReq
		}
		b := e.pool.buf(s.buf)
		n := e.hdr.Put(b, int(s.n))
		if !e.sendRaw(ep, ep.raddr, b[:n]) {
			return false
		}
		e.st.dataOut.Add(1)
	}
	s.sentAt = e.now
	e.txCount++
	s.tx = e.txCount
	e.acked(ep)
	return true
}

// fillHeader fills e.hdr for a frame on ep's connection.
func (e *engine) fillHeader(ep *endpoint, op Opcode, reason Reason) {
	h := &e.hdr
	*h = Header{
		Op:      op,
		Reason:  reason,
		SrcPort: ep.lport,
		DstPort: ep.rport,
		SrcConn: ep.id,
		DstConn: ep.peerID,
		Token:   ep.token,
		Seq:     ep.sndNxt,
	}
	if op != OpReset {
		h.Window = e.window(ep)
		e.grant(ep, h.Window)
	}
	if ep.state == StateEstablished && op != OpReset {
		h.Flags = FlagAck
		h.Ack = ep.rcvNxt
	}
}

// acked records that a frame carrying our ack and window went out.
func (e *engine) acked(ep *endpoint) {
	if e.hdr.Flags&FlagAck == 0 {
		return
	}
	ep.ackNow = false
	ep.probeAck = false
	ep.answer = false
	ep.ackAt = 0
	ep.unacked = 0
}

// opAnswer is sendCtl's name for a probe that answers a probe (OpProbe
// with FlagAnswer); it never goes on the wire as an opcode.
const opAnswer Opcode = 0x80 | OpProbe

// sendCtl sends a frame without data on ep's connection: connect, accept,
// ack (with SACK blocks), probe, answer (with SACK blocks) or reset. It
// returns the link's error.
func (e *engine) sendCtl(ep *endpoint, op Opcode, reason Reason) error {
	e.fillHeader(ep, op, reason)
	h := &e.hdr
	switch op {
	case OpConnect:
		h.DstConn = 0
		h.Seq = ep.cookie
	case OpAccept:
		h.Flags = FlagAck
	case OpAck:
		e.fillSACK(ep, h)
		e.st.acksOut.Add(1)
	case opAnswer:
		h.Op = OpProbe
		h.Flags |= FlagAnswer
		e.fillSACK(ep, h)
		e.st.probesOut.Add(1) // on the wire it is a probe
	case OpProbe:
		e.st.probesOut.Add(1)
	case OpReset:
		e.st.resetsOut.Add(1)
	}
	plen := 0
	if op == OpConnect || op == OpAccept {
		plen = putAnnounce(e.ctl[h.Len():], e.mtu)
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

// fillSACK describes the out-of-order data in up to MaxSACK blocks: the
// block holding the newest segment first (RFC 2018), then the others in
// order from the lowest. A receiver with more blocks than fit (20% loss
// makes dozens in a window) so reports every block below the highest it
// lists, and the sender can tell where its knowledge ends: see sackKnown.
func (e *engine) fillSACK(ep *endpoint, h *Header) {
	h.NSACK = 0
	if len(ep.ooo) == 0 {
		return
	}
	all := e.sackAll[:0]
	newest := -1
	for i := 0; i < len(ep.ooo); {
		start := ep.ooo[i].seq
		end := start + uint64(ep.ooo[i].n)
		for i++; i < len(ep.ooo) && ep.ooo[i].seq <= end; i++ {
			end = max(end, ep.ooo[i].seq+uint64(ep.ooo[i].n))
		}
		if ep.lastOOO >= start && ep.lastOOO < end {
			newest = len(all)
		}
		all = append(all, SACKBlock{Start: start, End: end})
	}
	e.sackAll = all[:0]
	add := func(b SACKBlock) {
		b.Start = max(b.Start, h.Ack)
		if b.End <= b.Start || b.End-h.Ack > 1<<32-1 {
			return
		}
		h.SACK[h.NSACK] = b
		h.NSACK++
	}
	if newest >= 0 {
		add(all[newest])
	}
	for k := range all {
		if int(h.NSACK) >= MaxSACK {
			break
		}
		if k != newest {
			add(all[k])
		}
	}
}

// sendRaw hands a datagram to the link, flushing once if the link is out
// of transmit slots. It reports false only in that case.
func (e *engine) sendRaw(ep *endpoint, to netip.Addr, b []byte) bool {
	err := e.link.Send(to, b)
	if err == ErrNoBufs || errors.Is(err, ErrNoBufs) {
		e.flush()
		err = e.link.Send(to, b)
		if errors.Is(err, ErrNoBufs) {
			return false
		}
	}
	e.st.datagramsOut.Add(1)
	e.unflushed++
	if err != nil {
		e.st.sendErrors.Add(1)
		e.lastSendErr = err
		if ep != nil {
			ep.lastErr = err
		}
	}
	return true
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
			e.sendCtl(ep, OpAccept, ReasonNone)
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
		if e.linkErr == ErrNetDown || ep.lastErr == ErrNetDown {
			err = ErrNetDown
		}
		if ep.state == StateEstablished {
			e.sendCtl(ep, OpReset, ReasonTimedOut)
		}
		e.fail(ep, err)
		return
	}
	if ep.state == StateConnecting {
		if now >= ep.rtoAt {
			e.sendCtl(ep, OpConnect, ReasonNone)
			ep.synOnce = false // Karn: no sample from a repeated request
			ep.rtt.backoff(e.rtoBounds())
			ep.rtoAt = later(now, ep.rtt.rto)
			e.st.rtoExpiries.Add(1)
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
	idle := int64(e.cfg.Timeout) / 3
	if now-ep.lastHeard >= idle && now >= ep.probeAt {
		e.sendCtl(ep, OpProbe, ReasonNone)
		ep.probeAt = later(now, int64(e.cfg.Timeout)/6)
	}
	next := e.keepaliveAt(ep)
	if ep.rtoAt != 0 {
		next = min(next, ep.rtoAt)
	}
	if ep.ackAt != 0 {
		next = min(next, ep.ackAt)
	}
	e.schedule(ep, next)
}

// onRTO handles the retransmission timer: everything sent more than one
// RTO ago and not SACKed is presumed lost; the RTO backs off.
func (e *engine) onRTO(ep *endpoint) {
	e.st.rtoExpiries.Add(1)
	mask := len(ep.segs) - 1
	if ep.sent == 0 {
		if ep.confirming || ep.slen > 0 && ep.segs[ep.shead].seq+uint64(ep.segs[ep.shead].n) > ep.sndRight {
			// Zero window, or a confirmation not yet answered: probe.
			e.sendCtl(ep, OpProbe, ReasonNone)
			ep.rtt.backoff(e.rtoBounds())
			ep.rtoAt = later(e.now, ep.rtt.rto)
			return
		}
		ep.rtoAt = 0
		e.queueOutput(ep)
		return
	}
	if e.lostForSize(ep) {
		return
	}
	cutoff := e.now - ep.rtt.rto
	marked := false
	for i := range ep.sent {
		s := &ep.segs[(ep.shead+i)&mask]
		s.fast = false
		// What the receiver SACKed and then dropped (renege) lost its
		// mark when a SACK report left it out (unSACK).
		if s.sacked {
			continue
		}
		if !marked || s.sentAt <= cutoff && s.end() <= ep.sackKnown {
			s.rtx = true
			marked = true
		}
	}
	ep.dupAcks = 0
	ep.rtt.backoff(e.rtoBounds())
	ep.rtoAt = later(e.now, ep.rtt.rto)
	e.queueOutput(ep)
}

// maxBigLost is how many timer expiries in a row may find a large segment
// unacknowledged while the peer answers the probes sent beside it, before
// the connection fails with EMSGSIZE. With the backoff from the 5 ms floor
// that is about 3 s; random loss of 20% of frames fakes it with a
// probability of about 2 in a million per stuck segment.
const maxBigLost = 10

// lostForSize is the retransmission timer's check for frames that vanish
// for their size: the kernel drops a received frame longer than its UMEM
// frame holds, a hop drops one above its MTU, and nobody tells the sender.
// When the oldest unacknowledged segment is larger than every link carries
// (minPeerDatagram), a probe goes out beside its retransmission; the peer
// answers it at once. If expiry after expiry finds the segment still
// unacknowledged although the peer answered in between, and no segment of
// its size or larger was SACKed (which random loss would show), the
// connection fails with a FrameSizeError instead of stalling for good:
// keepalives would keep it alive for ever. It reports whether it failed ep.
func (e *engine) lostForSize(ep *endpoint) bool {
	mask := len(ep.segs) - 1
	s := &ep.segs[ep.shead]
	size := HeaderLen + int(s.n)
	if s.fin || s.sacked || size <= minPeerDatagram {
		ep.bigLost, ep.bigAt = 0, 0
		return false
	}
	for i := 1; i < ep.sent; i++ {
		if o := &ep.segs[(ep.shead+i)&mask]; o.sacked && HeaderLen+int(o.n) >= size {
			ep.bigLost, ep.bigAt = 0, 0
			return false
		}
	}
	if ep.bigAt != 0 && ep.lastHeard > ep.bigAt {
		ep.bigLost++
	}
	if ep.bigLost >= maxBigLost {
		e.st.tooBig.Add(1)
		e.sendCtl(ep, OpReset, ReasonTimedOut) // we give up on it
		e.fail(ep, &FrameSizeError{Size: size, Peer: ep.raddr})
		return true
	}
	ep.bigAt = e.now
	e.sendCtl(ep, OpProbe, ReasonNone)
	return false
}

// rtoBounds are the configured limits of the retransmission timeout.
func (e *engine) rtoBounds() rtoBounds {
	return rtoBounds{initial: int64(e.cfg.InitialRTO), min: int64(e.cfg.MinRTO), max: int64(e.cfg.MaxRTO)}
}
