package sdx

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/control"
	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/xdplink"
	"github.com/sdx-project/sdx/xdp"
)

// Defaults of a Stack's Config.
const (
	// DefaultCloseTimeout bounds a graceful close that runs in the
	// background (SetLinger with a negative value, the default): after it
	// the connection is reset. It is Linux's tcp_fin_timeout.
	DefaultCloseTimeout = 60 * time.Second
	// DefaultPollMode is how a stack's provider waits, unless
	// Config.Provider.Mode says otherwise: parked in the Go runtime's
	// netpoller, never spinning, as a goroutine blocked on a kernel
	// socket waits. A program with more runnable goroutines than cores
	// (an HTTP or RPC server) loses nothing to a spinner; a program that
	// can give a core to each side of a latency-critical exchange gets
	// lower latency from provider.PollAdaptive or PollBusy
	// (docs/SWITCH.md, "Polling").
	DefaultPollMode = provider.PollPark
	// MaxCloseTimeout bounds Config.CloseTimeout.
	MaxCloseTimeout = 24 * time.Hour
)

// Config places a Stack on a network interface.
type Config struct {
	// Netns is the network namespace of the interface: a name under
	// /run/netns or a path; empty for the caller's own. The kernel TCP
	// side of the stack (fallback dials, the TCP half of listeners) lives
	// there too.
	Netns string
	// Interface is the interface sdx attaches to (XDP program and an
	// AF_XDP socket per queue). Required unless Link is set.
	Interface string
	// Queues lists the interface's rx/tx queues the stack serves. Empty
	// (and Queue 0): every rx queue, so that sdx frames are the stack's
	// whichever queue the NIC hashes them to. Queue, when not 0, is
	// Queues: []int{Queue}; to serve queue 0 alone, say Queues: []int{0}.
	// A stack on some queues only reaches a peer that serves every queue
	// (or the same ones), not the other way round (docs/SWITCH.md).
	Queues []int
	Queue  int
	// Port is the UDP port sdx frames use (default
	// provider.DefaultUDPPort). Every host of a link must agree on it.
	Port uint16
	// XDPMode forces native (bpf.ModeNative) or generic (bpf.ModeGeneric)
	// XDP; zero tries native first and falls back to generic, which
	// LinkStats reports.
	XDPMode bpf.Mode
	// SingleBuffer keeps every frame within one UMEM frame: no
	// multi-buffer packets (AF_XDP's XDP_USE_SG), which the stack
	// otherwise uses where the interface's MTU exceeds what a UMEM frame
	// receives (Linux 6.6 and a frags-aware XDP program). Datagrams are
	// then at most 3798 bytes (what a 4 KiB UMEM frame receives), whatever
	// the MTU; LinkStats says which applies and why.
	SingleBuffer bool
	// Addr is the one IPv4 address of Interface the stack serves (default:
	// the interface's first, as `ip -4 address show` lists them). sdx
	// frames to the interface's other addresses, and to broadcast
	// addresses, are left to the kernel.
	Addr netip.Addr

	// Link, if set, replaces the AF_XDP link: the stack runs over it (for
	// example a memnet.Network link, for tests that need no root).
	// Such a stack has no kernel side: its listeners accept sdx only, its
	// dials never fall back, and Prefix must say which destinations the
	// link reaches.
	Link   provider.Link
	Prefix netip.Prefix

	// Provider tunes the provider (buffers, timers, polling mode); its
	// Link field is ignored. Zero fields take the provider's defaults,
	// except the polling mode: DefaultPollMode.
	Provider provider.Config

	// CloseTimeout bounds a background graceful close (default
	// DefaultCloseTimeout, at most MaxCloseTimeout: 24h).
	CloseTimeout time.Duration

	// NoControl turns off the stack's control socket. By default (false)
	// every stack serves one, ControlDir/<pid>-<n>.sock, mode 0600, for
	// `sdx stat` (root and the process's own user only); it answers from
	// snapshots the poller takes on request, and costs the data path
	// nothing while nobody reads it. ControlDir defaults to
	// DefaultControlDir (/run/sdx).
	NoControl  bool
	ControlDir string

	// Pollers is how many pollers serve the stack's connections (default
	// 1). With n > 1 the interface's queues (Queues, or all of them) are
	// split among n providers, each with a poller, queues and buffers of
	// its own, and a connection lives in the one its flow's hash names
	// (xdplink.ShardOf), so that n connections can keep up to n cores
	// busy. A peer with the same number of pollers and queues finds every
	// frame on the queue of its poller; elsewhere frames that arrive on
	// another poller's queue are copied over to it. It needs at least n
	// queues; not with Link (docs/SWITCH.md, "Several pollers").
	Pollers int
}

