package provider

import (
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
	Timeout                    time.Duration                                // dead-peer bound
	Pacing                     bool                                         // spread a window over the round trip (see paceGap)
	Reno                       bool                                         // NewReno's congestion window, not CUBIC's
	PeerTimeout                time.Duration                                // liveness bound of a peer stack with heartbeats; 0: no heartbeats
	Incarnation                uint64                                       // announced to peers; 0: drawn at start
	Owns                       func(lport uint16, peer netip.AddrPort) bool // the flows connect may make; nil: all
	PeerGone                   func(peer netip.Addr, inc uint64)            // told when an ICMP ends a peer
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

// counter is one of the engine's counters. Only the poller writes it, so
// it adds with a load and a store, not a locked add: several are bumped
// for every frame. Anyone may Load it.
type counter struct{ v atomic.Uint64 }

func (c *counter) Add(n uint64) { c.v.Store(c.v.Load() + n) }
func (c *counter) Load() uint64 { return c.v.Load() }
func (c *counter) Set(n uint64) { c.v.Store(n) }

// engineStats are the engine's counters, written by the poller and read by
// anyone.
type engineStats struct {
	datagramsIn, datagramsOut                            counter
	dataOut, retransmits, fastRetransmits, rtoExpiries   counter
	acksOut, probesOut, resetsOut, resetsIn, rejectsOut  counter
	resetsChallenged                                     counter
	retriesOut, cookiesIn, halfOpenExpired               counter
	dropMalformed, dropChecksum, dropBadToken            counter
	dropUnknownConn, dropOutOfWindow, dropDuplicate      counter
	dropNoBuffer, dropBadAck, dropBadCookie              counter
	reneged, recvDirect, recvHeld, oooIn, inPlace        counter
	heldNow                                              counter // a gauge: buffers the link holds for us
	deadPeers, sendErrors, tooBig                        counter
	unreachIn, dropUnreach                               counter
	heartbeatsOut, heartbeatsIn, peerRestarts, peersDead counter
	peersGone                                            counter
	// Congestion control (cc.go).
	lossReductions, ecnReductions, spuriousRTOs counter
	ceIn, ceEchoed, ecnConns                    counter
	cwndLimited, poolLimited                    counter
	paceWaits                                   counter
	bursts                                      [numBurstBuckets]counter
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

	// holder is the link as a Holder, nil when it holds nothing; hs is
	// Hold's scratch.
	holder Holder
	hs     []uint32

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
	if h, ok := link.(Holder); ok && h.HoldCap() > 0 {
		e.holder, e.holdCap = h, h.HoldCap()
	}
	e.inputFn = e.inputPieces
	link.SetUnreachable(e.unreachable)
	var key [16]byte
	for i := range key {
		key[i] = byte(e.rng.Uint32())
	}
	e.cookies = newCookieMAC(key)
	e.inc = e.rng.Uint64() | 1
	if cfg.Incarnation != 0 {
		e.inc = cfg.Incarnation
	}
	return e, nil
}

func (e *engine) notify(ep *endpoint, ev uint8) {
	ep.ev |= ev
	if !ep.changedQ {
		ep.changedQ = true
		e.changed = append(e.changed, ep)
	}
}

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
