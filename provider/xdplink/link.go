// Package xdplink is sdx's AF_XDP data path as a provider.Link: the steer
// program on an interface, one AF_XDP socket per served rx queue, each
// with its own UMEM, and the kernel's route and neighbour tables for
// peers' Ethernet addresses. It satisfies provider.Link, provider.ECNLink,
// provider.Lender and provider.Holder without importing package provider.
//
// NewShards opens several such links on one interface, one per poller,
// each on a share of its queues.
//
// By concern: link.go opens and closes the link; shard.go names the
// shard of each flow and hands frames between shards; send.go builds frames
// and picks the queue each goes out on; lend.go lends UMEM frames to the
// provider's buffer pool and sends from them in place; receive.go hands
// received frames up; hold.go keeps received frames for their reader,
// within a budget; host.go keeps the link from answering addresses
// nobody may be sent to and takes ICMP port unreachables about our
// frames; pending.go holds frames while a neighbour resolves
// (internal/neigh is the cache); flows.go remembers the queue each flow
// arrived on; capture.go records frames for `sdx capture`; stats.go
// reports.
package xdplink

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
	"github.com/sdx-project/sdx/internal/neigh"
	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/xdp"
)

// Config places a link on the AF_XDP queues of an interface.
type Config struct {
	Netns     string // network namespace name or path; empty for the caller's
	Interface string // interface inside Netns
	// Queues lists the rx/tx queue ids to serve. Empty (and Queue 0):
	// every rx queue of the interface (xdp.RxQueues), so that no sdx frame
	// reaches a queue without a socket, whichever queue the NIC's RSS
	// picks. Queue, when not 0, is Queues: []int{Queue}; to serve queue
	// 0 alone, say Queues: []int{0}.
	Queues  []int
	Queue   int
	Port    uint16   // sdx UDP port (default provider.DefaultUDPPort, 7359)
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
	// buffer. Zero: DefaultLendBuffers at the interface's MTU (8192
	// buffers at MTU 1500, 16 MiB of UMEM), the provider's default pool;
	// negative: none. A provider with more Buffers keeps the rest in its
	// own memory and copies their data into frames, as it does for data
	// in another queue's share than the one its frame goes out on.
	LendBuffers int
	// HoldFrames is how many of each queue's frames may keep received
	// data for its reader (see Hold). Zero: half of the frames its fill
	// ring does not take, (NumFrames - FillSize) / 2, 1024 by default;
	// negative: none, and the provider copies what waits for a reader
	// into its own buffers.
	HoldFrames int
}

// queueIDs returns the queue ids c names; nil means every queue.
func (c *Config) queueIDs() []int {
	if len(c.Queues) > 0 {
		return c.Queues
	}
	if c.Queue != 0 {
		return []int{c.Queue}
	}
	return nil
}

// Link is the AF_XDP data path as a provider.Link.
//
// Like every provider.Link it is owned by the poller, and so is every
// queue: one poller drains all the rx rings, in turn, and waits on all of
// them at once (an xdp.Group). A frame goes out on the queue its flow's
// frames last arrived on, so that a peer that serves one queue only gets
// its answers there; a flow nothing has arrived for yet goes out on the
// queue the hash of its address and ports picks. Wake, Stats, Counters,
// SteerStats, SetSteered, StartCapture and CaptureState may be called
// from any goroutine; so may Close, once the poller no longer uses the
// link.
type Link struct {
	cfg   Config
	shard int     // this link's index among sh.links
	sh    *shared // the interface's shards; one for New's link
	in    *inbox  // frames other shards forwarded; nil with one shard
	woke  uint64  // shards forward handed frames to, to wake
	steer *xdp.Steering
	qs    []*linkQueue
	group *xdp.Group // waits on every queue; nil with one queue
	flows flowTable  // the queue each flow's frames last arrived on
	rr    int        // the queue Receive starts with
	local frame.Endpoint
	mtu   int
	ipID  uint16
	// subnet is local's prefix; own, every IPv4 address of the interface.
	subnet netip.Prefix
	own    []netip.Addr

	// Neighbours, on the link's clock (since born): res asks the
	// kernel, neigh caches its answers, pending holds the frames to
	// peers it is resolving (pending.go).
	born    time.Time
	res     *xdp.Resolver
	neigh   *neigh.Cache
	pending map[netip.Addr][]pendingFrame

	descs   [64]xdp.Desc                // received, being handed to fn
	more    [xdp.MaxPacketFrames][]byte // a multi-buffer frame's pieces after the first
	cur     holding                     // the frame fn has (hold.go)
	held    counter                     // frames the provider holds, over the queues
	parsed  frame.Parsed
	icmp    frame.Unreach
	unreach func(peer netip.Addr, quoted []byte)
	ctr     counters
	tap     atomic.Pointer[Capture] // a running capture (capture.go); nil: none

	// Lent buffers (see Lent): lentPer in each queue's UMEM, lentFrames
	// UMEM frames each, of which lentOut[i] are on their way out.
	lentPer    int
	lentFrames int
	lentOut    []uint8
	lentFn     func(i uint32)

	// For Stats and SteerStats, from any goroutine: info is set before
	// the link is shared; qmu keeps Close from closing the sockets and
	// the program under a read of their kernel counters.
	info   Stats
	qmu    sync.Mutex
	closed bool // under qmu: the queues and the program are closed
}

