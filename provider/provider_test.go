package provider

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/memnet"
)

// testNet is a memnet.Network with a provider on each of its hosts.
type testNet struct {
	t     testing.TB
	net   *memnet.Network
	links []*memnet.Link
	ps    []*Provider
}

// newTestNet makes a testNet of n hosts; the test's cleanup checks that
// no goroutine of it is left.
func newTestNet(t testing.TB, seed uint64, f memnet.Faults, n int, tweak func(*Config)) *testNet {
	t.Helper()
	testutil.CheckGoroutines(t)
	tn := &testNet{t: t, net: memnet.New(seed)}
	tn.net.SetFaults(f)
	for i := range n {
		l, err := tn.net.NewLink()
		if err != nil {
			t.Fatal(err)
		}
		s := [32]byte{byte(seed), byte(seed >> 8), byte(i), 'p'}
		cfg := Config{Link: l, Seed: &s, Buffers: 4096, MaxSockets: 256, Timeout: 5 * time.Second}
		if tweak != nil {
			tweak(&cfg)
		}
		p, err := Startup(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tn.links = append(tn.links, l)
		tn.ps = append(tn.ps, p)
	}
	t.Cleanup(func() {
		for i, p := range tn.ps {
			// The links' Close reports buffers still held.
			if err := p.Cleanup(); err != nil {
				t.Errorf("cleanup of host %d: %v", i, err)
			}
		}
	})
	return tn
}

func (tn *testNet) addr(i int, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(tn.links[i].LocalAddr(), port)
}

func must[T any](t testing.TB) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// listener makes host i listen on port.
func (tn *testNet) listener(i int, port uint16, backlog int) Socket {
	tn.t.Helper()
	p := tn.ps[i]
	l := must[Socket](tn.t)(p.Socket())
	if err := p.Bind(l, netip.AddrPortFrom(netip.IPv4Unspecified(), port)); err != nil {
		tn.t.Fatal(err)
	}
	if err := p.Listen(l, backlog); err != nil {
		tn.t.Fatal(err)
	}
	return l
}

// conn connects host 0 to host 1's listener l on port and returns both ends.
func (tn *testNet) conn(l Socket, port uint16) (a, b Socket) {
	tn.t.Helper()
	p0, p1 := tn.ps[0], tn.ps[1]
	a = must[Socket](tn.t)(p0.Socket())
	if err := p0.Connect(a, tn.addr(1, port)); err != nil {
		tn.t.Fatal(err)
	}
	b, _, err := p1.Accept(l)
	if err != nil {
		tn.t.Fatal(err)
	}
	return a, b
}

func TestStartupValidation(t *testing.T) {
	l, _ := memnet.New(1).NewLink()
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "Config.Link is nil"},
		{Config{Link: l, Mode: 7}, "Config.Mode"},
		{Config{Link: l, SubmitQueue: 1000}, "power of two"},
		{Config{Link: l, MinRTO: time.Second, MaxRTO: time.Millisecond}, "RTO bounds"},
		{Config{Link: l, AckDelay: 5 * time.Millisecond}, "AckDelay"},
		{Config{Link: l, Buffers: 16}, "raise Buffers"},
		{Config{Link: l, Timeout: time.Millisecond}, "Config.Timeout"},
		{Config{Link: l, SendBuffer: 10}, "at least 1024"},
	}
	for _, c := range cases {
		_, err := Startup(c.cfg)
		if !errors.Is(err, ErrConfig) || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestProviderHandshakeAndNames(t *testing.T) {
	tn, l, a, b := connNet(t, 1, memnet.Faults{}, 2, 4, nil)
	p0, p1 := tn.ps[0], tn.ps[1]
	la := must[netip.AddrPort](t)(p0.GetSockName(a))
	pa := must[netip.AddrPort](t)(p0.GetPeerName(a))
	lb := must[netip.AddrPort](t)(p1.GetSockName(b))
	pb := must[netip.AddrPort](t)(p1.GetPeerName(b))
	if pa != tn.addr(1, 80) || lb != pa || pb != la || la.Addr() != tn.links[0].LocalAddr() {
		t.Fatalf("names: a %v->%v, b %v->%v", la, pa, lb, pb)
	}
	if as := p1.Addresses(); len(as) != 1 || as[0] != tn.links[1].LocalAddr() {
		t.Fatalf("addresses %v", as)
	}
	if _, err := p1.GetPeerName(l); !errors.Is(err, ErrNotConn) {
		t.Fatalf("peer name of a listener: %v", err)
	}
	msg := []byte("hello over sdx")
	if n, err := p0.Send(a, msg); n != len(msg) || err != nil {
		t.Fatal(n, err)
	}
	buf := make([]byte, 100)
	n, err := p1.Recv(b, buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("recv %q %v", buf[:n], err)
	}
}

func TestProviderRefusedFast(t *testing.T) {
	tn := newTestNet(t, 2, memnet.Faults{}, 2, nil)
	p0 := tn.ps[0]
	s := must[Socket](t)(p0.Socket())
	start := time.Now()
	if err := p0.Connect(s, tn.addr(1, 99)); !errors.Is(err, ErrConnRefused) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("no listener: %v", err)
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Fatalf("refusal took %v", d)
	}
	tn.listener(1, 80, 1)
	c1 := must[Socket](t)(p0.Socket())
	if err := p0.Connect(c1, tn.addr(1, 80)); err != nil {
		t.Fatal(err)
	}
	c2 := must[Socket](t)(p0.Socket())
	start = time.Now()
	if err := p0.Connect(c2, tn.addr(1, 80)); !errors.Is(err, ErrConnRefused) {
		t.Fatalf("full backlog: %v", err)
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Fatalf("refusal took %v", d)
	}
}

