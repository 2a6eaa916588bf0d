package xdplink

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/xdp"
)

// xdpLinks opens a Link on each end of a fresh testbed.
func xdpLinks(t testing.TB) (*testbed.Bed, *Link, *Link) {
	t.Helper()
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{})
	open := func(h *testbed.Host) *Link {
		l, err := New(Config{Netns: h.NS, Interface: h.If})
		if err != nil {
			t.Fatalf("open link on %s: %v", h.NS, err)
		}
		t.Cleanup(func() {
			if err := l.Close(); err != nil {
				t.Errorf("close link: %v", err)
			}
		})
		return l
	}
	return bed, open(&bed.A), open(&bed.B)
}

func TestXDPLinkDatagrams(t *testing.T) {
	testutil.CheckGoroutines(t)
	testutil.CheckFDs(t)
	_, a, b := xdpLinks(t)
	if a.MTU() != 1500-28 {
		t.Fatalf("MTU %d, want %d", a.MTU(), 1500-28)
	}
	// The first send to a peer resolves it through the kernel (ARP): the
	// datagram waits for the answer in the peer's pending queue, and goes
	// out with a later Flush (or Receive) once the kernel has it.
	for _, pair := range [][2]*Link{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		if err := from.Send(to.LocalAddr(), []byte("hello")); err != nil {
			t.Fatal(err)
		}
		got := false
		for deadline := time.Now().Add(5 * time.Second); !got; {
			if time.Now().After(deadline) {
				t.Fatalf("the first datagram to %v did not arrive: %+v", to.LocalAddr(), from.Counters())
			}
			from.Flush()
			to.Receive(64, func(peer netip.Addr, p []byte, _ [][]byte) {
				got = peer == from.LocalAddr() && string(p) == "hello"
			})
		}
		// B may have learnt A's address from A's ARP request.
		if s := from.Counters(); s.Pending > 1 || from == a && s.Pending != 1 || s.Unresolved != 0 {
			t.Fatalf("first datagram: %+v, want it pending once (or known already) and sent", s)
		}
	}
	for i, pair := range [][2]*Link{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		const n = 1000
		for k := range n {
			msg := fmt.Appendf(nil, "datagram %d/%d %s", i, k, bytes.Repeat([]byte{byte(k)}, k%1400))
			if err := from.Send(to.LocalAddr(), msg); err != nil {
				t.Fatalf("send %d: %v", k, err)
			}
			if k%32 == 31 {
				if err := from.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if k%128 == 127 || k == n-1 {
				from.Flush()
				want := k - k%128
				if k == n-1 {
					want = n - n%128
				}
				deadline := time.Now().Add(5 * time.Second)
				for want <= k {
					to.Receive(64, func(peer netip.Addr, p []byte, _ [][]byte) {
						exp := fmt.Appendf(nil, "datagram %d/%d %s", i, want, bytes.Repeat([]byte{byte(want)}, want%1400))
						if peer != from.LocalAddr() || !bytes.Equal(p, exp) {
							t.Fatalf("datagram %d from %v differs", want, peer)
						}
						want++
					})
					if time.Now().After(deadline) {
						t.Fatalf("datagram %d did not arrive", want)
					}
				}
			}
		}
	}
	if s := a.Counters(); s.Unresolved != 0 || s.Malformed != 0 || s.NotOurs != 0 {
		t.Fatalf("link counters: %+v", s)
	}
	if sa, sb := a.Counters(), b.Counters(); sa.Pending != 1 || sb.Pending > 1 {
		t.Errorf("%d and %d frames waited for a resolution, want only the first", sa.Pending, sb.Pending)
	}
	if err := a.Send(b.LocalAddr(), make([]byte, a.MTU()+1)); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("oversized send: %v", err)
	}
}

func TestXDPLinkErrors(t *testing.T) {
	bed, a, _ := xdpLinks(t)
	if err := a.Send(netip.MustParseAddr("198.19.1.1"), []byte("x")); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("send off the link: %v, want EHOSTUNREACH", err)
	}
	// An address on the subnet with nobody there never resolves. Its
	// frame waits for the kernel's answer while the caller goes on; after
	// neigh.Wait it is dropped, and later sends fail fast.
	// A send that waited for the answer would come back with the frame
	// already dropped (Unresolved) or refused.
	absent := netip.MustParseAddr("198.18.0.99")
	if err := a.Send(absent, []byte("x")); err != nil {
		t.Fatalf("send to a host being resolved: %v, want it queued", err)
	}
	if s := a.Counters(); s.Pending != 1 || s.Sent != 0 || s.Unresolved != 0 {
		t.Fatalf("after a send to a host being resolved: %+v, want 1 pending, none sent or dropped", s)
	}
	for deadline := time.Now().Add(5 * time.Second); a.Counters().Unresolved == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the frame to an absent host was never dropped")
		}
		a.Wait(time.Millisecond)
		a.Receive(64, func(netip.Addr, []byte, [][]byte) {})
	}
	if err := a.Send(absent, []byte("x")); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("send to an absent host after it failed to resolve: %v, want EHOSTUNREACH", err)
	}
	// B is known up front: a loaded machine's neighbour resolution is not
	// what the rest of this test is about.
	if err := bed.Neighbours(); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(bed.B.Addr, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := testbed.IP("-n", bed.A.NS, "link", "set", "dev", bed.A.If, "down"); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); !errors.Is(err, syscall.ENETDOWN) {
		t.Fatalf("flush on a downed interface: %v, want ENETDOWN", err)
	} else if le := (*xdp.LinkError)(nil); !errors.As(err, &le) {
		t.Fatalf("flush on a downed interface: %v (%T), want an *xdp.LinkError", err, err)
	}
}

