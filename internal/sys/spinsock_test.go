package sys_test

import (
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// deadline is a Waiter that gives up at a time.
type deadline time.Time

var errDeadline = errors.New("deadline passed")

func (d *deadline) Wait() error {
	if time.Now().After(time.Time(*d)) {
		return errDeadline
	}
	return nil
}

func soon() *deadline {
	d := deadline(time.Now().Add(5 * time.Second))
	return &d
}

// spinIn opens a socket with open inside h's namespace and returns it
// and its local address; the test's end closes it.
func spinIn(t *testing.T, h *testbed.Host, open func() (*sys.SpinSocket, error)) (*sys.SpinSocket, netip.AddrPort) {
	t.Helper()
	var s *sys.SpinSocket
	var addr netip.AddrPort
	if err := h.Do(func() (err error) {
		if s, err = open(); err != nil {
			return err
		}
		addr, err = s.LocalAddr()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, addr
}

// TestSpinSockets runs a TCP exchange with a half close, and a connected
// UDP pair, between the two namespaces of a testbed, and checks that a
// read with nothing to read ends when its Waiter says so.
func TestSpinSockets(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	bed := testbed.New(t, testbed.Options{Subnet: 95})

	ln, laddr := spinIn(t, &bed.B, func() (*sys.SpinSocket, error) {
		return sys.ListenTCP(netip.AddrPortFrom(bed.B.Addr, 0), 4)
	})
	type accepted struct {
		s   *sys.SpinSocket
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		s, err := ln.Accept(soon())
		acc <- accepted{s, err}
	}()
	var c *sys.SpinSocket
	if err := bed.A.Do(func() (err error) { c, err = sys.DialTCP(laddr, soon()); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := <-acc
	if a.err != nil {
		t.Fatal(a.err)
	}
	s := a.s
	defer s.Close()

	if err := c.Write([]byte("ping"), soon()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := s.Read(buf, soon()); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	// Nothing more to read: the Waiter ends the spin.
	d := deadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s.Read(buf, &d); !errors.Is(err, errDeadline) {
		t.Fatalf("read with nothing sent: %v; want the Waiter's error", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Read(buf, soon()); n != 0 || err != io.EOF {
		t.Fatalf("read after the half close: %d, %v; want io.EOF", n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	// UDP, connected both ways.
	us, saddr := spinIn(t, &bed.B, func() (*sys.SpinSocket, error) {
		return sys.BindUDP(netip.AddrPortFrom(bed.B.Addr, 0))
	})
	uc, caddr := spinIn(t, &bed.A, func() (*sys.SpinSocket, error) {
		uc, err := sys.BindUDP(netip.AddrPortFrom(bed.A.Addr, 0))
		if err == nil {
			if err = uc.Connect(saddr); err != nil {
				uc.Close()
			}
		}
		return uc, err
	})
	if err := us.Connect(caddr); err != nil {
		t.Fatal(err)
	}
	if err := uc.Write([]byte("datagram"), soon()); err != nil {
		t.Fatal(err)
	}
	if n, err := us.Read(buf, soon()); err != nil || string(buf[:n]) != "datagram" {
		t.Fatalf("udp read %q, %v", buf[:n], err)
	}
}
