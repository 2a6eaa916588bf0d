package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
)

// The kernel-socket references that spin: every descriptor is non-blocking
// and a call that finds nothing to do (EAGAIN) is retried at once, on a
// pinned thread, instead of sleeping in the kernel (sys.SpinSocket). This
// is the fastest a program can drive kernel sockets without changing the
// kernel, and the reference sdx's latency is measured against.

// spinWait is the sys.Waiter of a spinning call: the bound checks of a
// spinner, until the Bound ends or until passes.
type spinWait struct {
	s     spinner
	b     *Bound
	until time.Time
}

func (w *spinWait) Wait() error { return w.s.wait(w.b, w.until) }

// reset readies w for a call that may spin until until.
func (w *spinWait) reset(until time.Time) *spinWait {
	w.s, w.until = spinner{}, until
	return w
}

// tcpSpinSystem is kernel TCP on raw non-blocking descriptors with
// TCP_NODELAY; readers spin on read(2), writers on write(2), accept spins
// on accept4(2) and connect on poll(2) with a zero timeout.
type tcpSpinSystem struct {
	h *Hosts
}

func (*tcpSpinSystem) Name() string          { return "tcp-spin" }
func (*tcpSpinSystem) Kind() Kind            { return Stream }
func (*tcpSpinSystem) MaxMessage(int) int    { return 0 }
func (*tcpSpinSystem) Pinned() bool          { return true }
func (s *tcpSpinSystem) Open(h *Hosts) error { s.h = h; return nil }
func (s *tcpSpinSystem) Close() error        { return nil }

func (s *tcpSpinSystem) Pair(b *Bound) (client, server Conn, err error) {
	return pairByListen(s, s.h, b)
}

func (s *tcpSpinSystem) Listen(b *Bound) (Listener, error) {
	l := &spinListener{b: b}
	if err := s.h.B.Do(func() (err error) {
		if l.sock, err = sys.ListenTCP(netip.AddrPortFrom(s.h.B.Addr, 0), 1024); err != nil {
			return err
		}
		l.addr, err = l.sock.LocalAddr()
		return err
	}); err != nil {
		if l.sock != nil {
			l.sock.Close()
		}
		return nil, fmt.Errorf("tcp-spin: %w", err)
	}
	return l, nil
}

type spinListener struct {
	sock *sys.SpinSocket
	addr netip.AddrPort
	b    *Bound
}

// Accept and Dial run on different goroutines, Dial on several at once:
// each call spins with a waiter of its own.

func (l *spinListener) Accept() (Conn, error) {
	c, err := l.sock.Accept(&spinWait{b: l.b, until: l.b.deadline})
	if err != nil {
		return nil, spinErr("tcp-spin: accept", err)
	}
	return newFDConn(c, Stream, l.b), nil
}

func (l *spinListener) Dial() (Conn, error) {
	c, err := sys.DialTCP(l.addr, &spinWait{b: l.b, until: l.b.deadline})
	if err != nil {
		return nil, spinErr("tcp-spin", err)
	}
	return newFDConn(c, Stream, l.b), nil
}

func (l *spinListener) Close() error { return l.sock.Close() }

// spinErr adds context to a socket error; the Bound's own errors pass as
// they are.
func spinErr(what string, err error) error {
	if errors.Is(err, ErrStopped) || errors.Is(err, ErrTimeout) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// udpSpinSystem is kernel UDP on connected non-blocking descriptors; the
// reader spins on read(2). A message is one datagram; a 16 KiB one is
// fragmented by IP at the link's MTU and reassembled by the receiver.
type udpSpinSystem struct {
	h *Hosts
}

func (*udpSpinSystem) Name() string          { return "udp-spin" }
func (*udpSpinSystem) Kind() Kind            { return Datagram }
func (*udpSpinSystem) MaxMessage(int) int    { return 65507 }
func (*udpSpinSystem) Pinned() bool          { return true }
func (s *udpSpinSystem) Open(h *Hosts) error { s.h = h; return nil }
func (s *udpSpinSystem) Close() error        { return nil }

func (s *udpSpinSystem) Pair(b *Bound) (client, server Conn, err error) {
	var cs, ss *sys.SpinSocket
	defer func() {
		if err != nil {
			for _, c := range []*sys.SpinSocket{cs, ss} {
				if c != nil {
					c.Close()
				}
			}
			err = fmt.Errorf("udp-spin: %w", err)
		}
	}()
	var saddr, caddr netip.AddrPort
	if err := s.h.B.Do(func() (err error) {
		if ss, err = sys.BindUDP(netip.AddrPortFrom(s.h.B.Addr, 0)); err != nil {
			return err
		}
		saddr, err = ss.LocalAddr()
		return err
	}); err != nil {
		return nil, nil, err
	}
	if err := s.h.A.Do(func() (err error) {
		if cs, err = sys.BindUDP(netip.AddrPortFrom(s.h.A.Addr, 0)); err != nil {
			return err
		}
		if err := cs.Connect(saddr); err != nil {
			return err
		}
		caddr, err = cs.LocalAddr()
		return err
	}); err != nil {
		return nil, nil, err
	}
	if err := ss.Connect(caddr); err != nil {
		return nil, nil, err
	}
	return newFDConn(cs, Datagram, b), newFDConn(ss, Datagram, b), nil
}

// fdConn is a spinning kernel socket as a bench Conn. Its sends and its
// receives may run on two goroutines at once: each side has its waiter.
type fdConn struct {
	sock   *sys.SpinSocket
	kind   Kind
	b      *Bound
	sw, rw spinWait
}

func newFDConn(s *sys.SpinSocket, kind Kind, b *Bound) *fdConn {
	return &fdConn{sock: s, kind: kind, b: b, sw: spinWait{b: b}, rw: spinWait{b: b}}
}

func (c *fdConn) Send(p []byte) error {
	return c.sock.Write(p, c.sw.reset(c.b.deadline))
}

func (c *fdConn) Recv(p []byte) (int, error) { return c.RecvUntil(p, c.b.deadline) }

func (c *fdConn) RecvUntil(p []byte, t time.Time) (int, error) {
	return c.sock.Read(p, c.rw.reset(t))
}

func (c *fdConn) CloseWrite() error { return c.sock.CloseWrite() }

func (c *fdConn) Close() error { return c.sock.Close() }