// Stack is the switch's handle on one SAN service provider: a provider on
// an interface (one per poller, Config.Pollers, each on its share of the
// queues), the interface's address and subnet, and the network namespace
// for the kernel TCP side. Dialers and listeners use it; it is safe for
// use by any goroutine.
//
// A Stack owns each provider's one completion queue, for connects and
// accepts. Completions are consumed on that provider's poller, in the
// queue's notify function, and handed to the connection or listener
// named by the completion's context (a handle, and the shard), which is
// woken through a channel.
// Nothing that runs there takes a lock that is held across a provider
// call. Connections move data through the provider's direct verbs, not
// the queue.
type Stack struct {
	cfg     Config
	shards  []*stackShard // one per poller
	p       *provider.Provider
	xl      *xdplink.Link // shards[0]'s
	pick    atomic.Uint32 // the shard of the next dial
	addr    netip.Addr
	prefix  netip.Prefix
	kernel  bool // fallback dials and TCP listeners are possible
	ifindex int

	resMu sync.Mutex    // protects res
	res   *xdp.Resolver // route lookups; nil for a Link stack

	// Handles: hmu protects handles and next. The poller reads them in
	// onCompletion.
	hmu     sync.RWMutex
	handles map[uint64]handler
	next    uint64

	// Lifecycle: mu protects closed transitions, listeners and bg.Add.
	mu        sync.Mutex
	closed    atomic.Bool
	quit      chan struct{} // closed by Close: background closers give up
	listeners map[*Listener]struct{}
	bg        sync.WaitGroup // background closers

	fallbacks fallbackCounts // kernel TCP connections by reason

	// The control socket (control.go) and the open kernel TCP
	// connections it lists; tcpMu protects tcpConns.
	ctl      *control.Server
	ctlErr   error
	pollMode provider.PollMode
	tcpMu    sync.Mutex
	tcpConns map[*Conn]struct{}
}

// stackShard is one poller's provider with its link and its completion
// queue, for connects and accepts.
type stackShard struct {
	i  int
	st *Stack
	p  *provider.Provider
	xl *xdplink.Link // nil for a Link stack
	cq *provider.CompletionQueue
}

// handler receives the completions of operations posted with its handle.
// complete runs on the poller: it must not block or call blocking
// provider verbs.
type handler interface {
	complete(c provider.Completion)
}

// Completion contexts carry the handle in the high bits, then the
// shard, then a tag.
const (
	ctxShift   = 8
	shardShift = 2
	tagConnect = 1
	tagAccept  = 2
)

// shardOf is the shard a completion context names.
func shardOf(ctx uint64) int { return int(ctx & (1<<ctxShift - 1) >> shardShift) }

