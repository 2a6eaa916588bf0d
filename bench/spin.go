package bench

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel-socket references that spin: every descriptor is non-blocking
// and a call that finds nothing to do (EAGAIN) is retried at once, on a
// pinned thread, instead of sleeping in the kernel. This is the fastest a
// program can drive kernel sockets without changing the kernel, and the
// reference sdx's latency is measured against.

// tcpSpinSystem is kernel TCP on raw non-blocking descriptors with
// TCP_NODELAY; readers spin on read(2), writers on write(2), accept spins
// on accept4(2) and connect on poll(2) with a zero timeout.
type tcpSpinSystem struct {
	h *Hosts
}

func (*tcpSpinSystem) Name() string          { return "tcp-spin" }
func (*tcpSpinSystem) Kind() Kind            { return Stream }
func (*tcpSpinSystem) MaxMessage() int       { return 0 }
func (*tcpSpinSystem) Pinned() bool          { return true }
func (s *tcpSpinSystem) Open(h *Hosts) error { s.h = h; return nil }
func (s *tcpSpinSystem) Close() error        { return nil }

func (s *tcpSpinSystem) Pair(b *Bound) (client, server Conn, err error) {
	return pairByListen(s, s.h, b)
}

func (s *tcpSpinSystem) Listen(b *Bound) (Listener, error) {
	l := &spinListener{fd: -1, b: b}
	if err := s.h.B.Do(func() (err error) {
		l.fd, err = socket(unix.SOCK_STREAM)
		if err != nil {
			return err
		}
		unix.SetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(l.fd, sockaddr(s.h.B.Addr, 0)); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if err := unix.Listen(l.fd, 1024); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		l.addr, err = localAddr(l.fd)
		return err
	}); err != nil {
		if l.fd >= 0 {
			unix.Close(l.fd)
		}
		return nil, fmt.Errorf("tcp-spin: %w", err)
	}
	return l, nil
}

type spinListener struct {
	fd   int
	addr netip.AddrPort
	b    *Bound
}

func (l *spinListener) Accept() (Conn, error) {
	var s spinner
	for {
		fd, _, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == nil {
			if err := noDelay(fd); err != nil {
				unix.Close(fd)
				return nil, err
			}
			return &fdConn{fd: fd, kind: Stream, b: l.b}, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR && err != unix.ECONNABORTED {
			return nil, fmt.Errorf("tcp-spin: accept: %w", err)
		}
		if err := s.wait(l.b, l.b.deadline); err != nil {
			return nil, err
		}
	}
}

func (l *spinListener) Dial() (Conn, error) {
	fd, err := socket(unix.SOCK_STREAM)
	if err != nil {
		return nil, fmt.Errorf("tcp-spin: %w", err)
	}
	if err := connect(fd, l.addr, l.b); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tcp-spin: connect: %w", err)
	}
	if err := noDelay(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &fdConn{fd: fd, kind: Stream, b: l.b}, nil
}

func (l *spinListener) Close() error { return unix.Close(l.fd) }

// udpSpinSystem is kernel UDP on connected non-blocking descriptors; the
// reader spins on read(2). A message is one datagram; a 16 KiB one is
// fragmented by IP at the link's MTU and reassembled by the receiver.
type udpSpinSystem struct {
	h *Hosts
}

func (*udpSpinSystem) Name() string          { return "udp-spin" }
func (*udpSpinSystem) Kind() Kind            { return Datagram }
func (*udpSpinSystem) MaxMessage() int       { return 65507 }
func (*udpSpinSystem) Pinned() bool          { return true }
func (s *udpSpinSystem) Open(h *Hosts) error { s.h = h; return nil }
func (s *udpSpinSystem) Close() error        { return nil }

func (s *udpSpinSystem) Pair(b *Bound) (client, server Conn, err error) {
	var cfd, sfd = -1, -1
	defer func() {
		if err != nil {
			for _, fd := range []int{cfd, sfd} {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
			err = fmt.Errorf("udp-spin: %w", err)
		}
	}()
	var saddr, caddr netip.AddrPort
	if err := s.h.B.Do(func() (err error) {
		if sfd, err = socket(unix.SOCK_DGRAM); err != nil {
			return err
		}
		if err := unix.Bind(sfd, sockaddr(s.h.B.Addr, 0)); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		saddr, err = localAddr(sfd)
		return err
	}); err != nil {
		return nil, nil, err
	}
	if err := s.h.A.Do(func() (err error) {
		if cfd, err = socket(unix.SOCK_DGRAM); err != nil {
			return err
		}
		if err := unix.Bind(cfd, sockaddr(s.h.A.Addr, 0)); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if err := unix.Connect(cfd, sockaddr(saddr.Addr(), saddr.Port())); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		caddr, err = localAddr(cfd)
		return err
	}); err != nil {
		return nil, nil, err
	}
	if err := unix.Connect(sfd, sockaddr(caddr.Addr(), caddr.Port())); err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	return &fdConn{fd: cfd, kind: Datagram, b: b}, &fdConn{fd: sfd, kind: Datagram, b: b}, nil
}

// fdConn is a non-blocking socket driven by spinning.
type fdConn struct {
	fd     int
	kind   Kind
	b      *Bound
	closed bool
}

func (c *fdConn) Send(p []byte) error {
	var s spinner
	for {
		n, err := unix.Write(c.fd, p)
		if err == nil {
			if c.kind == Datagram || n == len(p) {
				return nil
			}
			p = p[n:]
			continue
		}
		if err != unix.EAGAIN && err != unix.EINTR && err != unix.ENOBUFS {
			return fmt.Errorf("write: %w", err)
		}
		if err := s.wait(c.b, c.b.deadline); err != nil {
			return err
		}
	}
}

func (c *fdConn) Recv(p []byte) (int, error) { return c.RecvUntil(p, c.b.deadline) }

func (c *fdConn) RecvUntil(p []byte, t time.Time) (int, error) {
	var s spinner
	for {
		n, err := unix.Read(c.fd, p)
		if err == nil {
			if n == 0 && c.kind == Stream && len(p) > 0 {
				return 0, io.EOF
			}
			return n, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			if err == unix.ECONNRESET && c.kind == Stream {
				return 0, io.EOF
			}
			return 0, fmt.Errorf("read: %w", err)
		}
		if err := s.wait(c.b, t); err != nil {
			return 0, err
		}
	}
}

func (c *fdConn) CloseWrite() error {
	if c.kind != Stream || c.closed {
		return nil
	}
	return unix.Shutdown(c.fd, unix.SHUT_WR)
}

func (c *fdConn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	return unix.Close(c.fd)
}

func socket(typ int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	return fd, nil
}

func sockaddr(a netip.Addr, port uint16) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Addr: a.As4(), Port: int(port)}
}

func localAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockname: %w", err)
	}
	in, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("getsockname: not IPv4: %T", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)), nil
}

func noDelay(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fmt.Errorf("TCP_NODELAY: %w", err)
	}
	return nil
}

// connect connects the non-blocking fd to a, spinning on poll(2) with a
// zero timeout until the handshake is done.
func connect(fd int, a netip.AddrPort, b *Bound) error {
	err := unix.Connect(fd, sockaddr(a.Addr(), a.Port()))
	if err == nil {
		return nil
	}
	if err != unix.EINPROGRESS && err != unix.EINTR {
		return err
	}
	var s spinner
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(pfd, 0)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				return err
			}
			if soerr != 0 {
				return unix.Errno(soerr)
			}
			return nil
		}
		if err := s.wait(b, b.deadline); err != nil {
			return err
		}
	}
}
