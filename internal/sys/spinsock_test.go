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

// TestSpinSockets runs a TCP exchange with a half close, and a connected
// UDP pair, between the two namespaces of a testbed, and checks that a
// read with nothing to read ends when its Waiter says so.
func TestSpinSockets(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	bed := testbed.New(t, testbed.Options{Subnet: 95})

	var ln *sys.SpinSocket
	var laddr netip.AddrPort
	if err := bed.B.Do(func() (err error) {
		if ln, err = sys.ListenTCP(netip.AddrPortFrom(bed.B.Addr, 0), 4); err != nil {
			return err
		}
		laddr, err = ln.LocalAddr()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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
	var us, uc *sys.SpinSocket
	var saddr, caddr netip.AddrPort
	if err := bed.B.Do(func() (err error) {
		if us, err = sys.BindUDP(netip.AddrPortFrom(bed.B.Addr, 0)); err != nil {
			return err
		}
		saddr, err = us.LocalAddr()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	if err := bed.A.Do(func() (err error) {
		if uc, err = sys.BindUDP(netip.AddrPortFrom(bed.A.Addr, 0)); err != nil {
			return err
		}
		if err := uc.Connect(saddr); err != nil {
			return err
		}
		caddr, err = uc.LocalAddr()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
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
