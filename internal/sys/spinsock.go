package sys

import (
	"fmt"
	"io"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Waiter is asked what to do each time a spinning call finds nothing to
// do: nil tries again at once, an error ends the call with that error.
// Pointer implementations are passed without allocating.
type Waiter interface {
	Wait() error
}

// SpinSocket is a non-blocking IPv4 kernel socket driven by spinning: a
// call that would block (EAGAIN) asks its Waiter and tries again, on the
// caller's thread, instead of sleeping in the kernel. It is the fastest a
// program can drive kernel sockets without changing the kernel, which
// makes it the reference sdx measures itself against. One goroutine uses
// a SpinSocket at a time.
type SpinSocket struct {
	fd     int
	stream bool
	closed bool
}

func newSpinSocket(typ int) (*SpinSocket, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	return &SpinSocket{fd: fd, stream: typ == unix.SOCK_STREAM}, nil
}

func sockaddr(a netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}
}

// bound makes a socket of type typ bound to addr, closing it on failure.
func bound(typ int, addr netip.AddrPort) (*SpinSocket, error) {
	s, err := newSpinSocket(typ)
	if err != nil {
		return nil, err
	}
	if typ == unix.SOCK_STREAM {
		// A port of an earlier run in TIME_WAIT may be taken again.
		unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	if err := unix.Bind(s.fd, sockaddr(addr)); err != nil {
		s.Close()
		return nil, fmt.Errorf("bind %v: %w", addr, err)
	}
	return s, nil
}

// ListenTCP returns a listening TCP socket bound to addr (port 0: any).
func ListenTCP(addr netip.AddrPort, backlog int) (*SpinSocket, error) {
	s, err := bound(unix.SOCK_STREAM, addr)
	if err != nil {
		return nil, err
	}
	if err := unix.Listen(s.fd, backlog); err != nil {
		s.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	return s, nil
}

// Accept spins on accept4(2) until a connection arrives and returns it,
// with TCP_NODELAY set.
func (s *SpinSocket) Accept(w Waiter) (*SpinSocket, error) {
	for {
		fd, _, err := unix.Accept4(s.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == nil {
			c := &SpinSocket{fd: fd, stream: true}
			if err := c.noDelay(); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR && err != unix.ECONNABORTED {
			return nil, fmt.Errorf("accept: %w", err)
		}
		if err := w.Wait(); err != nil {
			return nil, err
		}
	}
}

// DialTCP connects a new TCP socket to to, spinning on poll(2) with a zero
// timeout until the handshake is done, and sets TCP_NODELAY.
func DialTCP(to netip.AddrPort, w Waiter) (*SpinSocket, error) {
	s, err := newSpinSocket(unix.SOCK_STREAM)
	if err != nil {
		return nil, err
	}
	if err := s.connect(to, w); err != nil {
		s.Close()
		return nil, fmt.Errorf("connect %v: %w", to, err)
	}
	if err := s.noDelay(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *SpinSocket) connect(to netip.AddrPort, w Waiter) error {
	err := unix.Connect(s.fd, sockaddr(to))
	if err == nil {
		return nil
	}
	if err != unix.EINPROGRESS && err != unix.EINTR {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(pfd, 0)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			soerr, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				return err
			}
			if soerr != 0 {
				return unix.Errno(soerr)
			}
			return nil
		}
		if err := w.Wait(); err != nil {
			return err
		}
	}
}

func (s *SpinSocket) noDelay() error {
	if err := unix.SetsockoptInt(s.fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fmt.Errorf("TCP_NODELAY: %w", err)
	}
	return nil
}

// BindUDP returns a UDP socket bound to addr (port 0: any).
func BindUDP(addr netip.AddrPort) (*SpinSocket, error) {
	return bound(unix.SOCK_DGRAM, addr)
}

// Connect sets a UDP socket's peer: writes go there, and reads take only
// its datagrams.
func (s *SpinSocket) Connect(to netip.AddrPort) error {
	if err := unix.Connect(s.fd, sockaddr(to)); err != nil {
		return fmt.Errorf("connect %v: %w", to, err)
	}
	return nil
}

// LocalAddr returns the address the socket is bound to.
func (s *SpinSocket) LocalAddr() (netip.AddrPort, error) {
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockname: %w", err)
	}
	in, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("getsockname: not IPv4: %T", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)), nil
}

// Write writes all of p (one datagram on a UDP socket), spinning while
// the socket has no room.
func (s *SpinSocket) Write(p []byte, w Waiter) error {
	for {
		n, err := unix.Write(s.fd, p)
		if err == nil {
			if !s.stream || n == len(p) {
				return nil
			}
			p = p[n:]
			continue
		}
		if err != unix.EAGAIN && err != unix.EINTR && err != unix.ENOBUFS {
			return fmt.Errorf("write: %w", err)
		}
		if err := w.Wait(); err != nil {
			return err
		}
	}
}

// Read reads what is there into p, spinning until something is. The end
// of a TCP stream, or its reset, is io.EOF.
func (s *SpinSocket) Read(p []byte, w Waiter) (int, error) {
	for {
		n, err := unix.Read(s.fd, p)
		if err == nil {
			if n == 0 && s.stream && len(p) > 0 {
				return 0, io.EOF
			}
			return n, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			if err == unix.ECONNRESET && s.stream {
				return 0, io.EOF
			}
			return 0, fmt.Errorf("read: %w", err)
		}
		if err := w.Wait(); err != nil {
			return 0, err
		}
	}
}

// CloseWrite ends a TCP socket's sending half; on UDP it does nothing.
func (s *SpinSocket) CloseWrite() error {
	if !s.stream || s.closed {
		return nil
	}
	return unix.Shutdown(s.fd, unix.SHUT_WR)
}

// Close closes the socket; a second Close does nothing.
func (s *SpinSocket) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if err := unix.Close(s.fd); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}
