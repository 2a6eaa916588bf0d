// Package memnet is an in-memory network for sdx's provider: hosts whose
// links lose, duplicate, reorder, corrupt and delay datagrams as seeded
// Faults say, so the protocol can be tested without root. A *Link
// satisfies provider.Link; its errors are the errnos provider's are.
package memnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sdx-project/sdx/internal/timerheap"
)

// Prefix is the address range of Network hosts: 198.18.0.0/15, set
// aside for network benchmarks (RFC 2544), the same range the veth testbed
// uses.
var Prefix = netip.MustParsePrefix("198.18.0.0/15")

// Defaults of a Network.
const (
	// DefaultMTU is the datagram MTU of a Link: a 1500-byte Ethernet
	// frame less the IPv4 and UDP headers.
	DefaultMTU = 1500 - 20 - 8
	// DefaultTxSlots is how many sends a Link queues before Flush;
	// past it Send returns ENOBUFS.
	DefaultTxSlots = 256
	// DefaultRxQueue is how many datagrams wait for a host before the
	// network drops more (an rx ring overflowing).
	DefaultRxQueue = 4096
	// DefaultHoldCap is how many received datagrams a Link keeps for
	// its provider at once (see Link.Hold), a quarter of DefaultRxQueue
	// as the AF_XDP link keeps at most a quarter of its frames.
	DefaultHoldCap = DefaultRxQueue / 4
)

// Faults are the misbehaviours of a Network. Probabilities are per
// datagram and drawn from each sending link's seeded generator, so a run
// that sends the same datagrams in the same order sees the same faults.
type Faults struct {
	Loss    float64 // probability a datagram is lost
	Dup     float64 // probability a datagram is delivered twice
	Reorder float64 // probability a datagram is held back by ReorderDelay, letting later ones pass
	Corrupt float64 // probability one byte of a datagram is flipped

	Delay        time.Duration // one-way delay of every datagram
	Jitter       time.Duration // extra delay drawn uniformly from [0, Jitter)
	ReorderDelay time.Duration // extra delay of a reordered datagram (default 200µs)

	// A bottleneck into every host: datagrams to a host leave a queue
	// in front of it at Rate bytes a second (0: no limit), in the order
	// sent; one that finds QueueBytes or more queued is dropped
	// (Stats.QueueDrops; 0: the queue is unbounded). An ECN-capable one
	// (SendECT) that finds MarkBytes or more queued (0: none) is marked
	// CE instead (Stats.Marked), as a RED or CoDel queue with ecn does.
	Rate       int64
	QueueBytes int
	MarkBytes  int

	// Mark, if set, is asked about every ECN-capable datagram that
	// gets through and marks it CE when it returns true: a known
	// marking pattern. It runs as Drop does.
	Mark func(from, to netip.Addr, datagram []byte) bool

	// Drop, if set, is asked about every datagram before the other faults
	// and drops it when it returns true. It sees the raw datagram and runs
	// with the network's lock held and must not call back into the network.
	Drop func(from, to netip.Addr, datagram []byte) bool
}

// Stats counts what a Network did with the datagrams it was given.
type Stats struct {
	Sent        uint64 // datagrams flushed by a link
	Delivered   uint64 // datagrams handed to a receiver
	Lost        uint64 // dropped by the Loss fault
	Filtered    uint64 // dropped by Faults.Drop
	Duplicated  uint64 // extra copies made by the Dup fault
	Reordered   uint64 // held back by the Reorder fault
	Corrupted   uint64 // altered by the Corrupt fault
	Unreachable uint64 // no such host, host down or closed, or partitioned
	Overflow    uint64 // the receiver's queue was full
	TooBig      uint64 // longer than the receiver's MTU: dropped as a kernel drops a frame its receive path cannot hold
	DownDrops   uint64 // discarded at Flush because the sending host was down
	ICMP        uint64 // port unreachables queued by InjectUnreachable
	QueueDrops  uint64 // dropped at a full bottleneck queue (Faults.QueueBytes)
	Marked      uint64 // ECN-capable datagrams marked CE (Faults.MarkBytes, Faults.Mark)
}

