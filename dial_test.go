package sdx

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider"
	"github.com/sdx-project/sdx/provider/memnet"
)

// roundTrip writes n seeded bytes to c, half-closes, and checks they come
// back.
func roundTrip(t *testing.T, c net.Conn, n int) {
	t.Helper()
	data := seeded(uint64(n), n)
	go func() {
		c.Write(data)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo: %d bytes back of %d (error %v)", len(got), n, err)
	}
}

func TestRoutes(t *testing.T) {
	h := vethHosts(t)
	for _, tc := range []struct {
		dst  string
		want bool
	}{
		{h.bed.B.Addr.String(), true},          // on the veth subnet
		{"198.18.0.77", true},                  // on the subnet, nobody there
		{h.bed.A.Addr.String(), false},         // the stack's own address goes through lo
		{"198.19.5.5", false},                  // no route at all
		{netip.IPv6Loopback().String(), false}, // not IPv4
	} {
		if got := h.a.Routes(netip.MustParseAddr(tc.dst)); got != tc.want {
			t.Errorf("Routes(%s) = %v, want %v", tc.dst, got, tc.want)
		}
	}
	if got, want := h.a.Prefix().String(), "198.18.0.0/24"; got != want {
		t.Errorf("prefix %s, want %s", got, want)
	}
}

// One listener, one port, both paths: an sdx dialer and a plain kernel
// client reach the same listener.
func TestListenerBothPaths(t *testing.T) {
	h := leakCheckedHosts(t)
	ln := h.listen(t)
	go testutil.ServeAll(ln, testutil.Echo)
	d := Dialer{Stack: h.a, ProbeTimeout: testProbe}
	for _, want := range []Path{PathSDX, PathTCP, PathSDX, PathTCP} {
		var c net.Conn
		start := time.Now()
		if want == PathSDX {
			var err error
			if c, err = d.Dial("tcp", ln.Addr().String()); err != nil {
				t.Fatal(err)
			}
			checkPath(t, c, PathSDX)
		} else {
			c = kernelDial(t, &h.bed.A, ln.Addr().String())
		}
		took := time.Since(start)
		roundTrip(t, c, 256<<10)
		c.Close()
		t.Logf("%s client: connected in %v", want, took)
	}
}

// An sdx dialer to a host that does not run sdx: no answer within the
// probe time, then kernel TCP.
func TestFallbackToKernelServer(t *testing.T) {
	bed := leakCheckedBed(t)
	a := vethStack(t, &bed.A)
	ln := kernelListen(t, &bed.B, 0)
	go testutil.ServeAll(ln, testutil.Echo)
	for _, probe := range []time.Duration{20 * time.Millisecond, DefaultProbeTimeout} {
		d := Dialer{Stack: a, ProbeTimeout: probe}
		start := time.Now()
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		checkPath(t, c, PathTCP)
		// The probe ends early when the peer's kernel answers the connect
		// with a port unreachable (TestFallbackOnPortUnreachable); the
		// kernel's ICMP rate limit often holds the first ones back.
		if took > probe+500*time.Millisecond {
			t.Errorf("fallback dial took %v with a %v probe", took, probe)
		}
		if la := c.LocalAddr().(*net.TCPAddr); la.AddrPort().Addr() != bed.A.Addr {
			t.Errorf("fallback dialled from %v, want %v (the stack's namespace)", la, bed.A.Addr)
		}
		roundTrip(t, c, 64<<10)
		c.Close()
		t.Logf("probe %v: kernel TCP connection after %v", probe, took)
	}

	// Without fallback, the dial fails instead: refused by the peer's
	// kernel, or timed out if the kernel's ICMP rate limit held that back.
	d := Dialer{Stack: a, DisableFallback: true, Timeout: 200 * time.Millisecond}
	if _, err := d.Dial("tcp", ln.Addr().String()); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, provider.ErrPortUnreach) {
		t.Fatalf("sdx-only dial of a kernel server: %v, want a time-out or ErrPortUnreach", err)
	}
}

// TestFallbackOnPortUnreachable dials a kernel-only server with a probe
// time far beyond the test's bound: the peer's kernel answers the sdx
// connect with an ICMP port unreachable (nothing takes sdx frames there),
// which is no answer from an sdx peer, so the dial falls back to kernel
// TCP at once; without fallback it fails with ECONNREFUSED at once. B's
// namespace has ICMP rate limiting off, so that every connect is answered.
func TestFallbackOnPortUnreachable(t *testing.T) {
	bed := unreachableBed(t)
	a := vethStack(t, &bed.A)
	ln := kernelListen(t, &bed.B, 0)
	go testutil.ServeAll(ln, testutil.Echo)
	const probe, bound = 10 * time.Second, 2 * time.Second
	start := time.Now()
	c, err := (&Dialer{Stack: a, ProbeTimeout: probe, Timeout: 3 * bound}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	checkPath(t, c, PathTCP)
	roundTrip(t, c, 4<<10)
	c.Close()
	t.Logf("fallback after %v (probe %v)", took, probe)
	if took > bound {
		t.Errorf("fallback took %v: the port unreachable did not end the probe", took)
	}

	start = time.Now()
	_, err = (&Dialer{Stack: a, DisableFallback: true, Timeout: 3 * bound}).Dial("tcp", ln.Addr().String())
	if took := time.Since(start); !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, provider.ErrPortUnreach) || took > bound {
		t.Errorf("sdx-only dial: %v after %v; want ErrPortUnreach (ECONNREFUSED) within %v", err, took, bound)
	}
	if n := a.Provider().Stats().Unreachables; n < 2 {
		t.Errorf("the stack's provider took %d port unreachables; want 2", n)
	}
}

