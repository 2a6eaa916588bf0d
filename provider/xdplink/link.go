package provider

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/xdp"
)

// XDPLinkConfig places a provider on the AF_XDP queues of an interface.
type XDPLinkConfig struct {
	Netns     string // network namespace name or path; empty for the caller's
	Interface string // interface inside Netns
	// Queues lists the rx/tx queue ids to serve. Empty (and Queue 0):
	// every rx queue of the interface (xdp.RxQueues), so that no sdx frame
	// reaches a queue without a socket, whichever queue the NIC's RSS
	// picks. Queue, when not 0, is Queues: []int{Queue}; to serve queue
	// 0 alone, say Queues: []int{0}.
	Queues  []int
	Queue   int
	Port    uint16   // sdx UDP port (default DefaultUDPPort)
	XDPMode bpf.Mode // force native or generic XDP; zero tries native first
	// Addr is the IPv4 address of Interface the link serves: sdx frames
	// to it are the provider's, frames to the interface's other addresses
	// the kernel's. Zero: the interface's first IPv4 address (its primary,
	// the first `ip -4 address show` lists).
	Addr netip.Addr
	// Frames sizes each queue's UMEM and rings; Netns, Interface and
	// Queue are taken from above. Zero fields take xdp's defaults.
	Frames xdp.Config
	// LendBuffers is how many of the provider's buffers live in the
	// queues' UMEMs, an equal share in each, as many frames each as a
	// datagram of the MTU takes: data written there is sent from there,
	// with no copy into a frame. A connection's send data goes in the
	// share of the queue its frames go out on, while that has a free
	// buffer. Zero: the provider's default pool at the interface's MTU
	// (8192 buffers at MTU 1500, 16 MiB of UMEM); negative: none. A
	// provider with more Buffers keeps the rest in its own memory and
	// copies their data into frames, as it does for data in another
	// queue's share than the one its frame goes out on.
	LendBuffers int
}

// queueIDs returns the queue ids c names; nil means every queue.
func (c *XDPLinkConfig) queueIDs() []int {
	if len(c.Queues) > 0 {
		return c.Queues
	}
	if c.Queue != 0 {
		return []int{c.Queue}
	}
	return nil
}

// XDPLink is the AF_XDP data path as a Link: the steer program on the
// interface, one AF_XDP socket per served rx queue (each with its own
// UMEM), and the kernel's neighbour table for peers' Ethernet addresses.
//
// Like every Link it is owned by the poller, and so is every queue: one
// poller drains all the rx rings, in turn, and waits on all of them at
// once (an xdp.Group). A frame goes out on the queue its flow's frames
// last arrived on, so that a peer that serves one queue only gets its
// answers there; a flow nothing has arrived for yet goes out on the queue
// its hash picks (see txQueue). Wake may be called from any goroutine.
type XDPLink struct {
	cfg   XDPLinkConfig
	steer *xdp.Steering
	qs    []*linkQueue
	group *xdp.Group // waits on every queue; nil with one queue
	flows flowTable  // the queue each flow's frames last arrived on
	rr    int        // the queue Receive starts with
	res   *xdp.Resolver
	local frame.Endpoint
	mtu   int
	ipID  uint16
	// subnet is local's prefix; own, every IPv4 address of the interface.
	subnet netip.Prefix
	own    []netip.Addr
	// Neighbours. Times are on the link's clock (since born). last is
	// the peer of the previous send: one comparison instead of a map
	// lookup in a conversation. unresolved holds peers that failed to
	// resolve, until when they fail fast; pending, the frames to peers
	// the kernel is resolving (pending.go).
	born       time.Time
	last       netip.Addr
	lastPeer   peerMAC
	peers      map[netip.Addr]peerMAC
	unresolved map[netip.Addr]unresolvedPeer
	pending    map[netip.Addr]*pendingPeer
	descs      [64]xdp.Desc                // received, being handed to fn
	more       [xdp.MaxPacketFrames][]byte // a multi-buffer frame's pieces after the first
	parsed     frame.Parsed
	icmp       frame.Unreach
	unreach    func(peer netip.Addr, quoted []byte)
	stats      XDPLinkStats
	tap        atomic.Pointer[Capture] // a running capture (capture.go); nil: none

	// Lent buffers (see lender): lentPer in each queue's UMEM, lentFrames
	// UMEM frames each, of which lentOut[i] are on their way out.
	lentPer    int
	lentFrames int
	lentOut    []uint8
	lentFn     func(i uint32)

	// For LinkStats, from any goroutine: info is set before the link is
	// shared; qmu keeps Close from closing the sockets under a read of
	// their kernel counters.
	info   LinkStats
	qmu    sync.Mutex
	closed bool // under qmu: the queues are closed
}