// Network is an in-memory network of hosts whose links lose, duplicate,
// reorder, corrupt and delay datagrams as its Faults say, driven by a seed.
// Its methods may be called from any goroutine; each Link belongs to its
// poller like any provider.Link.
type Network struct {
	seed uint64

	mu       sync.Mutex // protects everything below
	hosts    map[netip.Addr]*Link
	nhosts   uint32
	mtu      int
	faults   Faults
	clock    func() time.Duration // nil: real monotonic time since epoch
	epoch    time.Time
	cut      map[[2]netip.Addr]bool
	free     [][]byte // datagram buffers, each with capacity mtu
	nbufs    int      // buffers allocated, free or not
	stats    Stats
	seqCount uint64 // tie-break for equal delivery times: FIFO
}

// New returns an empty network whose faults are drawn from seed.
func New(seed uint64) *Network {
	return &Network{
		seed:  seed,
		hosts: make(map[netip.Addr]*Link),
		mtu:   DefaultMTU,
		epoch: time.Now(),
		cut:   make(map[[2]netip.Addr]bool),
	}
}

// SetFaults replaces the network's faults; it applies to datagrams flushed
// from then on.
func (n *Network) SetFaults(f Faults) {
	if f.ReorderDelay == 0 {
		f.ReorderDelay = 200 * time.Microsecond
	}
	n.mu.Lock()
	n.faults = f
	n.mu.Unlock()
}

// SetMTU sets the MTU of links created afterwards (default DefaultMTU).
// Links of one network may differ: a datagram longer than its receiver's
// MTU is dropped on arrival (Stats.TooBig), silently, as a kernel drops
// a frame longer than its receive buffers.
func (n *Network) SetMTU(mtu int) {
	n.mu.Lock()
	n.mtu = mtu
	n.mu.Unlock()
}

// SetClock makes the network read time from now instead of the real
// monotonic clock, so a test can drive delays with a virtual clock. With a
// clock set, Wait never sleeps for a delayed datagram: virtual time does
// not pass while it sleeps.
func (n *Network) SetClock(now func() time.Duration) {
	n.mu.Lock()
	n.clock = now
	n.mu.Unlock()
}

func (n *Network) nowLocked() time.Duration {
	if n.clock != nil {
		return n.clock()
	}
	return time.Since(n.epoch)
}

// NewLink adds a host with the next free address of Prefix and returns
// its link.
func (n *Network) NewLink() (*Link, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nhosts++
	base := Prefix.Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += n.nhosts
	addr := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	if !Prefix.Contains(addr) || addr == netip.MustParseAddr("198.19.255.255") {
		return nil, fmt.Errorf("memnet: out of addresses in %v", Prefix)
	}
	l := &Link{
		net:     n,
		addr:    addr,
		mtu:     n.mtu,
		rng:     rand.New(rand.NewPCG(n.seed, uint64(n.nhosts))),
		txCap:   DefaultTxSlots,
		rxCap:   DefaultRxQueue,
		cur:     -1,
		holdCap: DefaultHoldCap,
		wake:    make(chan struct{}, 1),
		timer:   time.NewTimer(time.Hour),
	}
	l.timer.Stop()
	n.hosts[addr] = l
	return l, nil
}

// Partition cuts (cut true) or heals the path between a and b, in both
// directions. Datagrams on a cut path are silently lost.
func (n *Network) Partition(a, b netip.Addr, cut bool) {
	n.mu.Lock()
	if cut {
		n.cut[[2]netip.Addr{a, b}] = true
		n.cut[[2]netip.Addr{b, a}] = true
	} else {
		delete(n.cut, [2]netip.Addr{a, b})
		delete(n.cut, [2]netip.Addr{b, a})
	}
	n.mu.Unlock()
}

// Stats returns the network's counters.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Queued returns how many datagrams wait in hosts' receive queues.
func (n *Network) Queued() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := 0
	for _, h := range n.hosts {
		q += h.in.Len()
	}
	return q
}