// NewStack starts a provider on the interface of cfg (or on cfg.Link) and
// returns the stack. Package-level Dial and Listen use the open stacks;
// Close releases it.
func NewStack(cfg Config) (_ *Stack, err error) {
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	// Before anything is attached: a bad value costs nothing.
	if cfg.CloseTimeout > MaxCloseTimeout {
		return nil, fmt.Errorf("%w: Config.CloseTimeout %v is too long: use at most %v", ErrConfig, cfg.CloseTimeout, MaxCloseTimeout)
	}
	s := &Stack{
		cfg:       cfg,
		handles:   make(map[uint64]handler),
		quit:      make(chan struct{}),
		listeners: make(map[*Listener]struct{}),
		tcpConns:  make(map[*Conn]struct{}),
	}
	n := max(cfg.Pollers, 1)
	switch {
	case n > xdplink.MaxShards:
		return nil, fmt.Errorf("%w: Config.Pollers %d: at most %d", ErrConfig, n, xdplink.MaxShards)
	case n > 1 && cfg.Link != nil:
		return nil, fmt.Errorf("%w: Config.Pollers %d needs an interface, not Config.Link", ErrConfig, n)
	}
	links := []provider.Link{cfg.Link}
	var xls []*xdplink.Link
	if cfg.Link == nil {
		if cfg.Interface == "" {
			return nil, errors.New("sdx: Config.Interface is required (or Config.Link)")
		}
		xls, err = xdplink.NewShards(xdplink.Config{
			Netns: cfg.Netns, Interface: cfg.Interface, Queues: cfg.Queues, Queue: cfg.Queue, Port: cfg.Port,
			Addr: cfg.Addr, XDPMode: cfg.XDPMode, Frames: xdp.Config{SingleBuffer: cfg.SingleBuffer},
			// The whole pool in the UMEM, sent from in place.
			LendBuffers: cfg.Provider.Buffers,
		}, n)
		if err != nil {
			if n > 1 && errors.Is(err, xdplink.ErrConfig) {
				return nil, fmt.Errorf("%w: Config.Pollers %d: %w", ErrConfig, n, err)
			}
			return nil, fmt.Errorf("sdx: %w", err)
		}
		links = links[:0]
		for _, xl := range xls {
			links = append(links, xl)
		}
		s.xl = xls[0]
		s.addr = s.xl.LocalAddr()
		closeLinks := func() {
			for _, xl := range xls {
				xl.Close()
			}
		}
		if err := s.interfaceInfo(); err != nil {
			closeLinks()
			return nil, err
		}
		if s.res, err = xdp.NewResolver(cfg.Netns, s.ifindex); err != nil {
			closeLinks()
			return nil, fmt.Errorf("sdx: %w", err)
		}
		s.kernel = true
	} else {
		if !cfg.Prefix.IsValid() {
			return nil, errors.New("sdx: Config.Prefix is required with Config.Link")
		}
		s.addr = cfg.Link.LocalAddr()
		s.prefix = cfg.Prefix.Masked()
	}
	defer func() {
		if err != nil && s.res != nil {
			s.res.Close()
		}
	}()
	pc := cfg.Provider
	if pc.Mode == provider.PollDefault {
		pc.Mode = DefaultPollMode
	}
	if n > 1 {
		// One stack to its peers: they see one incarnation.
		pc.Incarnation = rand.Uint64() | 1
	}
	maxSockets := pc.MaxSockets
	if maxSockets <= 0 {
		maxSockets = 4096 // the provider's default
	}
	for i, link := range links {
		sh := &stackShard{i: i, st: s}
		if xls != nil {
			sh.xl = xls[i]
		}
		if err = s.startShard(sh, pc, link, n, maxSockets); err != nil {
			for _, o := range s.shards {
				o.p.Cleanup()
			}
			for _, l := range links[i+1:] {
				l.Close()
			}
			return nil, err
		}
		s.shards = append(s.shards, sh)
	}
	s.p = s.shards[0].p
	s.pollMode = pc.Mode
	register(s)
	s.startControl()
	return s, nil
}

