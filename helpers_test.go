package sdx

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/memnet"
)

// testProbe is the probe time of dials that must go over sdx: generous,
// so a loaded machine (the race detector on two cores) does not turn a
// slow answer into a fallback.
const testProbe = 2 * time.Second

// hosts are two stacks that reach each other: over a memnet.Network (no root)
// or over the veth testbed with AF_XDP on both ends.
type hosts struct {
	a, b *Stack
	bed  *testbed.Bed // nil for a memnet.Network
}

// memHosts builds two stacks on an in-memory network; tweak, if not nil,
// adjusts their configuration.
func memHosts(t testing.TB, tweak ...func(*Config)) *hosts {
	t.Helper()
	n := memnet.New(1)
	h := &hosts{}
	for _, st := range []**Stack{&h.a, &h.b} {
		l, err := n.NewLink()
		if err != nil {
			t.Fatal(err)
		}
		*st = newTestStack(t, Config{Link: l, Prefix: memnet.Prefix}, tweak)
	}
	return h
}

// vethBed builds the veth testbed; it skips without root (fails under CI).
func vethBed(t testing.TB) *testbed.Bed {
	t.Helper()
	testutil.Privileged(t)
	return testbed.New(t, testbed.Options{})
}

// leakCheckedBed is vethBed for a test that checks, at its end, that it
// left no goroutine and no descriptor behind.
func leakCheckedBed(t testing.TB) *testbed.Bed {
	t.Helper()
	testutil.CheckGoroutines(t)
	testutil.CheckFDs(t)
	return vethBed(t)
}

// unreachableBed is leakCheckedBed whose host B answers every datagram
// to a closed port with an ICMP port unreachable, unlimited by rate, and
// whose hosts know each other's MACs: a test's first datagram is answered.
func unreachableBed(t testing.TB) *testbed.Bed {
	t.Helper()
	bed := leakCheckedBed(t)
	if err := testbed.IP("netns", "exec", bed.B.NS, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"); err != nil {
		t.Fatal(err)
	}
	if err := bed.Neighbours(); err != nil {
		t.Fatal(err)
	}
	return bed
}

// vethStack attaches a stack to a testbed host; tweak, if not nil,
// adjusts its configuration.
func vethStack(t testing.TB, h *testbed.Host, tweak ...func(*Config)) *Stack {
	t.Helper()
	return newTestStack(t, Config{Netns: h.NS, Interface: h.If}, tweak)
}

// newTestStack starts a stack on cfg's link with the tests' provider
// settings, adjusted by tweak; the test's cleanup closes it.
func newTestStack(t testing.TB, cfg Config, tweak []func(*Config)) *Stack {
	t.Helper()
	cfg.Provider = provider.Config{Timeout: 5 * time.Second, MaxSockets: 256, Buffers: 2048}
	cfg.CloseTimeout = 5 * time.Second
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := NewStack(cfg)
	if err != nil {
		t.Fatalf("new stack (netns %q): %v", cfg.Netns, err)
	}
	testutil.CloseAtEnd(t, s, "stack")
	return s
}

// vethHosts builds the testbed with a stack on each end.
func vethHosts(t testing.TB, tweak ...func(*Config)) *hosts {
	t.Helper()
	return hostsOn(t, vethBed(t), tweak)
}

// leakCheckedHosts is vethHosts on a leakCheckedBed.
func leakCheckedHosts(t testing.TB, tweak ...func(*Config)) *hosts {
	t.Helper()
	return hostsOn(t, leakCheckedBed(t), tweak)
}

// hostsOn starts a stack on each end of bed.
func hostsOn(t testing.TB, bed *testbed.Bed, tweak []func(*Config)) *hosts {
	t.Helper()
	return &hosts{a: vethStack(t, &bed.A, tweak...), b: vethStack(t, &bed.B, tweak...), bed: bed}
}

// withMode sets the stacks' polling mode.
func withMode(m provider.PollMode) func(*Config) {
	return func(c *Config) { c.Provider.Mode = m }
}

// each runs f over both kinds of hosts: the in-memory network always, the
// veth testbed when privileged.
func each(t *testing.T, f func(t *testing.T, h *hosts)) {
	t.Run("mem", func(t *testing.T) {
		testutil.CheckGoroutines(t)
		f(t, memHosts(t))
	})
	t.Run("veth", func(t *testing.T) {
		f(t, leakCheckedHosts(t))
	})
}

// listen makes b listen on an ephemeral port.
func (h *hosts) listen(t testing.TB) *Listener {
	t.Helper()
	lc := ListenConfig{Stack: h.b}
	ln, err := lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(h.b.Addr(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*Listener)
}

// pair connects a to b over sdx: the dialled conn first.
func (h *hosts) pair(t testing.TB, ln *Listener) (client, server *Conn) {
	t.Helper()
	d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
	c, s, err := dialAccept(func() (net.Conn, error) { return d.Dial("tcp", ln.Addr().String()) }, ln)
	if err != nil {
		t.Fatal(err)
	}
	client, server = c.(*Conn), s.(*Conn)
	t.Cleanup(func() { client.SetLinger(0); client.Close(); server.SetLinger(0); server.Close() })
	return client, server
}

// dialAccept dials with dial while ln accepts, and returns both ends.
func dialAccept(dial func() (net.Conn, error), ln net.Listener) (dialed, accepted net.Conn, err error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	d, err := dial()
	if err != nil {
		return nil, nil, err // the accept ends when the listener closes
	}
	r := <-ch
	if r.err != nil {
		d.Close()
		return nil, nil, r.err
	}
	return d, r.c, nil
}

// kernelListen starts a plain kernel TCP listener inside host's namespace.
func kernelListen(t testing.TB, h *testbed.Host, port uint16) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := sys.InNetns(h.NS, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(h.Addr, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// kernelDial dials kernel TCP from inside host's namespace.
func kernelDial(t testing.TB, h *testbed.Host, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := sys.InNetns(h.NS, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// kernelDialErr dials kernel TCP from inside host's namespace.
func kernelDialErr(h *testbed.Host, addr string) (c net.Conn, err error) {
	err = sys.InNetns(h.NS, func() error {
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	})
	return c, err
}

// checkPath fails t unless c took path want.
func checkPath(t testing.TB, c net.Conn, want Path) {
	t.Helper()
	if p := c.(*Conn).Path(); p != want {
		t.Fatalf("path %s, want %s", p, want)
	}
}

// parkedRead starts a Read of up to n bytes on c on a goroutine of its
// own and returns, after park for the Read to block, the channel its
// error arrives on.
func parkedRead(c net.Conn, n int, park time.Duration) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, n))
		errc <- err
	}()
	time.Sleep(park)
	return errc
}

// closeBlockedWrite closes c, with linger set, while a Write of data on
// it is blocked (the peer does not read). It returns how long Close took
// and the Write's error.
func closeBlockedWrite(t *testing.T, c *Conn, data []byte, linger int) (time.Duration, error) {
	t.Helper()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.SetLinger(linger)
	took := timedClose(t, c)
	return took, <-werr
}

// timedClose closes c and returns how long Close took.
func timedClose(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}