// NextDelivery returns the earliest time at which a queued datagram
// becomes deliverable, on the network's clock, and false when none waits.
func (n *Network) NextDelivery() (time.Duration, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var t time.Duration
	ok := false
	for _, h := range n.hosts {
		if h.in.Len() > 0 && (!ok || h.in.Min().at < t) {
			t, ok = h.in.Min().at, true
		}
	}
	return t, ok
}

// Buffers returns how many datagram buffers the network has allocated and
// how many of them are free. Every buffer not free holds a datagram that
// is queued in a link, or one a link holds for its provider (Link.Hold)
// or was given back by it and returns with the link's next Receive.
func (n *Network) Buffers() (total, free int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nbufs, len(n.free)
}

func (n *Network) getBufLocked() []byte {
	if k := len(n.free); k > 0 {
		b := n.free[k-1]
		n.free[k-1] = nil
		n.free = n.free[:k-1]
		return b
	}
	n.nbufs++
	return make([]byte, 0, n.mtu)
}

func (n *Network) putBufLocked(b []byte) { n.free = append(n.free, b[:0]) }

// memPkt is a datagram in flight, or a port unreachable (icmp) from
// from's host quoting buf.
type pkt struct {
	from netip.Addr
	to   netip.Addr
	at   time.Duration // deliverable from this time on
	seq  uint64
	buf  []byte
	icmp bool
	ect  bool // sent ECN-capable (SendECT)
	ce   bool // marked congestion experienced on the way
}

// InjectUnreachable queues at host to an ICMP port unreachable from host
// from that quotes datagram (copied; the sdx header on, as if to had sent
// it to from), as a host whose stack is gone answers: to's link hands it
// to its SetUnreachable function, in order with the datagrams it
// receives. It reports false when to is no host of the network, or down.
// Nothing sends one by itself: a closed host stays silent.
func (n *Network) InjectUnreachable(from, to netip.Addr, datagram []byte) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	dst := n.hosts[to]
	if dst == nil || dst.down || dst.closed || len(datagram) > n.mtu {
		return false
	}
	n.stats.ICMP++
	dst.queueLocked(pkt{from: from, to: to, at: n.nowLocked(), buf: append(n.getBufLocked(), datagram...), icmp: true})
	return true
}

// Link is one host's Link on a Network. It is owned by its poller;
// Wake, SetDown and the Network's methods may be called from any
// goroutine.
type Link struct {
	net  *Network
	addr netip.Addr
	mtu  int

	// Owned by the poller.
	rng   *rand.Rand
	tx    []pkt // queued by Send, sent by Flush
	txCap int
	rx    []pkt // batch being handed to Receive's fn
	cur   int   // index in rx of the datagram fn has; -1 outside fn
	// Received datagrams held for the provider (see Hold), by handle;
	// heldFree lists the free handles.
	held     [][]byte
	heldFree []uint32
	// Given back by Release, for the network at the next Receive; after
	// Close (relShut) Release hands them back itself. Under relMu, which
	// is taken after net.mu, never before.
	relMu    sync.Mutex
	released [][]byte
	relShut  bool
	nHeld    atomic.Int64 // written by the poller, read by anyone (Held)
	holdCap  int
	ce       bool // the datagram being handed to Receive's fn was marked CE
	timer    *time.Timer
	// unreach takes the port unreachables; nil drops them.
	unreach func(peer netip.Addr, quoted []byte)

	wake chan struct{} // Wake and arriving datagrams; any goroutine

	// Protected by net.mu.
	in     timerheap.Heap[pkt] // on (at, seq)
	busy   time.Duration       // when the bottleneck into this host is next idle (Faults.Rate)
	rxCap  int
	down   bool
	closed bool
}

// LocalAddr returns the host's address.
func (l *Link) LocalAddr() netip.Addr { return l.addr }

// MTU returns the largest datagram the link carries.
func (l *Link) MTU() int { return l.mtu }