// startShard starts shard sh's provider on link, one of n, and its
// completion queue; on failure link is closed.
func (s *Stack) startShard(sh *stackShard, pc provider.Config, link provider.Link, n, maxSockets int) error {
	pc.Link = link
	if n > 1 {
		i := sh.i
		pc.Owns = func(lport uint16, peer netip.AddrPort) bool {
			return xdplink.ShardOf(netip.AddrPortFrom(s.addr, lport), peer, n) == i
		}
		// The ICMP that tells one poller the peer's stack is gone
		// names its connections only: the others hear it from here,
		// off the poller, which must not wait for theirs.
		pc.PeerGone = func(peer netip.Addr, inc uint64) {
			for _, o := range s.shards {
				if o.i != i {
					go o.p.PeerGone(peer, inc)
				}
			}
		}
	}
	var err error
	if sh.p, err = provider.Startup(pc); err != nil {
		link.Close()
		return fmt.Errorf("sdx: %w", err)
	}
	// A connection posts at most its connect, a listener one accept; data
	// moves through the direct verbs.
	if sh.cq, err = sh.p.NewCompletionQueue(pow2(maxSockets), sh.onCompletion); err != nil {
		sh.p.Cleanup()
		return fmt.Errorf("sdx: %w", err)
	}
	return nil
}

// interfaceInfo learns the interface's index and the prefix of its
// address, inside the stack's namespace.
func (s *Stack) interfaceInfo() error {
	return sys.InNetns(s.cfg.Netns, func() error {
		ifi, err := net.InterfaceByName(s.cfg.Interface)
		if err != nil {
			return fmt.Errorf("sdx: %w", err)
		}
		s.ifindex = ifi.Index
		addrs, err := ifi.Addrs()
		if err != nil {
			return fmt.Errorf("sdx: %s: %w", s.cfg.Interface, err)
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == s.addr {
				s.prefix = p.Masked()
				return nil
			}
		}
		return fmt.Errorf("sdx: %s has no prefix for %v", s.cfg.Interface, s.addr)
	})
}

func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

// Addr returns the one address the stack serves: Config.Addr, by default
// its interface's first IPv4 address. The stack does not serve the
// interface's other addresses: sdx frames to them go to the kernel.
func (s *Stack) Addr() netip.Addr { return s.addr }

// Prefix returns the subnet of the stack's interface (Config.Prefix for a
// Link stack).
func (s *Stack) Prefix() netip.Prefix { return s.prefix }

// Provider returns the stack's provider, for its counters (Stats); with
// several pollers, the first one's (see Providers).
func (s *Stack) Provider() *provider.Provider { return s.p }

// Providers returns the providers of the stack's pollers, one each
// (Config.Pollers).
func (s *Stack) Providers() []*provider.Provider {
	ps := make([]*provider.Provider, len(s.shards))
	for i, sh := range s.shards {
		ps[i] = sh.p
	}
	return ps
}

// Stats returns the provider's counters, summed over the stack's pollers.
func (s *Stack) Stats() provider.Stats {
	st := s.p.Stats()
	for _, sh := range s.shards[1:] {
		st = st.Add(sh.p.Stats())
	}
	return st
}

// shardFor picks the shard of the next dial: each in turn.
func (s *Stack) shardFor() *stackShard {
	if len(s.shards) == 1 {
		return s.shards[0]
	}
	return s.shards[int(s.pick.Add(1))%len(s.shards)]
}

// LinkStats reports how the stack's AF_XDP link is attached and its
// queues' counters, those of every poller's queues; any goroutine. A
// stack on a Config.Link reports only its MTU.
func (s *Stack) LinkStats() xdplink.Stats {
	if s.xl == nil {
		return xdplink.Stats{MTU: s.p.Stats().MTU}
	}
	ls := s.xl.Stats()
	for _, sh := range s.shards[1:] {
		o := sh.xl.Stats()
		ls.Queues = append(ls.Queues, o.Queues...)
		ls.Kernel = ls.Kernel.Add(o.Kernel)
	}
	return ls
}

// String names the stack by namespace, interface and address.
func (s *Stack) String() string {
	if s.cfg.Link != nil {
		return fmt.Sprintf("sdx stack on a link (%v)", s.addr)
	}
	return fmt.Sprintf("sdx stack on %s/%s (%v)", s.cfg.Netns, s.cfg.Interface, s.addr)
}