// linkQueue is one AF_XDP queue of a Link with the frames queued for it;
// owned by the link's poller. rx and tx count its frames for Stats, which
// any goroutine may call.
type linkQueue struct {
	id     int
	idx    int // in Link.qs
	q      *xdp.Queue
	report string // q.ModeReport, for Stats
	txq    [256]xdp.Desc
	ntx    int
	rx, tx counter
	// Frames the provider holds (hold.go), at most holdCap, and where
	// each one's piece lies.
	held    int
	holdCap int
	heldAt  []heldPiece
}

// New attaches the steer program to the interface, opens its queues and
// registers them with the program.
func New(cfg Config) (*Link, error) {
	ls, err := NewShards(cfg, 1)
	if err != nil {
		return nil, err
	}
	return ls[0], nil
}

// NewShards is New for n pollers: it attaches the steer program once and
// splits the queues among n links, link i taking every n-th queue from
// the i-th, so that each link has a poller of its own. A flow belongs to
// the link ShardOf names; a link hands a frame of another's flow to that
// one (see shard.go). Config.LendBuffers and Config.HoldFrames apply to
// each link. The links close one by one; the last detaches the program.
func NewShards(cfg Config, n int) (_ []*Link, err error) {
	if n < 1 || n > MaxShards {
		return nil, configErr("%d shards: from 1 to %d", n, MaxShards)
	}
	if cfg.Port == 0 {
		cfg.Port = wire.DefaultUDPPort
	}
	var info ifaceInfo
	if err := sys.InNetns(cfg.Netns, func() error { return info.learn(cfg) }); err != nil {
		return nil, fmt.Errorf("xdplink: %s: %w", cfg.Interface, err)
	}
	ids := cfg.queueIDs()
	if ids == nil {
		nq, err := xdp.RxQueues(cfg.Netns, cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("xdplink: %s: %w", cfg.Interface, err)
		}
		for id := range min(nq, bpf.MaxQueues) {
			ids = append(ids, id)
		}
	}
	for i, id := range ids {
		if slices.Contains(ids[:i], id) {
			return nil, configErr("Config.Queues %v: queue %d twice", ids, id)
		}
	}
	if len(ids) < n {
		return nil, configErr("%d shards need a queue each; %s serves %d (Config.Queues, or the interface's rx queues)", n, cfg.Interface, len(ids))
	}
	sh := &shared{links: make([]*Link, n)}
	born := time.Now()
	for i := range n {
		sh.links[i] = &Link{cfg: cfg, born: born, pending: make(map[netip.Addr][]pendingFrame), shard: i, sh: sh,
			local: info.local, subnet: info.subnet, own: info.own, mtu: info.mtu}
		if n > 1 {
			sh.links[i].in = newInbox(info.mtu)
		}
	}
	defer func() {
		if err != nil {
			for _, l := range sh.links {
				l.Close()
			}
		}
	}()
	// The queues before the program: a queue another stack holds says
	// so (EBUSY, "another sdx stack") before the attach would fail less
	// clearly.
	for i, l := range sh.links {
		var mine []int
		for j := i; j < len(ids); j += n {
			mine = append(mine, ids[j])
		}
		if err := l.openQueues(mine); err != nil {
			return nil, err
		}
	}
	steer, err := xdp.AttachSteer(xdp.SteerConfig{Netns: cfg.Netns, Interface: cfg.Interface, Port: cfg.Port, Mode: cfg.XDPMode,
		Serve: []netip.Addr{info.local.IP}})
	if err != nil {
		return nil, err
	}
	sh.steer = steer
	mtu := info.mtu
	for _, l := range sh.links {
		if err := l.start(steer, info.ifindex); err != nil {
			return nil, err
		}
		mtu = min(mtu, l.mtu)
	}
	// Every shard carries the same datagrams: a peer sees one MTU.
	for _, l := range sh.links {
		l.mtu, l.info.MTU = mtu, mtu
	}
	return sh.links, nil
}