// linkQueue is one AF_XDP queue of an XDPLink with the frames queued for
// it; owned by the link's poller. rx and tx count its frames for
// LinkStats, which any goroutine may call.
type linkQueue struct {
	id     int
	idx    int // in XDPLink.qs
	q      *xdp.Queue
	txq    [256]xdp.Desc
	ntx    int
	rx, tx atomic.Uint64
}

// XDPLinkStats are the link's own counters.
type XDPLinkStats struct {
	Sent, Received uint64
	NotOurs        uint64 // frames on the queue not addressed to this host's sdx port
	Malformed      uint64 // frames whose headers did not parse
	Unresolved     uint64 // sends dropped because the peer's address did not resolve in time
	// Pending counts frames that waited for their peer's address to
	// resolve (sent later, or dropped as Unresolved).
	Pending  uint64
	NoFrames uint64 // sends refused with ENOBUFS for want of a UMEM frame or tx slot
	// InPlace counts frames sent from the provider's buffer in lent UMEM
	// frames; Copied, frames of such a buffer copied into a frame of
	// another queue instead, the one their flow goes out on (it moved
	// since the data was written, or its queue's share was used up).
	InPlace, Copied uint64
	// Spoofed counts frames from a source nobody may answer (see
	// unanswerable), dropped; Refused, sends to such an address, refused
	// with EHOSTUNREACH; Unreach, ICMP port unreachables about our frames,
	// handed to the engine.
	Spoofed, Refused, Unreach uint64
}

// unresolvedPeer is a peer that failed to resolve: it fails fast until
// until; backoff is how long the last failure set.
type unresolvedPeer struct{ until, backoff time.Duration }

type peerMAC struct {
	mac     [6]byte
	checked time.Duration // on the link's clock
}

// neighbourTTL is how long a resolved Ethernet address is used before the
// kernel's table is asked again; the kernel keeps the entry fresh by ARP.
const neighbourTTL = 5 * time.Second

// Resolving a peer the kernel does not know: its frames wait at most
// resolveWait for the answer, in a queue of their own (pending.go), while
// the poller goes on; a peer that did not resolve fails fast for
// unresolvedFirst, doubling with each failure in a row up to
// unresolvedFor (the kernel keeps resolving it meanwhile), and at most
// maxUnresolved such peers are remembered. A frame that fails is dropped;
// the protocol retransmits.
const (
	resolveWait     = 2 * time.Millisecond
	unresolvedFirst = 10 * time.Millisecond
	unresolvedFor   = 200 * time.Millisecond
	maxUnresolved   = 1024
)