// SetDown takes the host off the network (down true) or back on. While it
// is down, Send and Flush fail with ENETDOWN and datagrams sent to it are
// lost.
func (l *Link) SetDown(down bool) {
	l.net.mu.Lock()
	l.down = down
	l.net.mu.Unlock()
}

// Send queues a copy of payload for peer. It fails with EMSGSIZE when
// payload exceeds the MTU, ENOBUFS when DefaultTxSlots sends are queued,
// EHOSTUNREACH when peer is outside Prefix and ENETDOWN when the host is
// down or the link closed. A peer inside Prefix with no host behind it
// is not an error: its datagrams are lost, as on a LAN where nobody
// answers.
func (l *Link) Send(peer netip.Addr, payload []byte) error {
	return l.send(peer, payload, false)
}

// SendECT is Send for an ECN-capable datagram, which a bottleneck may
// mark CE instead of dropping it (see Faults.MarkBytes).
func (l *Link) SendECT(peer netip.Addr, payload []byte) error {
	return l.send(peer, payload, true)
}

// ReceivedCE reports whether the datagram Receive hands to its fn now was
// marked CE. Call it only from inside that fn.
func (l *Link) ReceivedCE() bool { return l.ce }

func (l *Link) send(peer netip.Addr, payload []byte, ect bool) error {
	if len(payload) > l.mtu {
		return syscall.EMSGSIZE
	}
	if !Prefix.Contains(peer) {
		return syscall.EHOSTUNREACH
	}
	if len(l.tx) >= l.txCap {
		return syscall.ENOBUFS
	}
	n := l.net
	n.mu.Lock()
	if l.down || l.closed {
		n.mu.Unlock()
		return syscall.ENETDOWN
	}
	b := n.getBufLocked()
	n.mu.Unlock()
	l.tx = append(l.tx, pkt{from: l.addr, to: peer, buf: append(b, payload...), ect: ect})
	return nil
}

// Flush hands the queued datagrams to the network, which applies its
// faults and queues them at their receivers. When the host is down the
// queued datagrams are discarded and Flush returns ENETDOWN.
func (l *Link) Flush() error {
	if len(l.tx) == 0 {
		l.net.mu.Lock()
		down := l.down || l.closed
		l.net.mu.Unlock()
		if down {
			return syscall.ENETDOWN
		}
		return nil
	}
	n := l.net
	n.mu.Lock()
	var err error
	if l.down || l.closed {
		for i := range l.tx {
			n.putBufLocked(l.tx[i].buf)
			n.stats.DownDrops++
		}
		err = syscall.ENETDOWN
	} else {
		now := n.nowLocked()
		for i := range l.tx {
			l.sendLocked(&l.tx[i], now)
		}
	}
	n.mu.Unlock()
	clear(l.tx)
	l.tx = l.tx[:0]
	return err
}

