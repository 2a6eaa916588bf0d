package testutil

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
)

// TCPEcho runs a kernel TCP echo server on addr:port inside serverNS, dials
// it from clientNS, sends n seeded bytes and checks they come back intact.
func TCPEcho(clientNS, serverNS string, addr netip.Addr, port uint16, n int) error {
	ap := netip.AddrPortFrom(addr, port).String()
	var ln net.Listener
	if err := sys.InNetns(serverNS, func() (err error) {
		ln, err = net.Listen("tcp4", ap)
		return err
	}); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	srv := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srv <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// Plain copies: io.Copy between TCP conns would splice through a
		// pipe that the runtime caches, which a leak check reads as a leak.
		_, err = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
		srv <- err
	}()
	var c net.Conn
	if err := sys.InNetns(clientNS, func() (err error) {
		c, err = net.DialTimeout("tcp4", ap, 5*time.Second)
		return err
	}); err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	data := make([]byte, n)
	cc := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	cc.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("echoed %d bytes differ from the %d sent", len(got), len(data))
	}
	return <-srv
}

// UDPEcho runs a kernel UDP echo server on addr:port inside serverNS and
// checks that a datagram from clientNS comes back.
func UDPEcho(clientNS, serverNS string, addr netip.Addr, port uint16) error {
	ap := netip.AddrPortFrom(addr, port)
	var srv *net.UDPConn
	if err := sys.InNetns(serverNS, func() (err error) {
		srv, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
		return err
	}); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		srv.SetDeadline(time.Now().Add(10 * time.Second))
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	var c *net.UDPConn
	if err := sys.InNetns(clientNS, func() (err error) {
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ap))
		return err
	}); err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	msg := []byte("sdx udp echo")
	buf := make([]byte, 64)
	// Datagrams may be lost while ARP resolves; retry a few times.
	for try := 0; try < 5; try++ {
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			if !bytes.Equal(buf[:n], msg) {
				return fmt.Errorf("echo %q, want %q", buf[:n], msg)
			}
			return nil
		}
	}
	return fmt.Errorf("no echo from %v", ap)
}

// ServeAll runs serve on every connection ln accepts, each on a goroutine
// of its own, and closes the connection after it, until ln closes.
func ServeAll(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

// Echo is the tests' echo server for one connection: it sends back what
// it reads from c until c's stream ends or fails.
func Echo(c net.Conn) {
	// Plain Writer and Reader: c's own ReadFrom or WriteTo could splice.
	io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
}