// ifaceInfo is what a link learns of its interface, in its namespace.
type ifaceInfo struct {
	local   frame.Endpoint
	subnet  netip.Prefix
	own     []netip.Addr
	mtu     int
	ifindex int
}

func (f *ifaceInfo) learn(cfg Config) error {
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
		f.own = append(f.own, p.Addr())
		if !f.local.IP.IsValid() && (!cfg.Addr.IsValid() || cfg.Addr == p.Addr()) {
			f.local.IP, f.subnet = p.Addr(), p.Masked()
		}
	}
	if !f.local.IP.IsValid() {
		if cfg.Addr.IsValid() {
			return fmt.Errorf("%v is not an IPv4 address of %s", cfg.Addr, cfg.Interface)
		}
		return fmt.Errorf("no IPv4 address on %s", cfg.Interface)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("%s is not an Ethernet interface", cfg.Interface)
	}
	f.local.MAC = [6]byte(ifi.HardwareAddr)
	f.local.Port = cfg.Port
	f.mtu = ifi.MTU - frame.IPv4Len - frame.UDPLen
	f.ifindex = ifi.Index
	return nil
}

// openQueues opens the link's queues, ids, with their share of the lent
// buffers.
func (l *Link) openQueues(ids []int) error {
	cfg := l.cfg
	// Each buffer lent takes the frames a datagram of the interface's
	// MTU takes, whatever the link's MTU turns out to be below.
	fs := cfg.Frames.FrameSize
	if fs == 0 {
		fs = xdp.FrameSizeFor(l.mtu + frame.IPv4Len + frame.UDPLen)
	}
	l.lentFrames = min((frame.HeaderLen+min(l.mtu, 65535)+fs-1)/fs, xdp.MaxPacketFrames)
	lend := cfg.LendBuffers
	if lend == 0 {
		lend = DefaultLendBuffers(min(l.mtu, 65535))
	}
	if lend > 0 {
		l.lentPer = (lend + len(ids) - 1) / len(ids)
		if max := xdp.MaxLentFrames / l.lentFrames * len(ids); lend > max {
			return configErr("Config.LendBuffers %d: at most %d on %s", lend, max, cfg.Interface)
		}
	}
	for _, id := range ids {
		fc := cfg.Frames
		fc.Netns, fc.Interface, fc.Queue = cfg.Netns, cfg.Interface, id
		fc.LentFrames = l.lentPer * l.lentFrames
		q, err := xdp.Open(fc)
		if err != nil {
			return err
		}
		lq := &linkQueue{id: id, idx: len(l.qs), q: q, report: q.ModeReport()}
		l.qmu.Lock()
		l.qs = append(l.qs, lq)
		l.qmu.Unlock()
		if lq.holdCap, err = holdFrames(cfg.HoldFrames, q.Config()); err != nil {
			return err
		}
		lq.heldAt = make([]heldPiece, q.Config().NumFrames)
		// A received frame must fit what the queue receives: one
		// UMEM frame less the kernel's headroom, or several with
		// multi-buffer frames.
		if max := q.MaxFrameLen() - frame.HeaderLen; l.mtu > max {
			l.mtu = max
		}
	}
	return nil
}

