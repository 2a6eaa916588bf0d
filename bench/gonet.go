package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// gonetSystem is Go's net package over kernel TCP: blocking calls on the
// runtime's netpoller, TCP_NODELAY (Go's default, set again here). Its
// goroutines are not pinned; the Go scheduler places them, as it would in
// any program using net.
type gonetSystem struct {
	h *Hosts
}

func (*gonetSystem) Name() string          { return "tcp-gonet" }
func (*gonetSystem) Kind() Kind            { return Stream }
func (*gonetSystem) MaxMessage(int) int    { return 0 }
func (*gonetSystem) Pinned() bool          { return false }
func (s *gonetSystem) Open(h *Hosts) error { s.h = h; return nil }
func (s *gonetSystem) Close() error        { return nil }

func (s *gonetSystem) Pair(b *Bound) (client, server Conn, err error) {
	return pairByListen(s, s.h, b)
}

func (s *gonetSystem) Listen(b *Bound) (Listener, error) {
	var ln *net.TCPListener
	if err := s.h.B.Do(func() (err error) {
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: s.h.B.Addr.AsSlice()})
		return err
	}); err != nil {
		return nil, fmt.Errorf("tcp-gonet: listen: %w", err)
	}
	ln.SetDeadline(b.Deadline())
	l := &gonetListener{ln: ln, b: b}
	// A blocked Accept does not look at the Bound; a deadline in the past
	// ends it when the run stops.
	l.unhook = b.OnStop(func() { ln.SetDeadline(time.Unix(1, 0)) })
	return l, nil
}

// NetListen gives net/http a kernel TCP listener in B and a dialer.
func (s *gonetSystem) NetListen(b *Bound) (net.Listener, func() (net.Conn, error), error) {
	var ln *net.TCPListener
	if err := s.h.B.Do(func() (err error) {
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: s.h.B.Addr.AsSlice()})
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("tcp-gonet: listen: %w", err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	return ln, func() (net.Conn, error) { return net.DialTCP("tcp4", nil, addr) }, nil
}

type gonetListener struct {
	ln     *net.TCPListener
	b      *Bound
	unhook func()
}

func (l *gonetListener) Accept() (Conn, error) {
	c, err := l.ln.AcceptTCP()
	if err != nil {
		return nil, netErr("tcp-gonet", l.b, err)
	}
	c.SetNoDelay(true)
	return newNetConn("tcp-gonet", c, l.b), nil
}

func (l *gonetListener) Dial() (Conn, error) {
	c, err := net.DialTCP("tcp4", nil, l.ln.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, netErr("tcp-gonet", l.b, err)
	}
	c.SetNoDelay(true)
	return newNetConn("tcp-gonet", c, l.b), nil
}

func (l *gonetListener) Close() error {
	l.unhook()
	return l.ln.Close()
}

// netConn is one end of a net.Conn: Go net TCP, or sdx through its
// switch.
type netConn struct {
	name string
	c    net.Conn
	b    *Bound
}

func newNetConn(name string, c net.Conn, b *Bound) *netConn {
	c.SetDeadline(b.Deadline())
	return &netConn{name: name, c: c, b: b}
}

func (c *netConn) Send(p []byte) error {
	_, err := c.c.Write(p)
	return netErr(c.name, c.b, err)
}

func (c *netConn) Recv(p []byte) (int, error) {
	n, err := c.c.Read(p)
	if err == io.EOF {
		return n, io.EOF
	}
	return n, netErr(c.name, c.b, err)
}

func (c *netConn) CloseWrite() error {
	if cw, ok := c.c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *netConn) Close() error { return c.c.Close() }

// netErr turns the errors that mean "the run is over" (deadline passed,
// socket closed once the run was stopped) into ErrStopped.
func netErr(name string, b *Bound, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || (b.Stopped() && errors.Is(err, net.ErrClosed)) {
		return ErrStopped
	}
	return fmt.Errorf("%s: %w", name, err)
}

// pairByListen connects a stream system's client and server through a
// listener made for the purpose.
func pairByListen(s Listening, h *Hosts, b *Bound) (client, server Conn, err error) {
	ln, err := s.Listen(b)
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	if err := h.A.Do(func() (err error) {
		client, err = ln.Dial()
		return err
	}); err != nil {
		return nil, nil, err
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, server, nil
}