// OpenXDPLink attaches the steer program, opens the queue and registers it.
func OpenXDPLink(cfg XDPLinkConfig) (_ *XDPLink, err error) {
	if cfg.Port == 0 {
		cfg.Port = DefaultUDPPort
	}
	l := &XDPLink{cfg: cfg, born: time.Now(), peers: make(map[netip.Addr]peerMAC), unresolved: make(map[netip.Addr]unresolvedPeer), pending: make(map[netip.Addr]*pendingPeer)}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	var ifindex int
	err = sys.InNetns(cfg.Netns, func() error {
		ifi, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return err
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err != nil || !p.Addr().Is4() {
				continue
			}
			l.own = append(l.own, p.Addr())
			if !l.local.IP.IsValid() && (!cfg.Addr.IsValid() || cfg.Addr == p.Addr()) {
				l.local.IP, l.subnet = p.Addr(), p.Masked()
			}
		}
		if !l.local.IP.IsValid() {
			if cfg.Addr.IsValid() {
				return fmt.Errorf("%v is not an IPv4 address of %s", cfg.Addr, cfg.Interface)
			}
			return fmt.Errorf("no IPv4 address on %s", cfg.Interface)
		}
		if len(ifi.HardwareAddr) != 6 {
			return fmt.Errorf("%s is not an Ethernet interface", cfg.Interface)
		}
		l.local.MAC = [6]byte(ifi.HardwareAddr)
		l.local.Port = cfg.Port
		l.mtu = ifi.MTU - frame.IPv4Len - frame.UDPLen
		ifindex = ifi.Index
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("provider: link %s: %w", cfg.Interface, err)
	}
	ids := cfg.queueIDs()
	if ids == nil {
		n, err := xdp.RxQueues(cfg.Netns, cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("provider: link %s: %w", cfg.Interface, err)
		}
		for id := range min(n, bpf.MaxQueues) {
			ids = append(ids, id)
		}
	}
	for i, id := range ids {
		if slices.Contains(ids[:i], id) {
			return nil, configErr("XDPLinkConfig.Queues %v: queue %d twice", ids, id)
		}
	}
	// Each buffer lent takes the frames a datagram of the interface's
	// MTU takes, whatever the link's MTU turns out to be below.
	fs := cfg.Frames.FrameSize
	if fs == 0 {
		fs = xdp.FrameSizeFor(l.mtu + frame.IPv4Len + frame.UDPLen)
	}
	l.lentFrames = min((frame.HeaderLen+min(l.mtu, 65535)+fs-1)/fs, xdp.MaxPacketFrames)
	lend := cfg.LendBuffers
	if lend == 0 {
		lend = defaultLent(min(l.mtu, 65535))
	}
	if lend > 0 {
		l.lentPer = (lend + len(ids) - 1) / len(ids)
		if max := xdp.MaxLentFrames / l.lentFrames * len(ids); lend > max {
			return nil, configErr("XDPLinkConfig.LendBuffers %d: at most %d on %s", lend, max, cfg.Interface)
		}
	}
	// The queues before the program: a queue another stack holds says
	// so (EBUSY, "another sdx stack") before the attach would fail less
	// clearly.
	for _, id := range ids {
		fc := cfg.Frames
		fc.Netns, fc.Interface, fc.Queue = cfg.Netns, cfg.Interface, id
		fc.LentFrames = l.lentPer * l.lentFrames
		q, err := xdp.Open(fc)
		if err != nil {
			return nil, err
		}
		l.qmu.Lock()
		l.qs = append(l.qs, &linkQueue{id: id, idx: len(l.qs), q: q})
		l.qmu.Unlock()
		// A received frame must fit what the queue receives: one
		// UMEM frame less the kernel's headroom, or several with
		// multi-buffer frames.
		if max := q.MaxFrameLen() - frame.HeaderLen; l.mtu > max {
			l.mtu = max
		}
	}
	if l.steer, err = xdp.AttachSteer(xdp.SteerConfig{Netns: cfg.Netns, Interface: cfg.Interface, Port: cfg.Port, Mode: cfg.XDPMode,
		Serve: []netip.Addr{l.local.IP}}); err != nil {
		return nil, err
	}
	for _, lq := range l.qs {
		if err = l.steer.Register(lq.q); err != nil {
			return nil, err
		}
	}
	l.info.MultiBuffer, l.info.MultiBufferFallback = l.multiBuffer()
	if !l.info.MultiBuffer {
		// One UMEM frame per packet, whatever the interface allows.
		l.mtu = min(l.mtu, l.qs[0].q.RxFrameLen()-frame.HeaderLen)
	}
	if l.lentPer > 0 {
		l.lentOut = make([]uint8, l.lentPer*len(l.qs))
		for _, lq := range l.qs {
			base := uint32(lq.idx * l.lentPer)
			lq.q.SetLentDone(func(f uint32) { l.lentSent(base + f/uint32(l.lentFrames)) })
		}
	}
	if len(l.qs) > 1 {
		qs := make([]*xdp.Queue, len(l.qs))
		for i, lq := range l.qs {
			qs[i] = lq.q
		}
		if l.group, err = xdp.NewGroup(qs); err != nil {
			return nil, err
		}
	}
	if l.res, err = xdp.NewResolver(cfg.Netns, ifindex); err != nil {
		return nil, err
	}
	l.info.MTU = l.mtu
	l.info.XDPMode = l.steer.Mode()
	l.info.XDPFrags = l.steer.Frags()
	l.info.XDPFallback = l.steer.Fallback()
	l.info.FrameSize = l.qs[0].q.FrameSize()
	return l, nil
}

