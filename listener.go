package sdx

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/sdx-project/sdx/provider"
)

// ListenConfig holds the options of a listener. The zero value listens
// on the open stack that serves the address, sdx and kernel TCP together.
type ListenConfig struct {
	// Stack is the stack to listen on. Nil picks the open stack whose
	// address is the listen address (the only open stack for an
	// unspecified address).
	Stack *Stack
	// DisableFallback makes the listener accept sdx connections only: no
	// kernel TCP listener runs beside the provider's.
	DisableFallback bool
	// KeepAlive is the keep-alive period of accepted kernel TCP
	// connections, as net.ListenConfig.KeepAlive (zero: Go's default, 15s;
	// negative: off). sdx connections always detect a dead peer, within
	// the provider's Config.Timeout.
	KeepAlive time.Duration
}

// Listen announces on the local address ("host:port", host an IPv4
// address of the stack, or empty for all of them) and returns a
// *Listener. network must be "tcp" or "tcp4".
func Listen(network, address string) (net.Listener, error) {
	var lc ListenConfig
	return lc.Listen(context.Background(), network, address)
}

// Listen is the package-level Listen with lc's options.
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	l, err := lc.listen(ctx, network, address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	return l, nil
}

func (lc *ListenConfig) listen(ctx context.Context, network, address string) (*Listener, error) {
	if network != "tcp" && network != "tcp4" {
		return nil, net.UnknownNetworkError(network)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		if port, err = lookupPort(ctx, portStr); err != nil {
			return nil, err
		}
	}
	ip := netip.IPv4Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil || !ip.Is4() {
			return nil, fmt.Errorf("sdx: listen address %q is not IPv4", host)
		}
	}
	st := lc.Stack
	if st == nil {
		if st, err = stackServing(ip); err != nil {
			return nil, err
		}
	}
	sdx := ip.IsUnspecified() || ip == st.addr
	kernel := st.kernel && !lc.DisableFallback
	if !sdx && !kernel {
		return nil, syscall.EADDRNOTAVAIL
	}
	l := &Listener{
		st:     st,
		sdxc:   make(chan provider.Completion, len(st.shards)),
		tcpc:   make(chan net.Conn),
		tcperr: make(chan error, 1),
		closed: make(chan struct{}),
	}
	// The two listeners share the port: the kernel picks it when the
	// caller did not, then the provider binds the same one. A port the
	// provider already uses makes another try.
	for try := 0; ; try++ {
		p := uint16(port)
		if kernel {
			if err := l.listenTCP(ctx, netip.AddrPortFrom(ip, p), lc.KeepAlive); err != nil {
				return nil, err
			}
			p = uint16(l.tcp.Addr().(*net.TCPAddr).Port)
		}
		if !sdx {
			l.addr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, p))
			break
		}
		err := l.listenSDX(netip.AddrPortFrom(ip, p))
		if err == nil {
			break
		}
		if l.tcp != nil {
			l.tcp.Close()
			l.tcp = nil
		}
		if port != 0 || !kernel || !errors.Is(err, syscall.EADDRINUSE) || try == 8 {
			return nil, err
		}
	}
	l.handle = st.register(l)
	if !st.addListener(l) {
		l.shut()
		return nil, ErrStackClosed
	}
	if l.tcp != nil {
		l.wg.Add(1)
		go l.routineAcceptTCP()
	}
	return l, nil
}

func lookupPort(ctx context.Context, service string) (uint64, error) {
	p, err := net.DefaultResolver.LookupPort(ctx, "tcp", service)
	return uint64(p), err
}

// listenTCP starts the kernel TCP listener in the stack's namespace.
func (l *Listener) listenTCP(ctx context.Context, ap netip.AddrPort, keepAlive time.Duration) error {
	lc := net.ListenConfig{KeepAlive: keepAlive}
	return l.st.inNetns(func() error {
		ln, err := lc.Listen(ctx, "tcp4", ap.String())
		if err != nil {
			return err
		}
		l.tcp = ln.(*net.TCPListener)
		return nil
	})
}

// listenSDX binds and listens on every shard's provider, on one port: the
// first one's choice when ap's is 0.
func (l *Listener) listenSDX(ap netip.AddrPort) error {
	l.socks = make([]provider.Socket, 0, len(l.st.shards))
	l.aposted = make([]bool, len(l.st.shards))
	for _, sh := range l.st.shards {
		s, port, err := listenOn(sh.p, ap)
		if err != nil {
			l.closeSDX()
			l.socks = nil
			return err
		}
		l.socks = append(l.socks, s)
		ap = netip.AddrPortFrom(ap.Addr(), port)
	}
	l.addr = net.TCPAddrFromAddrPort(ap)
	return nil
}

// listenOn makes a listening socket of p's on ap and returns its port.
func listenOn(p *provider.Provider, ap netip.AddrPort) (provider.Socket, uint16, error) {
	s, err := p.Socket()
	if err != nil {
		return 0, 0, err
	}
	err = p.Bind(s, ap)
	if err == nil {
		err = p.Listen(s, math.MaxInt32) // clamped to the provider's MaxBacklog
	}
	var local netip.AddrPort
	if err == nil {
		local, err = p.GetSockName(s)
	}
	if err != nil {
		p.CloseSocket(s)
		return 0, 0, err
	}
	return s, local.Port(), nil
}