// A refusal from an sdx peer is final: the dial does not try kernel TCP,
// even though a kernel listener is there.
func TestRefusedIsFinal(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		port := uint16(7777)
		if h.bed != nil {
			ln := kernelListen(t, &h.bed.B, 0)
			port = uint16(ln.Addr().(*net.TCPAddr).Port)
		}
		d := Dialer{Stack: h.a}
		start := time.Now()
		c, err := d.Dial("tcp", netip.AddrPortFrom(h.b.Addr(), port).String())
		took := time.Since(start)
		if err == nil {
			c.Close()
			t.Fatalf("dial succeeded over %s, want ECONNREFUSED", c.(*Conn).Path())
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial: %v, want ECONNREFUSED", err)
		}
		if took >= DefaultProbeTimeout {
			t.Errorf("refusal took %v, more than the probe time", took)
		}
		t.Logf("refused in %v", took)
	})
}

// Cancelling the context aborts the dial, in the sdx attempt and in the
// kernel TCP one.
func TestDialContextCancel(t *testing.T) {
	each(t, func(t *testing.T, h *hosts) {
		nobody := netip.MustParseAddr("198.18.0.99") // on the subnet, never answers
		if h.bed == nil {
			nobody = netip.MustParseAddr("198.18.200.1")
		}
		dst := netip.AddrPortFrom(nobody, 80).String()
		cases := []struct {
			name  string
			d     Dialer
			after time.Duration
		}{
			{"sdx", Dialer{Stack: h.a, DisableFallback: true}, 30 * time.Millisecond},
		}
		if h.bed != nil {
			// The probe gets no answer after 50ms; the kernel TCP connect
			// then waits for ARP.
			cases = append(cases, struct {
				name  string
				d     Dialer
				after time.Duration
			}{"tcp", Dialer{Stack: h.a}, 150 * time.Millisecond})
		}
		for _, tc := range cases {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(tc.after, cancel)
			start := time.Now()
			c, err := tc.d.DialContext(ctx, "tcp", dst)
			took := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatalf("%s: dial of nobody succeeded", tc.name)
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: %v, want context.Canceled", tc.name, err)
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "dial" {
				t.Errorf("%s: %#v is not a dial *net.OpError", tc.name, err)
			}
			if took > tc.after+100*time.Millisecond {
				t.Errorf("%s: dial returned %v after a cancel at %v", tc.name, took, tc.after)
			}
			t.Logf("%s: cancelled at %v, returned after %v", tc.name, tc.after, took)
		}
		waitSockets(t, h.a, 0)
	})
}

// The package-level Dial and Listen find the open stacks by address.
func TestPackageLevel(t *testing.T) {
	testutil.CheckGoroutines(t)
	h := vethHosts(t)
	ln, err := Listen("tcp", netip.AddrPortFrom(h.b.Addr(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.(*Listener).Stack() != h.b {
		t.Fatalf("Listen picked %v, want %v", ln.(*Listener).Stack(), h.b)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			testutil.Echo(c)
			c.Close()
		}
	}()
	c, err := Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkPath(t, c, PathSDX)
	roundTrip(t, c, 1000)
	if _, err := Listen("tcp", "198.18.0.99:0"); !errors.Is(err, ErrNoStack) {
		t.Fatalf("Listen on an address no stack serves: %v", err)
	}
}

// A Link stack has no kernel side: a destination off its prefix is an
// error, never a kernel TCP dial.
func TestLinkStackNoKernel(t *testing.T) {
	testutil.CheckGoroutines(t)
	h := memHosts(t)
	// Off the link and refused before anything is sent.
	offLink := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 1}), 80).String()
	d := Dialer{Stack: h.a}
	if _, err := d.Dial("tcp", offLink); !errors.Is(err, ErrNoStack) {
		t.Fatalf("dial off the link: %v, want ErrNoStack", err)
	}
	lc := ListenConfig{Stack: h.a}
	if _, err := lc.Listen(context.Background(), "tcp", offLink); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("listen off the link: %v, want EADDRNOTAVAIL", err)
	}
	if !h.a.Prefix().Contains(h.b.Addr()) || h.a.Prefix() != memnet.Prefix {
		t.Fatalf("prefix %v", h.a.Prefix())
	}
}

// On a Link stack a failed sdx dial returns its real cause: there is no
// kernel side to fall back to, so "no stack serves the address" would
// name the wrong thing.
func TestLinkStackDialRealCause(t *testing.T) {
	testutil.CheckGoroutines(t)
	h := memHosts(t, func(c *Config) { c.Provider.Timeout = time.Second })
	d := Dialer{Stack: h.a}
	// Inside the link's prefix, but nobody there: nothing answers.
	nobody := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 200, 9}), 80).String()
	start := time.Now()
	if _, err := d.Dial("tcp", nobody); !errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, ErrNoStack) {
		t.Fatalf("dial where nobody answers: %v, want ETIMEDOUT", err)
	}
	t.Logf("no answer reported after %v", time.Since(start).Round(time.Millisecond))
	if _, err := d.Dial("tcp", netip.AddrPortFrom(h.b.Addr(), 0).String()); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("dial to port 0: %v, want EADDRNOTAVAIL", err)
	}
}