// multiBuffer reports whether the link carries frames of several UMEM
// frames, and if not where the interface's MTU would need them, why not:
// every queue must be bound with multi-buffer support and the steering
// program must be frags-aware.
func (l *XDPLink) multiBuffer() (bool, string) {
	for _, lq := range l.qs {
		if err := lq.q.MultiBufferErr(); err != nil {
			return false, err.Error()
		}
		if !lq.q.MultiBuffer() {
			return false, "" // not needed: every frame fits one UMEM frame
		}
	}
	if !l.steer.Frags() {
		return false, "the steering program is not frags-aware: " + l.steer.Fallback()
	}
	return true, ""
}

// LinkStats reports how XDP is attached and each AF_XDP socket's counters,
// and in Kernel their sum; any goroutine, also after Close (then the
// kernel's counters are zero).
func (l *XDPLink) LinkStats() LinkStats {
	s := l.info
	l.qmu.Lock()
	defer l.qmu.Unlock()
	s.Queues = make([]QueueStats, len(l.qs))
	for i, lq := range l.qs {
		qs := QueueStats{ID: lq.id, Mode: lq.q.Mode(), RxFrames: lq.rx.Load(), TxFrames: lq.tx.Load()}
		if err := lq.q.ZeroCopyErr(); err != nil {
			qs.ZeroCopyRefused = err.Error()
		}
		if !l.closed {
			qs.Kernel, _ = lq.q.KernelStats()
		}
		s.Queues[i] = qs
		s.Kernel = s.Kernel.Add(qs.Kernel)
	}
	return s
}

// LocalAddr returns the IPv4 address the link serves (XDPLinkConfig.Addr).
func (l *XDPLink) LocalAddr() netip.Addr { return l.local.IP }

// MTU returns the largest sdx datagram one frame carries both ways: the
// interface MTU less the IPv4 and UDP headers, at most what a UMEM frame
// receives (xdp.Queue.RxFrameLen) less the Ethernet, IPv4 and UDP headers.
func (l *XDPLink) MTU() int { return l.mtu }

// Stats returns the link's counters (owner only).
func (l *XDPLink) Stats() XDPLinkStats { return l.stats }

// Queue returns the first AF_XDP queue, for its counters and frame
// accounting (owner only).
func (l *XDPLink) Queue() *xdp.Queue { return l.qs[0].q }

// Queues returns the AF_XDP queues in the order of XDPLinkConfig.Queues
// (owner only).
func (l *XDPLink) Queues() []*xdp.Queue {
	qs := make([]*xdp.Queue, len(l.qs))
	for i, lq := range l.qs {
		qs[i] = lq.q
	}
	return qs
}

// Steering returns the attached steer program, for its counters.
func (l *XDPLink) Steering() *xdp.Steering { return l.steer }