// TestXDPLinkRefusesUnanswerable sends to addresses nobody may be sent to:
// each send fails with EHOSTUNREACH before any neighbour lookup, is
// counted, and nothing reaches B. The same check drops such sources on
// receive, behind the steer program's.
func TestXDPLinkRefusesUnanswerable(t *testing.T) {
	bed, a, b := xdpLinks(t)
	bad := []string{"198.18.0.255", "198.18.0.0", "255.255.255.255", "0.0.0.0", "0.1.2.3",
		"127.0.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1", bed.A.Addr.String()}
	for _, s := range bad {
		if err := a.Send(netip.MustParseAddr(s), []byte("x")); !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("send to %s: %v; want EHOSTUNREACH", s, err)
		}
		if !a.unanswerable(netip.MustParseAddr(s)) {
			t.Errorf("%s is answerable", s)
		}
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if st := a.Counters(); st.Refused != uint64(len(bad)) || st.Sent != 0 {
		t.Errorf("refused %d, sent %d; want %d refused, none sent", st.Refused, st.Sent, len(bad))
	}
	for _, s := range []string{bed.B.Addr.String(), "198.18.1.0", "198.18.1.255", "198.19.0.255", "10.0.0.1"} {
		if a.unanswerable(netip.MustParseAddr(s)) {
			t.Errorf("%s is unanswerable", s)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if n := b.Receive(64, func(netip.Addr, []byte, [][]byte) {}); n != 0 {
		t.Errorf("B received %d datagrams", n)
	}
}

// TestLendTooMany: more buffers than a UMEM may lend is a configuration
// error that names the field, not a failed UMEM.
func TestLendTooMany(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{})
	l, err := New(Config{Netns: bed.A.NS, Interface: bed.A.If, LendBuffers: 1 << 30})
	if err == nil {
		l.Close()
		t.Fatal("a link lending 1<<30 buffers opened")
	}
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "LendBuffers") {
		t.Fatalf("got %v, want a configuration error about LendBuffers", err)
	}
}

// TestSendLent follows the Lender contract on one queue: a datagram
// written in a lent buffer to a peer still resolving goes out as a copy
// (not held); once the peer is known it goes out from the buffer (held),
// arrives byte-exact, and the buffer comes back through the SetLentDone
// function exactly once.
func TestSendLent(t *testing.T) {
	testutil.CheckGoroutines(t)
	bed, a, b := xdpLinks(t)
	regions, per, stride, head := a.Lent()
	if len(regions) != 1 || per != DefaultLendBuffers(a.MTU()) || head != frame.HeaderLen || stride < head+a.MTU() {
		t.Fatalf("Lent: %d regions of %d buffers, stride %d, head %d", len(regions), per, stride, head)
	}
	done := map[uint32]int{}
	a.SetLentDone(func(i uint32) { done[i]++ })
	write := func(i uint32, msg string) int {
		o := int(i)*stride + head
		return copy(regions[0][o:o+a.MTU()], wire.AppendDatagram(nil, &wire.Header{Op: wire.OpData, SrcPort: 1, DstPort: 2}, []byte(msg)))
	}
	receive := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; {
			got := false
			a.Flush()
			b.Receive(64, func(_ netip.Addr, p []byte, _ [][]byte) {
				var h wire.Header
				pl, err := h.Decode(p)
				got = got || err == nil && string(pl) == want
			})
			if got {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%q did not arrive: %+v", want, a.Counters())
			}
		}
	}

	n := write(3, "copied")
	if held, err := a.SendLent(b.LocalAddr(), 3, n, false); held || err != nil {
		t.Fatalf("SendLent to a peer being resolved: held %v, %v; want a copy", held, err)
	}
	if c := a.Counters(); c.Copied != 1 || c.Pending != 1 || c.InPlace != 0 {
		t.Fatalf("after a lent send to a peer being resolved: %+v", c)
	}
	receive("copied")
	if err := bed.Neighbours(); err != nil {
		t.Fatal(err)
	}
	n = write(5, "in place")
	held, err := a.SendLent(b.LocalAddr(), 5, n, true)
	if !held || err != nil {
		t.Fatalf("SendLent to a known peer: held %v, %v; want it held", held, err)
	}
	receive("in place")
	for deadline := time.Now().Add(5 * time.Second); done[5] == 0; a.Reap() {
		if time.Now().After(deadline) {
			t.Fatal("the link never handed buffer 5 back")
		}
	}
	a.Reap()
	if len(done) != 1 || done[5] != 1 {
		t.Fatalf("buffers handed back: %v, want buffer 5 once", done)
	}
	if c := a.Counters(); c.InPlace != 1 || c.Copied != 1 {
		t.Fatalf("counters: %+v, want one in place and one copied", c)
	}
	if held, err := a.SendLent(b.LocalAddr(), 6, a.MTU()+1, false); held || !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("oversized SendLent: held %v, %v", held, err)
	}
}
