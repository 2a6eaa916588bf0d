package provider

// Tests of the provider over the real AF_XDP data path: two namespaces
// joined by a veth pair, an AF_XDP link (xdplink.Link) and a Provider on each end.

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/xdplink"
	"github.com/sdx-project/sdx/xdp"
)

// vethPair is a provider on each end of a testbed: the one pair harness
// of the tests on the real path (hopPair and the exhaustion tests' pairs
// are vethPairs too).
type vethPair struct {
	bed      *testbed.Bed
	a, b     *Provider
	la, lb   *xdplink.Link
	portB    uint16
	listener Socket // on b, bound to portB
}

func newVethPair(t testing.TB, cfg Config) *vethPair {
	t.Helper()
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{})
	p := &vethPair{bed: bed, portB: 5000}
	p.a, p.la = startOn(t, &bed.A, cfg)
	p.b, p.lb = startOn(t, &bed.B, cfg)
	return p
}

// startOn opens an AF_XDP link on h and starts a provider on it; the test's
// cleanup ends the provider and checks, through the link's Close, that
// every UMEM frame came back.
func startOn(t testing.TB, h *testbed.Host, cfg Config) (*Provider, *xdplink.Link) {
	t.Helper()
	return startOnFrames(t, h, xdp.Config{}, cfg)
}

// startOnFrames is startOn with the link's UMEM and rings sized by frames.
func startOnFrames(t testing.TB, h *testbed.Host, frames xdp.Config, cfg Config) (*Provider, *xdplink.Link) {
	t.Helper()
	return startOnLink(t, h, xdplink.Config{Frames: frames}, cfg)
}

// startOnLink is startOn with the link configured by lc (its Netns and
// Interface are h's).
func startOnLink(t testing.TB, h *testbed.Host, lc xdplink.Config, cfg Config) (*Provider, *xdplink.Link) {
	t.Helper()
	lc.Netns, lc.Interface = h.NS, h.If
	l, err := xdplink.New(lc)
	if err != nil {
		t.Fatalf("link on %s: %v", h.NS, err)
	}
	cfg.Link = l
	p, err := Startup(cfg)
	if err != nil {
		l.Close()
		t.Fatalf("startup on %s: %v", h.NS, err)
	}
	t.Cleanup(func() {
		if err := p.Cleanup(); err != nil {
			t.Errorf("cleanup on %s: %v", h.NS, err)
		}
	})
	return p, l
}

// listen opens a listener on b.
func (p *vethPair) listen(t testing.TB, backlog int) Socket {
	t.Helper()
	s, err := p.b.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.b.Bind(s, netip.AddrPortFrom(p.bed.B.Addr, p.portB)); err != nil {
		t.Fatal(err)
	}
	if err := p.b.Listen(s, backlog); err != nil {
		t.Fatal(err)
	}
	p.listener = s
	return s
}

// dial connects a new socket on a to b's listener.
func (p *vethPair) dial(t testing.TB) Socket {
	t.Helper()
	s, err := p.a.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.a.Connect(s, netip.AddrPortFrom(p.bed.B.Addr, p.portB)); err != nil {
		t.Fatalf("connect: %v", err)
	}
	return s
}

// acceptBound is how long connectPair waits for b's Accept after a's
// connect: twice the default dead-peer bound.
const acceptBound = 2 * 10 * time.Second

// connectPair dials from a and accepts on b's listener ln.
func (p *vethPair) connectPair(t testing.TB, ln Socket) (Socket, Socket) {
	t.Helper()
	acc := make(chan Socket, 1)
	go func() {
		s, _, err := p.b.Accept(ln)
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		acc <- s
	}()
	s := p.dial(t)
	var r Socket
	select {
	case r = <-acc:
	case <-time.After(acceptBound):
		// The provider's Cleanup aborts the Accept.
		t.Fatalf("connected, but no connection reached b's Accept within %v", acceptBound)
	}
	if r == 0 {
		t.FailNow()
	}
	return s, r
}