// Send builds one frame for peer in a UMEM frame and queues it for Flush.
func (l *XDPLink) Send(peer netip.Addr, payload []byte) error {
	return l.send(peer, payload, frame.NotECT)
}

// SendECT is Send with the frame marked ECT(0) (see ECNLink).
func (l *XDPLink) SendECT(peer netip.Addr, payload []byte) error {
	return l.send(peer, payload, frame.ECT0)
}

// ReceivedCE reports whether the frame Receive hands to its fn arrived
// marked CE (see ECNLink).
func (l *XDPLink) ReceivedCE() bool { return l.parsed.Flow.ECN == frame.CE }

// send is Send with the frame's ECN codepoint.
func (l *XDPLink) send(peer netip.Addr, payload []byte, ecn uint8) error {
	if len(payload) > l.mtu {
		return ErrMsgSize
	}
	mac, resolving, err := l.resolve(peer)
	if err != nil {
		return err
	}
	k, h := flowOf(peer, payload, false)
	lq := l.txQueue(k, h)
	if resolving {
		return l.queuePending(peer, lq, h, payload)
	}
	// A frame longer than a UMEM frame is a multi-buffer packet, queued
	// whole or not at all; most are a chain of one.
	q := lq.q
	n := frame.HeaderLen + len(payload)
	if nf := (n + q.FrameSize() - 1) / q.FrameSize(); lq.ntx+nf > len(lq.txq) {
		if err := l.Flush(); err != nil {
			return err
		}
		if lq.ntx+nf > len(lq.txq) {
			l.stats.NoFrames++
			return ErrNoBufs
		}
	}
	chain, ok := q.AllocPacket(lq.txq[lq.ntx:lq.ntx], n)
	if !ok {
		q.Complete()
		if chain, ok = q.AllocPacket(lq.txq[lq.ntx:lq.ntx], n); !ok {
			l.stats.NoFrames++
			return ErrNoBufs
		}
	}
	l.encode(q.Data(chain[0]), peer, mac, h, len(payload), ecn)
	q.WritePacket(chain, frame.HeaderLen, payload)
	if t := l.tap.Load(); t != nil {
		t.record(true, q.Data(chain[0])[:frame.HeaderLen], payload)
	}
	lq.ntx += len(chain)
	lq.tx.Add(uint64(len(chain)))
	l.stats.Sent++
	return nil
}

// lent, region, sendLent, setLentDone and reap make the link a lender:
// each queue's UMEM lends lentPer buffers.
func (l *XDPLink) lent() (regions [][]byte, per, stride, head int) {
	if l.lentPer == 0 {
		return nil, 0, 0, 0
	}
	for _, lq := range l.qs {
		regions = append(regions, lq.q.Lent())
	}
	return regions, l.lentPer, l.lentStride(), frame.HeaderLen
}

func (l *XDPLink) lentStride() int { return l.lentFrames * l.qs[0].q.FrameSize() }

func (l *XDPLink) region(peer netip.Addr, lport, rport uint16) int {
	if len(l.qs) == 1 {
		return 0
	}
	k, h := flowFor(peer, lport, rport)
	return l.txQueue(k, h).idx
}

func (l *XDPLink) setLentDone(fn func(i uint32)) { l.lentFn = fn }

// reap also sends what waits to go out, so that frames held back while
// the interface was down leave, and give their buffers back, once it is
// up, whether or not the engine has more to send.
func (l *XDPLink) reap() {
	for _, lq := range l.qs {
		if lq.ntx > 0 || lq.q.TxPending() > 0 {
			lq.flush()
		}
	}
}

// errNotInPlace is sendLent's answer for a frame that must go out on a
// queue whose UMEM does not hold the buffer.
var errNotInPlace = errors.New("provider: the frame goes out on another queue")

