package xdplink

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/xdp"
)

// Shards: the links NewShards opens on one interface, each with queues
// and a poller of its own. A flow (a connection's two addresses and sdx
// ports) belongs to one shard, the one ShardOf names. The function is
// symmetric, so two hosts with the same number of shards agree on every
// flow's: on veth, where a frame sent from queue q arrives on the peer's
// queue q, a flow's frames then never leave their shard at either end.
// Where a NIC's RSS puts a frame on another shard's queue, that shard
// copies it into the owner's inbox and wakes it: correct, at the cost of
// a copy. The provider of shard i must make only connections of its own
// flows (provider.Config.Owns).

// MaxShards bounds NewShards' n.
const MaxShards = 64

// ShardOf returns which of n shards the flow between a and b belongs to,
// the same whichever end is a.
func ShardOf(a, b netip.AddrPort, n int) int {
	if n <= 1 {
		return 0
	}
	x, y := endpointKey(a), endpointKey(b)
	if x > y {
		x, y = y, x
	}
	return int(mix(mix(x)^y) % uint64(n))
}

func endpointKey(ap netip.AddrPort) uint64 {
	a := ap.Addr().As4()
	return uint64(binary.BigEndian.Uint32(a[:]))<<16 | uint64(ap.Port())
}

// mix is splitmix64's finaliser: every input bit moves the result.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// shared is what the shards of an interface share: the program, and each
// other, to hand frames over.
type shared struct {
	links []*Link
	mu    sync.Mutex // protects steer and left
	steer *xdp.Steering
	left  int // links closed
}

// leave takes l's queues out of the program, or detaches it when l is the
// last shard to close.
func (sh *shared) leave(l *Link) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.left++
	if sh.steer == nil {
		return nil
	}
	if sh.left == len(sh.links) {
		err := sh.steer.Close()
		sh.steer = nil
		return err
	}
	for _, lq := range l.qs {
		// Its frames go to the kernel from now on; a queue never
		// registered (a failed start) has nothing to take out.
		sh.steer.Unregister(lq.id)
	}
	return nil
}

// handOver copies a datagram of another shard's flow, between this
// host's sdx port lport and peer's rport, into that shard's inbox and
// reports true; false, doing nothing, when the flow is this link's. A full
// inbox drops the datagram, as a full rx ring would, and the protocol
// retransmits. icmp says it is the quoted datagram of an ICMP port
// unreachable (see SetUnreachable), not a received one.
func (l *Link) handOver(peer netip.Addr, lport, rport uint16, payload []byte, more [][]byte, ecn uint8, icmp bool) bool {
	to := ShardOf(netip.AddrPortFrom(l.local.IP, lport), netip.AddrPortFrom(peer, rport), len(l.sh.links))
	if to == l.shard {
		return false
	}
	if l.sh.links[to].in.put(peer, payload, more, ecn, icmp) {
		l.ctr.forwarded.bump()
		l.woke |= 1 << to
	} else {
		l.ctr.forwardDropped.bump()
	}
	return true
}

// handOverReceived is handOver for the datagram Receive parsed, which
// came from the peer's sdx port src to ours, dst.
func (l *Link) handOverReceived(more [][]byte) bool {
	src, dst, _ := wire.Ports(l.parsed.Payload)
	return l.handOver(l.parsed.Flow.Src.IP, dst, src, l.parsed.Payload, more, l.parsed.Flow.ECN, false)
}

// wakeOwners wakes the shards handOver gave frames to since the last call.
func (l *Link) wakeOwners() {
	for w := l.woke; w != 0; w &= w - 1 {
		l.sh.links[bits.TrailingZeros64(w)].Wake()
	}
	l.woke = 0
}

// drainInbox hands the datagrams other shards forwarded to fn (or to the
// unreachable function) and returns how many it handed over, at most
// max. They are copies: Hold keeps none of them.
func (l *Link) drainInbox(max int, fn func(peer netip.Addr, payload []byte, more [][]byte)) int {
	in := l.in
	got := 0
	for got < max {
		d, ok := in.peek()
		if !ok {
			break
		}
		if d.icmp {
			l.ctr.unreach.bump()
			if l.unreach != nil {
				l.unreach(d.peer, in.data(d))
			}
		} else {
			l.ctr.received.bump()
			l.parsed.Flow.ECN = d.ecn
			fn(d.peer, in.data(d), nil)
		}
		in.pop()
		got++
	}
	return got
}

// inbox holds datagrams other shards forwarded to one shard: a ring of
// fixed slots, one datagram each, filled by any shard's poller under mu
// and drained by the owner's. The owner reads a slot outside the lock:
// it stays counted in n, so no producer reuses it, until pop.
type inbox struct {
	mu    sync.Mutex
	slots []forwarded
	buf   []byte
	size  int // bytes per slot
	head  int
	n     atomic.Int32 // slots filled; written under mu
}

type forwarded struct {
	peer netip.Addr
	n    int
	ecn  uint8
	icmp bool
}

// inboxBytes bounds an inbox's memory; it takes at least inboxMin slots.
const (
	inboxBytes = 4 << 20
	inboxMin   = 16
	inboxMax   = 256
)

func newInbox(mtu int) *inbox {
	size := max(mtu, wire.HeaderLen)
	k := min(max(inboxBytes/size, inboxMin), inboxMax)
	return &inbox{slots: make([]forwarded, k), buf: make([]byte, k*size), size: size}
}

// put copies a datagram's pieces into a free slot; false when none is.
func (in *inbox) put(peer netip.Addr, payload []byte, more [][]byte, ecn uint8, icmp bool) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	k := int(in.n.Load())
	if k == len(in.slots) {
		return false
	}
	i := (in.head + k) % len(in.slots)
	b := in.buf[i*in.size : (i+1)*in.size]
	n := copy(b, payload)
	for _, p := range more {
		n += copy(b[n:], p)
	}
	in.slots[i] = forwarded{peer: peer, n: n, ecn: ecn, icmp: icmp}
	in.n.Store(int32(k + 1))
	return true
}

// peek returns the oldest datagram, which stays until pop; owner only.
func (in *inbox) peek() (forwarded, bool) {
	if in.n.Load() == 0 {
		return forwarded{}, false
	}
	// The producer wrote the slot before it stored n.
	return in.slots[in.head], true
}

// data is the payload of d, the slot peek returned.
func (in *inbox) data(d forwarded) []byte {
	return in.buf[in.head*in.size : in.head*in.size+d.n]
}

// pop frees the oldest slot; owner only.
func (in *inbox) pop() {
	in.mu.Lock()
	in.head = (in.head + 1) % len(in.slots)
	in.n.Store(in.n.Load() - 1)
	in.mu.Unlock()
}

// pending reports whether the inbox holds datagrams; any goroutine.
func (in *inbox) pending() bool { return in != nil && in.n.Load() > 0 }