// start registers the link's queues with the attached program steer and
// readies the rest: multi-buffer frames, lent buffers, the wait over its
// queues, the neighbour cache.
func (l *Link) start(steer *xdp.Steering, ifindex int) (err error) {
	l.qmu.Lock()
	l.steer = steer
	l.qmu.Unlock()
	for _, lq := range l.qs {
		if err = l.steer.Register(lq.q); err != nil {
			return err
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
			return err
		}
	}
	if l.res, err = xdp.NewResolver(l.cfg.Netns, ifindex); err != nil {
		return err
	}
	l.neigh = neigh.New(l.res)
	l.neigh.Refuse = l.unanswerable
	l.info.MTU = l.mtu
	l.info.XDPMode = l.steer.Mode()
	l.info.XDPFrags = l.steer.Frags()
	l.info.XDPFallback = l.steer.Fallback()
	l.info.FrameSize = l.qs[0].q.FrameSize()
	return nil
}

// multiBuffer reports whether the link carries frames of several UMEM
// frames, and if not where the interface's MTU would need them, why not:
// every queue must be bound with multi-buffer support and the steering
// program must be frags-aware.
func (l *Link) multiBuffer() (bool, string) {
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

// LocalAddr returns the IPv4 address the link serves (Config.Addr).
func (l *Link) LocalAddr() netip.Addr { return l.local.IP }

// MTU returns the largest sdx datagram one frame carries both ways: the
// interface MTU less the IPv4 and UDP headers, at most what a UMEM frame
// receives (xdp.Queue.RxFrameLen) less the Ethernet, IPv4 and UDP headers.
func (l *Link) MTU() int { return l.mtu }

// SetSteered takes the link's queues out of the steer program (false),
// or puts them back (true); any goroutine. After Close it returns
// net.ErrClosed. While they are
// out, the interface's kernel takes the sdx frames and answers them as
// it answers a UDP port nobody serves (ICMP port unreachable): the peers
// see this stack as gone, and fail their connections to it.
func (l *Link) SetSteered(on bool) error {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	var errs []error
	for _, lq := range l.qs {
		if on {
			errs = append(errs, l.steer.Register(lq.q))
		} else {
			errs = append(errs, l.steer.Unregister(lq.id))
		}
	}
	return errors.Join(errs...)
}

// Wait blocks until a frame arrives on any queue, Wake is called, or
// timeout passes.
func (l *Link) Wait(timeout time.Duration) error {
	if l.in.pending() {
		return nil
	}
	if l.neigh.Resolving() > 0 && (timeout < 0 || timeout > neigh.PollEvery) {
		timeout = neigh.PollEvery // look at the kernel's answer soon
	}
	if l.group != nil {
		_, err := l.group.Wait(timeout)
		return err
	}
	_, err := l.qs[0].q.Wait(timeout)
	return err
}

// Wake makes a Wait return; any goroutine.
func (l *Link) Wake() {
	if l.group != nil {
		l.group.Wake()
		return
	}
	l.qs[0].q.Wake()
}

// Close unregisters and closes the queues (accounting for every frame),
// detaches the program and closes the netlink socket. Call it once the
// poller no longer uses the link (after provider.Provider.Cleanup, which
// closes it); a second Close does nothing.
func (l *Link) Close() error {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	l.dropPending()
	for _, lq := range l.qs {
		for _, d := range lq.txq[:lq.ntx] {
			lq.q.Release(lq.q.FrameOf(d))
		}
		lq.ntx = 0
	}
	if l.sh != nil {
		errs = append(errs, l.sh.leave(l))
	}
	if l.group != nil {
		errs = append(errs, l.group.Close())
	}
	for _, lq := range l.qs {
		errs = append(errs, lq.q.Close())
	}
	if l.res != nil {
		errs = append(errs, l.res.Close())
	}
	return errors.Join(errs...)
}

// ErrConfig wraps every configuration error of New; the message says
// which Config field to change.
var ErrConfig = errors.New("xdplink: bad configuration")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}