func (l *XDPLink) sendLent(peer netip.Addr, i uint32, n int, ect bool) error {
	if n > l.mtu {
		return ErrMsgSize
	}
	mac, resolving, err := l.resolve(peer)
	if err != nil {
		return err
	}
	if resolving {
		return errNotInPlace // a copy waits for the answer, the buffer does not
	}
	lq := l.qs[int(i)/l.lentPer]
	off := (int(i) - lq.idx*l.lentPer) * l.lentStride()
	b := lq.q.Lent()[off : off+frame.HeaderLen+n]
	k, h := flowOf(peer, b[frame.HeaderLen:], false)
	if l.txQueue(k, h) != lq {
		l.stats.Copied++
		return errNotInPlace
	}
	q := lq.q
	nf := (len(b) + q.FrameSize() - 1) / q.FrameSize()
	if lq.ntx+nf > len(lq.txq) {
		if err := l.Flush(); err != nil {
			return err
		}
		if lq.ntx+nf > len(lq.txq) {
			l.stats.NoFrames++
			return ErrNoBufs
		}
	}
	ecn := frame.NotECT
	if ect {
		ecn = frame.ECT0
	}
	l.encode(b, peer, mac, h, n, ecn)
	q.LentPacket(lq.txq[lq.ntx:lq.ntx], off, len(b))
	if t := l.tap.Load(); t != nil {
		t.record(true, b)
	}
	l.lentOut[i] = uint8(nf)
	lq.ntx += nf
	lq.tx.Add(uint64(nf))
	l.stats.Sent++
	l.stats.InPlace++
	return nil
}

// lentSent is a queue's report of a frame of lent buffer i sent: the
// buffer goes back to the engine with its last frame.
func (l *XDPLink) lentSent(i uint32) {
	if l.lentOut[i]--; l.lentOut[i] == 0 && l.lentFn != nil {
		l.lentFn(i)
	}
}

// encode writes the headers of a frame to peer at mac, flow hash h, with
// payloadLen bytes of payload and ECN codepoint ecn into b[:frame.HeaderLen].
func (l *XDPLink) encode(b []byte, peer netip.Addr, mac [6]byte, h uint32, payloadLen int, ecn uint8) {
	flow := frame.Flow{Src: l.local, Dst: frame.Endpoint{MAC: mac, IP: peer, Port: l.cfg.Port}, ECN: ecn}
	flow.Src.Port = SrcPortMin + uint16(h%SrcPorts)
	l.ipID++
	flow.Encode(b, payloadLen, l.ipID)
}

// txQueue picks the queue flow k (hash h) goes out on: the one its frames
// last arrived on, else the one its hash picks.
func (l *XDPLink) txQueue(k flowKey, h uint32) *linkQueue {
	if len(l.qs) == 1 {
		return l.qs[0]
	}
	if i, ok := l.flows.get(k, h); ok {
		return l.qs[i]
	}
	return l.qs[h%uint32(len(l.qs))]
}

// resolve returns peer's Ethernet address from the cache or the kernel,
// or reports that the kernel is resolving it (resolving): the frame then
// waits in peer's pending queue. A peer that did not resolve fails fast
// for a while (unresolvedFirst, doubling up to unresolvedFor).
func (l *XDPLink) resolve(peer netip.Addr) (mac [6]byte, resolving bool, err error) {
	now := time.Since(l.born)
	if peer == l.last && now-l.lastPeer.checked < neighbourTTL {
		return l.lastPeer.mac, false, nil
	}
	if p, ok := l.peers[peer]; ok && now-p.checked < neighbourTTL {
		l.last, l.lastPeer = peer, p
		return p.mac, false, nil
	}
	if _, ok := l.pending[peer]; ok {
		return mac, true, nil
	}
	if u, ok := l.unresolved[peer]; ok && now < u.until {
		l.stats.Unresolved++
		return mac, false, ErrHostUnreach
	}
	if l.unanswerable(peer) {
		l.stats.Refused++
		return mac, false, ErrHostUnreach
	}
	hop, err := l.res.NextHop(peer)
	if err != nil {
		return mac, false, ErrHostUnreach
	}
	mac, ok, err := l.res.Neighbour(hop)
	if err != nil {
		return mac, false, fmt.Errorf("provider: neighbour %v: %w", hop, err)
	}
	if ok {
		l.known(peer, mac, now)
		return mac, false, nil
	}
	if len(l.pending) >= maxPendingPeers {
		l.stats.Unresolved++
		return mac, false, ErrHostUnreach
	}
	if err := l.res.Solicit(hop); err != nil {
		return mac, false, err
	}
	l.pending[peer] = &pendingPeer{hop: hop, since: now, checked: now}
	return mac, true, nil
}