// TestVethEcho sends seeded random data both ways over one connection and
// checks every byte that comes back.
func TestVethEcho(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := newVethPair(t, Config{})
	size := int64(vethEchoBytes)
	if testing.Short() {
		size = 8 << 20
	}
	el := echoBytes(t, p, size)
	t.Logf("%d MiB each way in %v (%.2f Gbit/s each way); a %+v", size>>20, el.Round(time.Millisecond), float64(size*8)/el.Seconds()/1e9, p.a.Stats())
}

// echoBytes has b echo size bytes of seeded random data that a sends, over
// one new connection, checks them byte-exact and returns how long it took.
func echoBytes(t testing.TB, p *vethPair, size int64) time.Duration {
	t.Helper()
	ln := p.listen(t, 16)
	defer p.b.CloseSocket(ln)
	// b echoes: it reads everything a sends and sends it back.
	// CloseSocket is a hard close: b closes only after a has read all.
	echo := make(chan error, 1)
	read := make(chan struct{})
	go func() {
		s, _, err := p.b.Accept(ln)
		if err != nil {
			echo <- err
			return
		}
		defer func() {
			<-read
			p.b.CloseSocket(s)
		}()
		echo <- echoUntilEOF(p.b, s, 64<<10)
	}()
	s := p.dial(t)
	defer p.a.CloseSocket(s)
	got := drainAsync(p.a, s, 1, 64<<10)
	start := time.Now()
	if err := sendSeeded(func(b []byte) (int, error) { return p.a.Send(s, b) }, 1, size, 61<<10); err != nil {
		t.Fatal(err)
	}
	if err := p.a.Shutdown(s); err != nil {
		t.Fatal(err)
	}
	r := <-got
	close(read)
	if r.err != nil {
		t.Fatalf("receive after %d bytes: %v", r.n, r.err)
	}
	if err := <-echo; err != nil {
		t.Fatalf("echo side: %v", err)
	}
	el := time.Since(start)
	if r.n != size {
		t.Fatalf("echoed %d of %d bytes", r.n, size)
	}
	return el
}

// TestVethRefused: no listener on the port, and a full backlog, are both
// refused at once.
func TestVethRefused(t *testing.T) {
	p := newVethPair(t, Config{})
	try := func(what string) {
		s, err := p.a.Socket()
		if err != nil {
			t.Fatal(err)
		}
		defer p.a.CloseSocket(s)
		start := time.Now()
		err = p.a.Connect(s, netip.AddrPortFrom(p.bed.B.Addr, p.portB))
		el := time.Since(start)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%s: %v, want ECONNREFUSED", what, err)
		}
		// The first connect also resolves the neighbour through ARP.
		if el > 10*time.Millisecond {
			t.Errorf("%s: refused after %v, want under 10ms", what, el)
		}
		t.Logf("%s: refused in %v", what, el)
	}
	// Warm the neighbour tables, as any earlier traffic would.
	try("no listener (cold)")
	try("no listener")
	p.listen(t, 1)
	_ = p.dial(t) // fills the backlog of 1: nobody accepts
	try("backlog full")
}

// TestVethNoHost: a connect to an address where no host answers fails with
// ETIMEDOUT within the configured bound.
func TestVethNoHost(t *testing.T) {
	const bound = time.Second
	p := newVethPair(t, Config{Timeout: bound})
	s, err := p.a.Socket()
	if err != nil {
		t.Fatal(err)
	}
	defer p.a.CloseSocket(s)
	start := time.Now()
	err = p.a.Connect(s, netip.AddrPortFrom(netip.MustParseAddr("198.18.0.99"), 5000))
	el := time.Since(start)
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("connect to an absent host: %v, want ETIMEDOUT", err)
	}
	if el > bound+250*time.Millisecond {
		t.Fatalf("ETIMEDOUT after %v, bound %v", el, bound)
	}
	t.Logf("ETIMEDOUT after %v (bound %v)", el, bound)
}
