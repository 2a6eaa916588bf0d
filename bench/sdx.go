package bench

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// sdxSystem is sdx's own reliable streams: one provider on an AF_XDP link in
// each namespace, used through the provider's blocking verbs (Socket,
// Bind, Listen, Accept, Connect, Send, Recv, Shutdown, CloseSocket).
//
// sdx-busy runs each provider in PollBusy: its dedicated poller goroutine
// spins whenever no verb holds the poller role. sdx-adaptive runs
// PollAdaptive. In both, a goroutine blocked in a verb takes the poller
// role itself and spins (busy: until its call completes; adaptive: for
// Config.Spin, then sleeps), so the client's and the server's threads are
// pinned like the other spinning systems'; the dedicated pollers are not.
type sdxSystem struct {
	name string
	mode provider.PollMode
	h    *Hosts
	p    [2]*provider.Provider // on A, on B

	xdpMode, xskMode, xdpFallback string
}

func newSDX(name string, mode provider.PollMode) *sdxSystem {
	return &sdxSystem{name: name, mode: mode}
}

func (s *sdxSystem) Name() string                     { return s.name }
func (*sdxSystem) Kind() Kind                         { return Stream }
func (*sdxSystem) MaxMessage(int) int                 { return 0 }
func (s *sdxSystem) Pinned() bool                     { return true }
func (s *sdxSystem) Modes() (xdpMode, xskMode string) { return s.xdpMode, s.xskMode }
func (s *sdxSystem) XDPFallback() string              { return s.xdpFallback }

func (s *sdxSystem) Open(h *Hosts) (err error) {
	s.h = h
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("%s: %w", s.name, err), s.Close())
		}
	}()
	for i, host := range []*testbed.Host{&h.A, &h.B} {
		l, err := openLink(host)
		if err != nil {
			return err
		}
		if i == 0 {
			ls := l.Stats()
			s.xdpMode, s.xskMode = ls.XDPMode.String(), ls.Queues[0].ModeReport
			s.xdpFallback = ls.XDPFallback
		}
		if s.p[i], err = provider.Startup(provider.Config{Link: l, Mode: s.mode}); err != nil {
			return errors.Join(err, l.Close())
		}
	}
	return nil
}

// busyRetry bounds the retries of the EBUSY that follows the close of a
// previous socket on the same queue: the kernel releases it after an RCU
// grace period, which a loaded machine stretches to seconds.
const busyRetry = 5 * time.Second

// openLink opens an AF_XDP link on host, retrying the short EBUSY that follows
// the close of a previous socket on the same queue.
func openLink(host *testbed.Host) (*xdplink.Link, error) {
	deadline := time.Now().Add(busyRetry)
	for {
		l, err := xdplink.New(xdplink.Config{Netns: host.NS, Interface: host.If})
		if err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return l, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *sdxSystem) Close() error {
	var errs []error
	for i, p := range s.p {
		if p != nil {
			errs = append(errs, p.Cleanup())
			s.p[i] = nil
		}
	}
	return errors.Join(errs...)
}

func (s *sdxSystem) Pair(b *Bound) (client, server Conn, err error) {
	return pairByListen(s, s.h, b)
}

func (s *sdxSystem) Listen(b *Bound) (Listener, error) {
	if s.p[1] == nil {
		return nil, fmt.Errorf("%s: not open", s.name)
	}
	pb := s.p[1]
	ls, err := pb.Socket()
	if err != nil {
		return nil, fmt.Errorf("%s: socket: %w", s.name, err)
	}
	l := &sdxListener{pa: s.p[0], pb: pb, ls: ls, b: b}
	if err := pb.Bind(ls, netip.AddrPortFrom(s.h.B.Addr, 0)); err != nil {
		pb.CloseSocket(ls)
		return nil, fmt.Errorf("%s: bind: %w", s.name, err)
	}
	if err := pb.Listen(ls, 1024); err != nil {
		pb.CloseSocket(ls)
		return nil, fmt.Errorf("%s: listen: %w", s.name, err)
	}
	if l.addr, err = pb.GetSockName(ls); err != nil {
		pb.CloseSocket(ls)
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	// Accept blocks in the provider: closing the listening socket is what
	// ends it when the run stops.
	l.unhook = b.OnStop(func() { l.Close() })
	return l, nil
}

// sdxListener is a listening socket on B's provider; Dial connects from
// A's.
type sdxListener struct {
	pa, pb *provider.Provider
	ls     provider.Socket
	addr   netip.AddrPort
	b      *Bound
	closed atomic.Bool
	unhook func()
}

func (l *sdxListener) Accept() (Conn, error) {
	s, _, err := l.pb.Accept(l.ls)
	if err != nil {
		return nil, sdxErr(l.b, err)
	}
	return newSDXConn(l.pb, s, l.b), nil
}

func (l *sdxListener) Dial() (Conn, error) {
	s, err := l.pa.Socket()
	if err != nil {
		return nil, sdxErr(l.b, err)
	}
	if err := l.pa.Connect(s, l.addr); err != nil {
		l.pa.CloseSocket(s)
		return nil, sdxErr(l.b, err)
	}
	return newSDXConn(l.pa, s, l.b), nil
}

func (l *sdxListener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if l.unhook != nil {
		l.unhook()
	}
	return l.pb.CloseSocket(l.ls)
}

// sdxConn is one end of an sdx stream.
type sdxConn struct {
	p      *provider.Provider
	s      provider.Socket
	b      *Bound
	closed atomic.Bool
	unhook func()
}

func newSDXConn(p *provider.Provider, s provider.Socket, b *Bound) *sdxConn {
	c := &sdxConn{p: p, s: s, b: b}
	// Send and Recv block in the provider with no deadline; closing the
	// socket when the run stops ends them.
	c.unhook = b.OnStop(func() { c.close() })
	return c
}

func (c *sdxConn) Send(p []byte) error {
	_, err := c.p.Send(c.s, p)
	return sdxErr(c.b, err)
}

func (c *sdxConn) Recv(p []byte) (int, error) {
	n, err := c.p.Recv(c.s, p)
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, sdxErr(c.b, err)
}

func (c *sdxConn) CloseWrite() error { return sdxErr(c.b, c.p.Shutdown(c.s)) }

func (c *sdxConn) Close() error {
	c.unhook()
	return c.close()
}

func (c *sdxConn) close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.p.CloseSocket(c.s)
}

// sdxErr turns the errors of a run being stopped into ErrStopped: the stop
// hooks hard-close the sockets, which aborts their operations, retires
// their descriptors and resets their peers.
func sdxErr(b *Bound, err error) error {
	if err == nil {
		return nil
	}
	if b.Stopped() && (errors.Is(err, provider.ErrAborted) || errors.Is(err, provider.ErrNotSock) || errors.Is(err, provider.ErrConnReset)) {
		return ErrStopped
	}
	return err
}