// known caches peer's Ethernet address.
func (l *XDPLink) known(peer netip.Addr, mac [6]byte, now time.Duration) {
	p := peerMAC{mac: mac, checked: now}
	l.peers[peer] = p
	l.last, l.lastPeer = peer, p
	delete(l.unresolved, peer)
}

// failed makes peer fail fast for a while that doubles with every failure
// in a row: a peer whose answer was merely slow (a loaded host) is tried
// again by the next retransmission, one that never answers costs a
// lookup at most every unresolvedFor.
func (l *XDPLink) failed(peer netip.Addr, now time.Duration) {
	if len(l.unresolved) >= maxUnresolved {
		clear(l.unresolved)
	}
	b := unresolvedFirst
	if u, ok := l.unresolved[peer]; ok {
		b = min(2*u.backoff, unresolvedFor)
	}
	l.unresolved[peer] = unresolvedPeer{until: now + b, backoff: b}
}

// Flush puts the queued frames on the tx ring and kicks the kernel. A
// downed or vanished interface returns an error matching ENETDOWN; frames
// that did not fit on the ring stay queued for the next Flush.
func (l *XDPLink) Flush() error {
	if len(l.pending) > 0 {
		l.resolvePending()
	}
	var errs []error
	for _, lq := range l.qs {
		if len(l.qs) > 1 && lq.ntx == 0 && lq.q.TxPending() == 0 {
			continue
		}
		if err := lq.flush(); err != nil {
			if errors.Is(err, ErrNetDown) {
				// An *xdp.LinkError: it says whether the interface
				// was down or gone.
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// flush puts lq's queued frames on its tx ring and kicks the kernel.
func (lq *linkQueue) flush() error {
	q := lq.q
	q.Complete()
	if lq.ntx > 0 {
		n := q.Transmit(lq.txq[:lq.ntx])
		copy(lq.txq[:], lq.txq[n:lq.ntx])
		lq.ntx -= n
	}
	if err := q.Kick(); err != nil {
		return err
	}
	q.Complete()
	return nil
}

// Receive hands up to max received sdx datagrams to fn and returns how many
// it handed over. Frames not for this host's sdx port are counted and
// dropped.
// With several queues it drains them in turn, starting one further each
// call, so that no queue waits behind a busy one.
func (l *XDPLink) Receive(max int, fn func(peer netip.Addr, payload []byte, more [][]byte)) int {
	if len(l.pending) > 0 {
		l.resolvePending()
	}
	if len(l.qs) == 1 {
		return l.receive(l.qs[0], 0, max, fn)
	}
	got := 0
	for i := range l.qs {
		if got >= max {
			break
		}
		qi := (l.rr + i) % len(l.qs)
		got += l.receive(l.qs[qi], qi, max-got, fn)
	}
	l.rr = (l.rr + 1) % len(l.qs)
	return got
}

// receive is Receive on queue qi.
func (l *XDPLink) receive(lq *linkQueue, qi, max int, fn func(peer netip.Addr, payload []byte, more [][]byte)) int {
	q := lq.q
	got := 0
	for got < max {
		want := min(max-got, len(l.descs))
		n := q.ReceivePackets(l.descs[:], want)
		if n == 0 {
			break
		}
		lq.rx.Add(uint64(n))
		tap := l.tap.Load()
		packets := 0
		for i := 0; i < n; packets++ {
			d := l.descs[i]
			data, k := q.Data(d), 1
			var more [][]byte
			var err error
			if d.Options&xdp.PktContd == 0 {
				err = frame.Parse(data, &l.parsed)
			} else {
				// A multi-buffer frame: its headers in the first
				// buffer, its payload handed on in pieces.
				k, more, err = l.pieces(q, l.descs[i:n])
			}
			if tap != nil {
				l.capture(tap, q, l.descs[i:i+k])
			}
			switch {
			case err == frame.ErrNotUDP:
				if l.unreachable(data) {
					got++
				}
			case err != nil:
				l.stats.Malformed++
			case l.parsed.Flow.Dst.IP != l.local.IP || l.parsed.Flow.Dst.Port != l.cfg.Port:
				l.stats.NotOurs++
			case l.unanswerable(l.parsed.Flow.Src.IP):
				l.stats.Spoofed++
			default:
				l.stats.Received++
				if len(l.qs) > 1 {
					// Answers to this flow go out where it came in.
					k, h := flowOf(l.parsed.Flow.Src.IP, l.parsed.Payload, true)
					l.flows.put(k, h, uint8(qi))
				}
				fn(l.parsed.Flow.Src.IP, l.parsed.Payload, more)
				got++
			}
			q.ReleasePacket(l.descs[i : i+k])
			i += k
		}
		if packets < want {
			// The ring held no more when we looked: looking again at
			// once would only pull its index from the kernel's CPU.
			break
		}
	}
	q.Refill()
	return got
}

// pieces parses the multi-buffer frame whose chain begins descs into
// l.parsed, whose Payload is then the payload's part in the first buffer,
// and returns the chain's length and the payload's other pieces, valid
// until the frames are released.
func (l *XDPLink) pieces(q *xdp.Queue, descs []xdp.Desc) (k int, more [][]byte, err error) {
	k, frameLen := xdp.Chain(descs)
	plen, err := frame.ParseHead(q.Data(descs[0]), frameLen, &l.parsed)
	if err != nil {
		return k, nil, err
	}
	if k-1 > len(l.more) {
		return k, nil, frame.ErrShort // more buffers than a packet takes
	}
	more = l.more[:0]
	for left, i := plen-len(l.parsed.Payload), 1; left > 0 && i < k; i++ {
		p := q.Data(descs[i])
		p = p[:min(len(p), left)]
		more = append(more, p)
		left -= len(p)
	}
	return k, more, nil
}

// Wait blocks until a frame arrives on any queue, Wake is called, or
// timeout passes.
func (l *XDPLink) Wait(timeout time.Duration) error {
	if len(l.pending) > 0 && (timeout < 0 || timeout > resolvePoll) {
		timeout = resolvePoll // look at the kernel's answer soon
	}
	if l.group != nil {
		_, err := l.group.Wait(timeout)
		return err
	}
	_, err := l.qs[0].q.Wait(timeout)
	return err
}

// Wake makes a Wait return; any goroutine.
func (l *XDPLink) Wake() {
	if l.group != nil {
		l.group.Wake()
		return
	}
	l.qs[0].q.Wake()
}

// Close unregisters and closes the queues (accounting for every frame),
// detaches the program and closes the netlink socket.
func (l *XDPLink) Close() error {
	var errs []error
	l.dropPending()
	for _, lq := range l.qs {
		for _, d := range lq.txq[:lq.ntx] {
			lq.q.Release(lq.q.FrameOf(d))
		}
		lq.ntx = 0
	}
	if l.steer != nil {
		errs = append(errs, l.steer.Close())
		l.steer = nil
	}
	if l.group != nil {
		errs = append(errs, l.group.Close())
	}
	l.qmu.Lock()
	if !l.closed {
		for _, lq := range l.qs {
			errs = append(errs, lq.q.Close())
		}
		l.closed = true
	}
	l.qmu.Unlock()
	if l.res != nil {
		errs = append(errs, l.res.Close())
		l.res = nil
	}
	return errors.Join(errs...)
}

var _ Link = (*XDPLink)(nil)