// sendLocked applies the faults to p and queues it, or a copy of it, at
// its receiver. It consumes p.buf.
func (l *Link) sendLocked(p *pkt, now time.Duration) {
	n := l.net
	f := &n.faults
	n.stats.Sent++
	// Draw every fault for every datagram, whatever happens to it, so the
	// faults of later datagrams do not depend on earlier outcomes.
	loss := l.rng.Float64() < f.Loss
	dup := l.rng.Float64() < f.Dup
	reorder := l.rng.Float64() < f.Reorder
	corrupt := l.rng.Float64() < f.Corrupt
	pos := l.rng.IntN(l.mtu)
	jit := [2]time.Duration{}
	if f.Jitter > 0 {
		jit[0] = time.Duration(l.rng.Int64N(int64(f.Jitter)))
		jit[1] = time.Duration(l.rng.Int64N(int64(f.Jitter)))
	}
	dst := n.hosts[p.to]
	switch {
	case dst == nil || dst.down || dst.closed || n.cut[[2]netip.Addr{p.from, p.to}]:
		n.stats.Unreachable++
		n.putBufLocked(p.buf)
		return
	case f.Drop != nil && f.Drop(p.from, p.to, p.buf):
		n.stats.Filtered++
		n.putBufLocked(p.buf)
		return
	case len(p.buf) > dst.mtu:
		n.stats.TooBig++
		n.putBufLocked(p.buf)
		return
	case loss:
		n.stats.Lost++
		n.putBufLocked(p.buf)
		return
	}
	depart := now
	if f.Rate > 0 {
		queued := int((max(dst.busy-now, 0)*time.Duration(f.Rate) + time.Second - 1) / time.Second)
		if f.QueueBytes > 0 && queued+len(p.buf) > f.QueueBytes {
			n.stats.QueueDrops++
			n.putBufLocked(p.buf)
			return
		}
		if p.ect && f.MarkBytes > 0 && queued >= f.MarkBytes {
			p.ce = true
		}
		dst.busy = max(dst.busy, now) + time.Duration(int64(len(p.buf))*int64(time.Second)/f.Rate)
		depart = dst.busy
	}
	if p.ect && !p.ce && f.Mark != nil && f.Mark(p.from, p.to, p.buf) {
		p.ce = true
	}
	if p.ce {
		n.stats.Marked++
	}
	if corrupt && len(p.buf) > 0 {
		p.buf[pos%len(p.buf)] ^= 0x5a
		n.stats.Corrupted++
	}
	p.at = depart + f.Delay + jit[0]
	if reorder {
		p.at += f.ReorderDelay
		n.stats.Reordered++
	}
	if dup {
		c := *p
		c.buf = append(n.getBufLocked(), p.buf...)
		c.at = now + f.Delay + jit[1]
		n.stats.Duplicated++
		dst.queueLocked(c)
	}
	dst.queueLocked(*p)
	p.buf = nil
}

