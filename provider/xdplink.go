package provider

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/xdp"
)

// XDPLinkConfig places a provider on one AF_XDP queue of an interface.
type XDPLinkConfig struct {
	Netns     string   // network namespace name or path; empty for the caller's
	Interface string   // interface inside Netns
	Queue     int      // rx/tx queue id (default 0)
	Port      uint16   // sdx UDP port (default DefaultUDPPort)
	XDPMode   bpf.Mode // force native or generic XDP; zero tries native first
	// Addr is the IPv4 address of Interface the link serves: sdx frames
	// to it are the provider's, frames to the interface's other addresses
	// the kernel's. Zero: the interface's first IPv4 address (its primary,
	// the first `ip -4 address show` lists).
	Addr netip.Addr
	// Frames sizes the UMEM and rings; Netns, Interface and Queue are
	// taken from above. Zero fields take xdp's defaults.
	Frames xdp.Config
}

// XDPLink is the AF_XDP data path as a Link: the steer program on the
// interface, one AF_XDP queue, and the kernel's neighbour table for peers'
// Ethernet addresses. Like every Link it is owned by the poller; Wake may
// be called from any goroutine.
type XDPLink struct {
	cfg   XDPLinkConfig
	steer *xdp.Steering
	q     *xdp.Queue
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
	// resolve, until when they fail fast; waited is the time spent
	// waiting for the kernel since waitWindow began.
	born       time.Time
	last       netip.Addr
	lastPeer   peerMAC
	peers      map[netip.Addr]peerMAC
	unresolved map[netip.Addr]unresolvedPeer
	waitWindow time.Duration
	waited     time.Duration
	descs      [64]xdp.Desc // received, being handed to fn
	txq        [256]xdp.Desc
	ntx        int
	parsed     frame.Parsed
	icmp       frame.Unreach
	unreach    func(peer netip.Addr, quoted []byte)
	stats      XDPLinkStats
	// linkErr is the last transmit error that meant ENETDOWN.
	linkErr error

	// For LinkStats, from any goroutine: info is set before the link is
	// shared; qmu keeps Close from closing the socket under a read of
	// its kernel counters.
	info LinkStats
	qmu  sync.Mutex
}