func TestProviderAddrInUse(t *testing.T) {
	tn := newTestNet(t, 3, memnet.Faults{}, 1, nil)
	p := tn.ps[0]
	a := must[Socket](t)(p.Socket())
	b := must[Socket](t)(p.Socket())
	if err := p.Bind(a, netip.AddrPortFrom(netip.IPv4Unspecified(), 80)); err != nil {
		t.Fatal(err)
	}
	if err := p.Bind(b, netip.AddrPortFrom(netip.IPv4Unspecified(), 80)); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("second bind: %v", err)
	}
	if err := p.Bind(b, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 2, 3}), 81) /* not this host's; nothing is sent */); !errors.Is(err, ErrAddrNotAvail) {
		t.Fatalf("bind to a foreign address: %v", err)
	}
	if err := p.Bind(b, tn.addr(0, 81)); err != nil {
		t.Fatalf("bind to the link's address: %v", err)
	}
}

// stream sends size seeded bytes from a (on p0) to b (on p1) with blocking
// calls, and the same back if both, checking every byte.
func stream(t testing.TB, p0, p1 *Provider, a, b Socket, size int, seed uint64, both bool) {
	t.Helper()
	type dir struct {
		sp, rp *Provider
		ss, rs Socket
		seed   uint64
	}
	dirs := []dir{{p0, p1, a, b, seed}}
	if both {
		dirs = append(dirs, dir{p1, p0, b, a, seed + 1})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, d := range dirs {
		wg.Go(func() {
			if err := sendSeeded(func(b []byte) (int, error) { return d.sp.Send(d.ss, b) }, d.seed, int64(size), 100000); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			c := newStreamCheck(d.seed)
			buf := make([]byte, 65536)
			for c.n < int64(size) {
				n, err := d.rp.Recv(d.rs, buf)
				if err == nil && n == 0 {
					err = errors.New("end of stream")
				}
				if err == nil {
					err = c.check(buf[:n])
				}
				if err != nil {
					errs <- fmt.Errorf("receive after %d bytes: %w", c.n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("stream: %v", err)
	}
}

func TestProviderStream(t *testing.T) {
	testutil.CheckGoroutines(t)
	size := scaled(64<<20, 16<<20)
	if testing.Short() {
		size = 2 << 20
	}
	for _, loss := range []float64{0, 0.01, 0.05} {
		tn, _, a, b := connNet(t, 4, memnet.Faults{Loss: loss, Dup: loss, Reorder: loss}, 2, 4, nil)
		start := time.Now()
		stream(t, tn.ps[0], tn.ps[1], a, b, size, 4, true)
		s := tn.ps[0].Stats()
		t.Logf("loss %v: %d MiB each way in %v; retransmits %d", loss, size>>20, time.Since(start).Round(time.Millisecond), s.Retransmits)
	}
}