// closeSDX closes the listening sockets; each completes its posted accept
// (aborted) before it returns.
func (l *Listener) closeSDX() {
	for i, s := range l.socks {
		l.st.shards[i].p.CloseSocket(s)
	}
}

// Listener accepts sdx connections and, unless ListenConfig.DisableFallback,
// kernel TCP connections on the same address and port, merged into one
// Accept. Its methods may be called from any goroutine.
//
// The provider side keeps at most one accept posted on each poller's
// listening socket; a completion waits in sdxc for an Accept call. A goroutine (routineAcceptTCP) accepts from
// the kernel listener and hands each connection over through tcpc.
type Listener struct {
	st     *Stack
	socks  []provider.Socket // one per shard; nil: no sdx side
	tcp    *net.TCPListener  // nil: no kernel side
	addr   *net.TCPAddr
	handle uint64

	mu      sync.Mutex // protects aposted
	aposted []bool     // per shard: an accept is posted and its completion not taken

	sdxc   chan provider.Completion // a shard's posted accept's completion
	tcpc   chan net.Conn
	tcperr chan error // cap 1: the kernel listener failed
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

var _ net.Listener = (*Listener)(nil)

// complete runs on the poller.
func (l *Listener) complete(c provider.Completion) {
	if c.Verb == provider.VerbAccept {
		l.sdxc <- c
	}
}

// Accept waits for the next connection, over sdx or kernel TCP, and
// returns it as a *Conn.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		if err := l.postAccept(); err != nil {
			return nil, l.opErr(err)
		}
		select {
		case c := <-l.sdxc:
			l.mu.Lock()
			l.aposted[shardOf(c.Context)] = false
			l.mu.Unlock()
			if c.Err != nil {
				return nil, l.opErr(l.acceptErr(c.Err))
			}
			conn, err := l.acceptedSDX(c)
			if err != nil {
				continue // the connection failed before it was ours: next one
			}
			return conn, nil
		case c := <-l.tcpc:
			l.st.fallbacks.add(FallbackPeerTCP)
			conn := &Conn{tcp: c.(*net.TCPConn), why: FallbackPeerTCP}
			l.st.trackTCP(conn)
			return conn, nil
		case err := <-l.tcperr:
			l.tcperr <- err // for the other Accept calls
			return nil, l.opErr(err)
		case <-l.closed:
			return nil, l.opErr(net.ErrClosed)
		}
	}
}

// postAccept keeps one accept posted on each shard's listening socket.
func (l *Listener) postAccept() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range l.socks {
		if l.aposted[i] || closed(l.closed) {
			continue
		}
		sh := l.st.shards[i]
		if err := sh.p.PostAccept(s, sh.cq, l.handle<<ctxShift|uint64(i)<<shardShift|tagAccept); err != nil {
			if l.st.closed.Load() {
				return ErrStackClosed
			}
			return err
		}
		l.aposted[i] = true
	}
	return nil
}

// acceptErr maps the error of an accept's completion.
func (l *Listener) acceptErr(err error) error {
	switch {
	case closed(l.closed):
		return net.ErrClosed
	case l.st.closed.Load():
		return ErrStackClosed
	}
	return err
}

// acceptedSDX makes a Conn of a successful accept's completion.
func (l *Listener) acceptedSDX(c provider.Completion) (*Conn, error) {
	s := newSConn(l.st.shards[shardOf(c.Context)], c.Accepted)
	local := netip.AddrPortFrom(l.st.addr, uint16(l.addr.Port))
	if err := s.start(local, c.Peer); err != nil {
		s.abort()
		return nil, err
	}
	return &Conn{s: s}, nil
}

// routineAcceptTCP accepts kernel TCP connections until the listener
// closes.
func (l *Listener) routineAcceptTCP() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.tcp.AcceptTCP()
		if err != nil {
			if closed(l.closed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) ||
				errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				// Transient: wait a little, as net/http's server does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
				case <-l.closed:
					return
				}
				continue
			}
			l.tcperr <- err
			return
		}
		backoff = 0
		select {
		case l.tcpc <- c:
		case <-l.closed:
			c.Close()
			return
		}
	}
}

// Close stops listening on both sides. Connections already accepted are
// not affected; ones waiting in the backlogs are reset.
func (l *Listener) Close() error {
	if !l.shut() {
		return l.opErr(net.ErrClosed)
	}
	return nil
}

// shut closes the listener once; it reports whether this call did.
func (l *Listener) shut() bool {
	did := false
	l.once.Do(func() {
		did = true
		close(l.closed)
		if l.tcp != nil {
			l.tcp.Close()
		}
		l.closeSDX()
		l.wg.Wait()
		// Accepts that completed with a connection nobody took.
		for len(l.sdxc) > 0 {
			if c := <-l.sdxc; c.Err == nil {
				l.st.shards[shardOf(c.Context)].p.CloseSocket(c.Accepted)
			}
		}
		if l.handle != 0 {
			l.st.unregister(l.handle)
		}
		l.st.removeListener(l)
	})
	return did
}

// Addr returns the listener's address: the sdx and kernel side share it.
func (l *Listener) Addr() net.Addr { return l.addr }

// Stack returns the listener's stack.
func (l *Listener) Stack() *Stack { return l.st }

func (l *Listener) opErr(err error) error {
	return &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
}