// Routes reports whether a connection to dst would go over sdx: the
// kernel's route to dst leaves through the stack's interface (for a Link
// stack: dst is in Prefix), and dst is not the stack's own address.
func (s *Stack) Routes(dst netip.Addr) bool {
	if !dst.Is4() || dst == s.addr || s.closed.Load() {
		return false
	}
	if s.res == nil {
		return s.prefix.Contains(dst)
	}
	s.resMu.Lock()
	defer s.resMu.Unlock()
	_, err := s.res.NextHop(dst)
	return err == nil
}

// Close closes the stack's listeners, resets its connections (a
// background graceful close still running is cut short), stops the
// provider and detaches from the interface. Connections dialled over
// kernel TCP are not affected. Close is idempotent.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		return nil
	}
	close(s.quit)
	ls := make([]*Listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	unregister(s)
	for _, l := range ls {
		l.Close()
	}
	// Background closers and blocked calls look again and find the stack
	// closed.
	s.hmu.RLock()
	for _, h := range s.handles {
		if c, ok := h.(*sconn); ok {
			c.wake()
		}
	}
	s.hmu.RUnlock()
	s.bg.Wait()
	if s.ctl != nil {
		s.ctl.Close()
	}
	var errs []error
	for _, sh := range s.shards {
		errs = append(errs, sh.p.Cleanup())
	}
	err := errors.Join(errs...)
	if s.res != nil {
		s.res.Close()
	}
	return err
}

// startBackground registers a background closer; false once the stack is
// closing.
func (s *Stack) startBackground() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	s.bg.Add(1)
	return true
}

func (s *Stack) addListener(l *Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Stack) removeListener(l *Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
}

// register gives h a handle for completion contexts.
func (s *Stack) register(h handler) uint64 {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.next++
	s.handles[s.next] = h
	return s.next
}

// unregister forgets a handle; its socket is closed, so no completion
// names it any more.
func (s *Stack) unregister(id uint64) {
	s.hmu.Lock()
	delete(s.handles, id)
	s.hmu.Unlock()
}

// onCompletion is the completion queue's notify function; it runs on the
// shard's poller. The queue is consumed only here, so the completion just
// queued is the one Poll takes, which frees its slot at once.
func (sh *stackShard) onCompletion(c provider.Completion) {
	var drop [1]provider.Completion
	sh.cq.Poll(drop[:])
	s := sh.st
	s.hmu.RLock()
	h := s.handles[c.Context>>ctxShift]
	s.hmu.RUnlock()
	if h != nil {
		h.complete(c)
	}
}

// inNetns runs fn in the stack's namespace.
func (s *Stack) inNetns(fn func() error) error { return sys.InNetns(s.cfg.Netns, fn) }

// kernelDial dials kernel TCP from the stack's namespace.
func (s *Stack) kernelDial(ctx context.Context, d *net.Dialer, addr string) (c net.Conn, err error) {
	err = s.inNetns(func() error {
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	return c, err
}

// ---- the registry of open stacks, for package-level Dial and Listen ----

var registry struct {
	mu     sync.Mutex
	stacks []*Stack
}

func register(s *Stack) {
	registry.mu.Lock()
	registry.stacks = append(registry.stacks, s)
	registry.mu.Unlock()
}

func unregister(s *Stack) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	for i, t := range registry.stacks {
		if t == s {
			registry.stacks = append(registry.stacks[:i], registry.stacks[i+1:]...)
			return
		}
	}
}

// stackFor returns the first open stack whose subnet holds dst.
func stackFor(dst netip.Addr) *Stack {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	for _, s := range registry.stacks {
		if s.prefix.Contains(dst) && dst != s.addr {
			return s
		}
	}
	return nil
}

// stackServing returns the open stack whose address is host; for the
// unspecified address, the only open stack.
func stackServing(host netip.Addr) (*Stack, error) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if host.IsUnspecified() || !host.IsValid() {
		switch len(registry.stacks) {
		case 0:
			return nil, ErrNoStack
		case 1:
			return registry.stacks[0], nil
		}
		return nil, fmt.Errorf("sdx: %d stacks are open: set ListenConfig.Stack", len(registry.stacks))
	}
	for _, s := range registry.stacks {
		if s.addr == host {
			return s, nil
		}
	}
	return nil, ErrNoStack
}
