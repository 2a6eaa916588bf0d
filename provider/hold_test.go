package provider

// Tests of received data that waits for its reader where the link
// received it (Holder): in memnet's buffers, and in the AF_XDP link's
// UMEM frames over veth.

import (
	"fmt"
	"testing"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/memnet"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// heldCase is a provider a dialing a provider b's listener ln, with b's
// link holding at most cap buffers; linkHeld reads what b's link says it
// holds.
type heldCase struct {
	a, b     *Provider
	ln       Socket
	conn     func(t testing.TB) (Socket, Socket)
	cap      int
	linkHeld func() int
}

// checkHeld runs the scenario: one connection's reader does not read
// while a second connection streams, then reads half of what waits and
// closes with the rest unread. The idle data waits in the link's
// buffers, at most the connection's share of them; the stream arrives
// byte for byte beside it; and every buffer comes back.
func checkHeld(t *testing.T, c heldCase) {
	const idle = 192 << 10
	ia, ib := c.conn(t)
	if err := sendSeeded(func(b []byte) (int, error) { return c.a.Send(ia, b) }, 7, idle, 16<<10); err != nil {
		t.Fatal(err)
	}
	recvQ := func() (q, held int) {
		cs, err := c.b.ConnStats()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range cs {
			if s.RecvQ > q {
				q, held = s.RecvQ, s.RecvHeld
			}
		}
		return q, held
	}
	waitUntil(t, "the idle connection's data at b", func() bool { q, _ := recvQ(); return q == idle })
	_, held := recvQ()
	st := c.b.Stats()
	// b has the listener and the idle connection: its share is half.
	t.Logf("%d KiB unread: %d buffers held by the link (at most %d of %d), %d bytes held so far", idle>>10, held, c.cap/2, c.cap, st.RecvHeld)
	if held == 0 || held > c.cap/2 {
		t.Fatalf("%d buffers held for the unread data; want 1 to %d", held, c.cap/2)
	}
	if st.HeldBuffers != held || c.linkHeld() != held {
		t.Fatalf("held: provider says %d, the connection %d, the link %d", st.HeldBuffers, held, c.linkHeld())
	}

	// A stream beside it, byte for byte.
	sa, sb := c.conn(t)
	const size = 4 << 20
	got := make(chan error, 1)
	go func() {
		n, err := recvSeeded(func(b []byte) (int, error) { return c.b.Recv(sb, b) }, 8, 61<<10)
		if err == nil && n != size {
			err = fmt.Errorf("received %d of %d bytes", n, size)
		}
		got <- err
	}()
	if err := sendSeeded(func(b []byte) (int, error) { return c.a.Send(sa, b) }, 8, size, 64<<10); err != nil {
		t.Fatal(err)
	}
	if err := c.a.Shutdown(sa); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the stream beside the unread data: %v", err)
	}
	if st := c.b.Stats(); st.HeldBuffers > c.cap || c.linkHeld() > c.cap {
		t.Fatalf("after the stream: provider holds %d, link %d; cap %d", st.HeldBuffers, c.linkHeld(), c.cap)
	}

	// Half the idle data read, byte for byte, from where it waited.
	check := newStreamCheck(7)
	buf := make([]byte, 5000) // not a multiple of a segment
	for check.n < idle/2 {
		n, err := c.b.Recv(ib, buf[:min(len(buf), int(idle/2-check.n))])
		if err != nil {
			t.Fatal(err)
		}
		if err := check.check(buf[:n]); err != nil {
			t.Fatal(err)
		}
	}
	if _, h := recvQ(); h >= held {
		t.Fatalf("%d buffers held after half was read; %d before", h, held)
	}
	// The rest goes with the connection.
	for _, s := range []Socket{ib, sb} {
		if err := c.b.CloseSocket(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []Socket{ia, sa} {
		c.a.CloseSocket(s)
	}
	if st := c.b.Stats(); st.HeldBuffers != 0 || c.linkHeld() != 0 {
		t.Fatalf("after close: provider holds %d, link %d", st.HeldBuffers, c.linkHeld())
	}
	checkQuiet(t, c.a, c.b)
}

// TestHeldData is checkHeld on memnet, with the default cap and with a
// cap small enough that the idle connection's share is used up and the
// rest of its data goes into the pool's buffers.
func TestHeldData(t *testing.T) {
	for _, hc := range []int{memnet.DefaultHoldCap, 24} {
		t.Run(fmt.Sprint(hc), func(t *testing.T) {
			tn := newTestNet(t, 31, memnet.Faults{}, 2, func(c *Config) {
				c.Link.(*memnet.Link).SetHoldCap(hc)
			})
			ln := tn.listener(1, 80, 4)
			checkHeld(t, heldCase{
				a: tn.ps[0], b: tn.ps[1], ln: ln, cap: hc,
				conn:     func(testing.TB) (Socket, Socket) { return tn.conn(ln, 80) },
				linkHeld: tn.links[1].Held,
			})
		})
	}
}

// TestVethHeldFrames is checkHeld over veth: at MTU 1500; at 9000 and
// 65000, where each datagram is held in the several UMEM frames it
// arrived in (3 and 17); and with a queue that holds only 24 frames. The unread data never leaves the
// kernel without a frame to receive into: the fill ring was never found
// empty.
func TestVethHeldFrames(t *testing.T) {
	for _, c := range []struct{ mtu, hold int }{{1500, 0}, {9000, 0}, {65000, 0}, {1500, 24}} {
		t.Run(fmt.Sprintf("mtu=%d/hold=%d", c.mtu, c.hold), func(t *testing.T) {
			testutil.Privileged(t)
			bed := testbed.New(t, testbed.Options{MTU: c.mtu})
			p := &vethPair{bed: bed, portB: 5000}
			p.a, p.la = startOnLink(t, &bed.A, xdplink.Config{}, Config{})
			p.b, p.lb = startOnLink(t, &bed.B, xdplink.Config{HoldFrames: c.hold}, Config{})
			ln := p.listen(t, 4)
			empty0 := p.lb.Stats().Kernel.FillRingEmpty
			checkHeld(t, heldCase{
				a: p.a, b: p.b, ln: ln, cap: p.lb.HoldCap(),
				conn:     func(t testing.TB) (Socket, Socket) { return p.connectPair(t, ln) },
				linkHeld: func() int { return int(p.lb.Counters().Held) },
			})
			if e := p.lb.Stats().Kernel.FillRingEmpty - empty0; e != 0 {
				t.Errorf("the kernel found b's fill ring empty %d times", e)
			}
			// Half of what the default fill ring leaves of the
			// default 4096 frames, on each queue.
			want := c.hold
			if want == 0 {
				want = 1024
			}
			if want *= len(p.lb.Stats().Queues); p.lb.HoldCap() != want {
				t.Errorf("HoldCap %d, want %d", p.lb.HoldCap(), want)
			}
		})
	}
}