func (l *Link) queueLocked(p pkt) {
	n := l.net
	if l.in.Len() >= l.rxCap {
		n.stats.Overflow++
		n.putBufLocked(p.buf)
		return
	}
	n.seqCount++
	p.seq = n.seqCount
	l.in.Push(p)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// SetUnreachable sets the function Receive hands port unreachables to
// (see InjectUnreachable).
func (l *Link) SetUnreachable(fn func(peer netip.Addr, quoted []byte)) { l.unreach = fn }

// Receive hands up to max deliverable datagrams to fn, oldest first, and
// port unreachables to the SetUnreachable function.
func (l *Link) Receive(max int, fn func(peer netip.Addr, payload []byte, more [][]byte)) int {
	n := l.net
	n.mu.Lock()
	l.putReleasedLocked()
	now := n.nowLocked()
	for len(l.rx) < max && l.in.Len() > 0 && l.in.Min().at <= now {
		l.rx = append(l.rx, l.in.Pop())
		if !l.rx[len(l.rx)-1].icmp {
			n.stats.Delivered++
		}
	}
	n.mu.Unlock()
	if len(l.rx) == 0 {
		return 0
	}
	for i := range l.rx {
		switch p := &l.rx[i]; {
		case !p.icmp:
			l.ce, l.cur = p.ce, i
			fn(p.from, p.buf, nil)
			l.ce, l.cur = false, -1
		case l.unreach != nil:
			l.unreach(p.from, p.buf)
		}
	}
	k := len(l.rx)
	n.mu.Lock()
	for i := range l.rx {
		if l.rx[i].buf != nil {
			n.putBufLocked(l.rx[i].buf)
		}
	}
	n.mu.Unlock()
	clear(l.rx)
	l.rx = l.rx[:0]
	return k
}

// Hold keeps the datagram Receive is handing to fn, for the provider
// (see provider.Holder): it stays valid until Release. It appends the
// datagram's handle to hs, or nothing when HoldCap datagrams are held or
// it is called outside fn.
func (l *Link) Hold(hs []uint32) []uint32 {
	if l.cur < 0 || l.nHeld.Load() >= int64(l.holdCap) {
		return hs
	}
	p := &l.rx[l.cur]
	var h uint32
	if k := len(l.heldFree); k > 0 {
		h, l.heldFree = l.heldFree[k-1], l.heldFree[:k-1]
	} else {
		h = uint32(len(l.held))
		l.held = append(l.held, nil)
	}
	l.held[h], p.buf = p.buf, nil
	l.nHeld.Add(1)
	return append(hs, h)
}

// Data is the datagram held with handle h.
func (l *Link) Data(h uint32) []byte { return l.held[h] }

// Release gives back the datagram held with handle h. Its buffer goes
// back to the network with the next Receive's, under the lock that takes
// anyway; after Close, at once.
func (l *Link) Release(h uint32) {
	b := l.held[h]
	l.held[h] = nil
	l.heldFree = append(l.heldFree, h)
	l.nHeld.Add(-1)
	l.relMu.Lock()
	if !l.relShut {
		l.released = append(l.released, b)
		l.relMu.Unlock()
		return
	}
	l.relMu.Unlock()
	l.net.mu.Lock()
	l.net.putBufLocked(b)
	l.net.mu.Unlock()
}

// putReleasedLocked gives the network the buffers Release gave back.
func (l *Link) putReleasedLocked() {
	l.relMu.Lock()
	for i, b := range l.released {
		l.net.putBufLocked(b)
		l.released[i] = nil
	}
	l.released = l.released[:0]
	l.relMu.Unlock()
}

// HoldCap is the most datagrams the link holds at once.
func (l *Link) HoldCap() int { return l.holdCap }

// SetHoldCap sets HoldCap (default DefaultHoldCap); 0 holds nothing.
// Only the poller may call it.
func (l *Link) SetHoldCap(n int) { l.holdCap = n }

// Held is how many datagrams the link holds now; any goroutine.
func (l *Link) Held() int { return int(l.nHeld.Load()) }

// Wait blocks until a datagram is deliverable, Wake is called, or timeout
// passes. A datagram that arrives with a delay wakes Wait when it becomes
// deliverable (on the real clock; with SetClock, Wait returns at once when
// anything is queued).
func (l *Link) Wait(timeout time.Duration) error {
	n := l.net
	n.mu.Lock()
	if l.closed {
		n.mu.Unlock()
		return syscall.ENETDOWN
	}
	if l.in.Len() > 0 {
		if n.clock != nil {
			n.mu.Unlock()
			return nil
		}
		if d := l.in.Min().at - n.nowLocked(); d < timeout {
			timeout = d
		}
	}
	n.mu.Unlock()
	if timeout <= 0 {
		return nil
	}
	l.timer.Reset(timeout)
	select {
	case <-l.wake:
	case <-l.timer.C:
	}
	l.timer.Stop()
	return nil
}

// Wake makes a blocked or the next Wait return. Any goroutine may call it.
func (l *Link) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Close takes the host off the network for good and frees what it held.
// It is idempotent. It reports datagrams still held (see Hold) as an
// error: their holder should have released them first. They stay the
// holder's, and go back to the network when it releases them.
func (l *Link) Close() error {
	n := l.net
	n.mu.Lock()
	var err error
	if k := l.nHeld.Load(); k > 0 {
		err = fmt.Errorf("memnet: %s closed with %d datagrams held", l.addr, k)
	}
	// Shut first, then flush: a Release from now on hands its buffer
	// back itself (once we let go of n.mu), and none is left behind in
	// released.
	l.relMu.Lock()
	l.relShut = true
	l.relMu.Unlock()
	l.putReleasedLocked()
	if !l.closed {
		l.closed = true
		for i := range l.in.Len() {
			n.putBufLocked(l.in.At(i).buf)
		}
		l.in.Clear()
		for i := range l.tx {
			n.putBufLocked(l.tx[i].buf)
		}
		clear(l.tx)
		l.tx = l.tx[:0]
	}
	n.mu.Unlock()
	l.Wake()
	return err
}

// Before and SetIndex make a datagram a timer of its link's heap: due at
// its delivery time, ties in the order sent.
func (p pkt) Before(q pkt) bool { return pktLess(&p, &q) }
func (pkt) SetIndex(int)        {}

func pktLess(a, b *pkt) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}
