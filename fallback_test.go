package sdx

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider"
)

// checkFallback fails t unless c went over kernel TCP for want, and the
// counts (before and after, from the stack or the stackless counter) rose
// by exactly one for want and by nothing for any other reason.
func checkFallback(t testing.TB, c net.Conn, want Fallback, before, after map[Fallback]uint64) {
	t.Helper()
	checkPath(t, c, PathTCP)
	if got := c.(*Conn).Fallback(); got != want {
		t.Fatalf("fallback reason %v, want %v", got, want)
	}
	for _, f := range FallbackReasons() {
		d := after[f] - before[f]
		if f == want && d != 1 || f != want && d != 0 {
			t.Errorf("count of %v went up by %d", f, d)
		}
	}
}

// fallbackDial dials a kernel TCP echo listener on host with d, after
// beforeDial (if not nil), and checks that the connection went over kernel
// TCP for want, counted once on d's stack, and carries a round trip. It
// returns how long the dial took.
func fallbackDial(t *testing.T, d *Dialer, host *testbed.Host, want Fallback, beforeDial func()) time.Duration {
	t.Helper()
	ln := kernelListen(t, host, 0)
	go testutil.ServeAll(ln, testutil.Echo)
	before := d.Stack.Fallbacks()
	if beforeDial != nil {
		beforeDial()
	}
	start := time.Now()
	c, err := d.Dial("tcp", ln.Addr().String())
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, 1024)
	checkFallback(t, c, want, before, d.Stack.Fallbacks())
	return took
}

// A dial with no stack whose subnet holds the destination goes over
// kernel TCP in the caller's namespace: no-stack, counted apart from any
// stack.
func TestFallbackNoStack(t *testing.T) {
	testutil.CheckGoroutines(t)
	h := memHosts(t) // stacks whose subnet is 198.18.0.0/15, not 127.0.0.1
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go testutil.ServeAll(ln, testutil.Echo)
	before, abefore := StacklessFallbacks(), h.a.Fallbacks()
	c := dialRoundTrip(t, ln.Addr().String())
	checkFallback(t, c, FallbackNoStack, before, StacklessFallbacks())
	checkFallback(t, c, FallbackNoStack, abefore, addOne(h.a.Fallbacks(), FallbackNoStack))
}

// dialRoundTrip dials addr with the package-level Dial and checks a
// round trip of 1 KiB over the connection, which the test's end closes.
func dialRoundTrip(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	roundTrip(t, c, 1024)
	return c
}

// addOne adds one to m[f]: a check that nothing else moved in m.
func addOne(m map[Fallback]uint64, f Fallback) map[Fallback]uint64 {
	m[f]++
	return m
}

// An IPv6 destination goes over kernel TCP: not-ipv4.
func TestFallbackNotIPv4(t *testing.T) {
	testutil.CheckGoroutines(t)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	defer ln.Close()
	go testutil.ServeAll(ln, testutil.Echo)
	before := StacklessFallbacks()
	c := dialRoundTrip(t, ln.Addr().String())
	checkFallback(t, c, FallbackNotIPv4, before, StacklessFallbacks())
}

// A dial from a stack to its own address does not leave through its
// interface: no-route, counted on the stack.
func TestFallbackNoRoute(t *testing.T) {
	bed := leakCheckedBed(t)
	fallbackDial(t, &Dialer{Stack: vethStack(t, &bed.A)}, &bed.A, FallbackNoRoute, nil)
}

// A dial through a closed stack goes over kernel TCP from its namespace:
// stack-closed.
func TestFallbackStackClosed(t *testing.T) {
	bed := leakCheckedBed(t)
	a := vethStack(t, &bed.A)
	fallbackDial(t, &Dialer{Stack: a}, &bed.B, FallbackStackClosed, func() { a.Close() })
}

// A peer whose kernel answers the sdx connect with a port unreachable has
// no sdx: peer-no-sdx. B's namespace has ICMP rate limiting off.
func TestFallbackPeerNoSDX(t *testing.T) {
	bed := unreachableBed(t)
	d := &Dialer{Stack: vethStack(t, &bed.A), ProbeTimeout: 10 * time.Second, Timeout: 5 * time.Second}
	fallbackDial(t, d, &bed.B, FallbackPeerNoSDX, nil)
}

// A peer that swallows sdx frames (a kernel UDP socket on the sdx port:
// no answer, and no port unreachable either) leaves the connect
// unanswered until the probe time: timeout.
func TestFallbackTimeout(t *testing.T) {
	bed := leakCheckedBed(t)
	var sink net.PacketConn
	if err := sys.InNetns(bed.B.NS, func() (err error) {
		sink, err = net.ListenPacket("udp4", netip.AddrPortFrom(bed.B.Addr, provider.DefaultUDPPort).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	const probe = 30 * time.Millisecond
	if took := fallbackDial(t, &Dialer{Stack: vethStack(t, &bed.A), ProbeTimeout: probe}, &bed.B, FallbackTimeout, nil); took < probe {
		t.Errorf("fell back after %v, before the %v probe time", took, probe)
	}
}

// A stack whose descriptors are all taken cannot set up the sdx socket:
// setup-failed.
func TestFallbackSetup(t *testing.T) {
	bed := leakCheckedBed(t)
	a := vethStack(t, &bed.A, func(c *Config) { c.Provider.MaxSockets = 1 })
	s, err := a.Provider().Socket() // the only descriptor
	if err != nil {
		t.Fatal(err)
	}
	defer a.Provider().CloseSocket(s)
	fallbackDial(t, &Dialer{Stack: a}, &bed.B, FallbackSetup, nil)
}

// A kernel TCP client accepted by an sdx listener: peer-tcp, counted on
// the listener's stack; the sdx client beside it has no reason.
func TestFallbackPeerTCP(t *testing.T) {
	h := leakCheckedHosts(t)
	ln := h.listen(t)
	before := h.b.Fallbacks()
	kc := kernelDial(t, &h.bed.A, ln.Addr().String())
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkFallback(t, c, FallbackPeerTCP, before, h.b.Fallbacks())
	kc.Close()

	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			testutil.Echo(c)
		}
	}()
	sc, err := (&Dialer{Stack: h.a}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	checkPath(t, sc, PathSDX)
	if f := sc.(*Conn).Fallback(); f != FallbackNone {
		t.Errorf("sdx connection's fallback reason is %v, want none", f)
	}
}