// XDPLinkStats are the link's own counters.
type XDPLinkStats struct {
	Sent, Received uint64
	NotOurs        uint64 // frames on the queue not addressed to this host's sdx port
	Malformed      uint64 // frames whose headers did not parse
	Unresolved     uint64 // sends dropped because the peer's address did not resolve in time
	NoFrames       uint64 // sends refused with ENOBUFS for want of a UMEM frame or tx slot
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

// Resolving a peer the kernel does not know: Send waits at most resolveWait
// for the answer, and all such waits together take at most waitBudget of
// every waitEvery (3% of the poller); a peer that did not resolve fails fast
// for unresolvedFirst, doubling with each failure in a row up to
// unresolvedFor (the kernel keeps resolving it meanwhile), and at most
// maxUnresolved such peers are remembered. A frame that fails is dropped;
// the protocol retransmits.
const (
	resolveWait     = 2 * time.Millisecond
	waitBudget      = 3 * time.Millisecond
	waitEvery       = 100 * time.Millisecond
	unresolvedFirst = 10 * time.Millisecond
	unresolvedFor   = 200 * time.Millisecond
	maxUnresolved   = 1024
)

// OpenXDPLink attaches the steer program, opens the queue and registers it.
func OpenXDPLink(cfg XDPLinkConfig) (_ *XDPLink, err error) {
	if cfg.Port == 0 {
		cfg.Port = DefaultUDPPort
	}
	l := &XDPLink{cfg: cfg, born: time.Now(), peers: make(map[netip.Addr]peerMAC), unresolved: make(map[netip.Addr]unresolvedPeer)}
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
	fc := cfg.Frames
	fc.Netns, fc.Interface, fc.Queue = cfg.Netns, cfg.Interface, cfg.Queue
	if l.q, err = xdp.Open(fc); err != nil {
		return nil, err
	}
	// A received frame must fit what the kernel leaves of a UMEM frame
	// after its headroom; a longer one is dropped before the rx ring.
	if max := l.q.RxFrameLen() - frame.HeaderLen; l.mtu > max {
		l.mtu = max
	}
	if l.steer, err = xdp.AttachSteer(xdp.SteerConfig{Netns: cfg.Netns, Interface: cfg.Interface, Port: cfg.Port, Mode: cfg.XDPMode,
		Serve: []netip.Addr{l.local.IP}}); err != nil {
		return nil, err
	}
	if err = l.steer.Register(l.q); err != nil {
		return nil, err
	}
	if l.res, err = xdp.NewResolver(cfg.Netns, ifindex); err != nil {
		return nil, err
	}
	l.info = LinkStats{
		MTU:         l.mtu,
		XDPMode:     l.steer.Mode(),
		XDPFrags:    l.steer.Frags(),
		XDPFallback: l.steer.Fallback(),
		FrameSize:   l.q.FrameSize(),
	}
	return l, nil
}

// LinkStats reports how XDP is attached and the AF_XDP socket's kernel
// counters; any goroutine, also after Close (then the counters are zero).
func (l *XDPLink) LinkStats() LinkStats {
	s := l.info
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.q != nil {
		s.Kernel, _ = l.q.KernelStats()
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

// Queue returns the AF_XDP queue, for its counters and frame accounting
// (owner only).
func (l *XDPLink) Queue() *xdp.Queue { return l.q }

// Steering returns the attached steer program, for its counters.
func (l *XDPLink) Steering() *xdp.Steering { return l.steer }

// Send builds one frame for peer in a UMEM frame and queues it for Flush.
func (l *XDPLink) Send(peer netip.Addr, payload []byte) error {
	if len(payload) > l.mtu {
		return ErrMsgSize
	}
	mac, err := l.resolve(peer)
	if err != nil {
		return err
	}
	if l.ntx == len(l.txq) {
		if err := l.Flush(); err != nil {
			return err
		}
	}
	f, ok := l.q.Alloc()
	if !ok {
		l.q.Complete()
		if f, ok = l.q.Alloc(); !ok {
			l.stats.NoFrames++
			return ErrNoBufs
		}
	}
	buf := l.q.Frame(f)
	flow := frame.Flow{Src: l.local, Dst: frame.Endpoint{MAC: mac, IP: peer, Port: l.cfg.Port}}
	l.ipID++
	n := flow.Encode(buf, len(payload), l.ipID)
	copy(buf[frame.HeaderLen:], payload)
	l.txq[l.ntx] = xdp.Desc{Addr: l.q.Addr(f), Len: uint32(n)}
	l.ntx++
	l.stats.Sent++
	return nil
}

// resolve returns peer's Ethernet address from the cache or the kernel.
// A peer the kernel does not know yet is solicited; the poller waits for
// the answer at most resolveWait, and for all peers together at most
// waitBudget per waitEvery, so that frames from addresses nobody answers for
// (a flood of spoofed sources, say) cannot stall it. A peer that did not
// resolve fails fast for a while (unresolvedFirst, doubling up to
// unresolvedFor).
func (l *XDPLink) resolve(peer netip.Addr) ([6]byte, error) {
	now := time.Since(l.born)
	if peer == l.last && now-l.lastPeer.checked < neighbourTTL {
		return l.lastPeer.mac, nil
	}
	if p, ok := l.peers[peer]; ok && now-p.checked < neighbourTTL {
		l.last, l.lastPeer = peer, p
		return p.mac, nil
	}
	if u, ok := l.unresolved[peer]; ok && now < u.until {
		l.stats.Unresolved++
		return [6]byte{}, ErrHostUnreach
	}
	if l.unanswerable(peer) {
		l.stats.Refused++
		return [6]byte{}, ErrHostUnreach
	}
	hop, err := l.res.NextHop(peer)
	if err != nil {
		return [6]byte{}, ErrHostUnreach
	}
	if now-l.waitWindow >= waitEvery {
		l.waitWindow, l.waited = now, 0
	}
	wait := l.waited < waitBudget
	deadline := now + min(resolveWait, waitBudget-l.waited)
	defer func() { l.waited += time.Since(l.born) - now }()
	for solicited := false; ; {
		mac, ok, err := l.res.Neighbour(hop)
		if err != nil {
			return [6]byte{}, fmt.Errorf("provider: neighbour %v: %w", hop, err)
		}
		if ok {
			p := peerMAC{mac: mac, checked: now}
			l.peers[peer] = p
			l.last, l.lastPeer = peer, p
			delete(l.unresolved, peer)
			return mac, nil
		}
		if !solicited {
			if err := l.res.Solicit(hop); err != nil {
				return [6]byte{}, err
			}
			solicited = true
		}
		if !wait || time.Since(l.born) > deadline {
			l.stats.Unresolved++
			if len(l.unresolved) >= maxUnresolved {
				clear(l.unresolved)
			}
			// Fail fast for a while that doubles with every failure in a
			// row: a peer whose answer was merely slow (a loaded host)
			// is tried again by the next retransmission, one that never
			// answers costs a lookup at most every unresolvedFor.
			b := unresolvedFirst
			if u, ok := l.unresolved[peer]; ok {
				b = min(2*u.backoff, unresolvedFor)
			}
			l.unresolved[peer] = unresolvedPeer{until: now + b, backoff: b}
			return [6]byte{}, ErrHostUnreach
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// Flush puts the queued frames on the tx ring and kicks the kernel. A
// downed or vanished interface returns an error matching ENETDOWN; frames
// that did not fit on the ring stay queued for the next Flush.
func (l *XDPLink) Flush() error {
	l.q.Complete()
	if l.ntx > 0 {
		n := l.q.Transmit(l.txq[:l.ntx])
		copy(l.txq[:], l.txq[n:l.ntx])
		l.ntx -= n
	}
	if err := l.q.Kick(); err != nil {
		if errors.Is(err, ErrNetDown) {
			// The engine compares with the sentinel; the detail (down or
			// gone) stays in LinkErr.
			l.linkErr = err
			return ErrNetDown
		}
		return err
	}
	l.q.Complete()
	return nil
}

// LinkErr returns the last error that made Flush report ENETDOWN: an
// *xdp.LinkError saying whether the interface was down or gone.
func (l *XDPLink) LinkErr() error { return l.linkErr }

// Receive hands up to max received sdx datagrams to fn and returns how many
// it handed over. Frames not for this host's sdx port are counted and
// dropped.
func (l *XDPLink) Receive(max int, fn func(peer netip.Addr, payload []byte)) int {
	got := 0
	for got < max {
		want := min(max-got, len(l.descs))
		n := l.q.Receive(l.descs[:want])
		if n == 0 {
			break
		}
		for _, d := range l.descs[:n] {
			switch err := frame.Parse(l.q.Data(d), &l.parsed); {
			case err == frame.ErrNotUDP:
				if l.unreachable(l.q.Data(d)) {
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
				fn(l.parsed.Flow.Src.IP, l.parsed.Payload)
				got++
			}
			l.q.Release(l.q.FrameOf(d))
		}
		if n < want {
			// The ring held no more when we looked: looking again at
			// once would only pull its index from the kernel's CPU.
			break
		}
	}
	l.q.Refill()
	return got
}

// Wait blocks until a frame arrives, Wake is called, or timeout passes.
func (l *XDPLink) Wait(timeout time.Duration) error {
	_, err := l.q.Wait(timeout)
	return err
}

// Wake makes a Wait return; any goroutine.
func (l *XDPLink) Wake() { l.q.Wake() }

// Close unregisters and closes the queue (accounting for every frame),
// detaches the program and closes the netlink socket.
func (l *XDPLink) Close() error {
	var errs []error
	for _, d := range l.txq[:l.ntx] {
		l.q.Release(l.q.FrameOf(d))
	}
	l.ntx = 0
	if l.steer != nil {
		errs = append(errs, l.steer.Close())
		l.steer = nil
	}
	l.qmu.Lock()
	if l.q != nil {
		errs = append(errs, l.q.Close())
		l.q = nil
	}
	l.qmu.Unlock()
	if l.res != nil {
		errs = append(errs, l.res.Close())
		l.res = nil
	}
	return errors.Join(errs...)
}

var _ Link = (*XDPLink)(nil)
