package provider

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// TestVethBottleneck streams from two senders at once to one receiver
// through a switch whose port toward the receiver is a 500 Mbit/s token
// bucket with a 100 KB buffer (testbed.Shared), drop-tail and then with
// bpf's ECN marker in front of it: every byte arrives, the congestion
// windows keep the drops at the port low, and the two flows share it.
// With marking, the senders hear the marks (ConnInfo, Stats), shrink
// their windows for them, and retransmit almost nothing. The bounds are
// loose (a shared 2-core machine); sdxbench's incast workload measures.
func TestVethBottleneck(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	for _, ecn := range []bool{false, true} {
		t.Run(fmt.Sprintf("ecn=%v", ecn), func(t *testing.T) {
			sh := testbed.NewShared(t, testbed.SharedOptions{Senders: 2, Subnet: 60})
			b := testbed.Bottleneck{Rate: 500e6, Buffer: 100_000, ECN: ecn}
			if ecn {
				m, err := bpf.LoadMarker()
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				b.Marker = m
			}
			if err := sh.SetBottleneck(b); err != nil {
				t.Fatal(err)
			}
			size := int64(24 << 20)
			if testing.Short() || raceOn {
				size = 6 << 20
			}
			rp, _ := startOn(t, &sh.Recv, Config{})
			ln := must[Socket](t)(rp.Socket())
			if err := rp.Bind(ln, netip.AddrPortFrom(sh.Recv.Addr, 5000)); err != nil {
				t.Fatal(err)
			}
			if err := rp.Listen(ln, 8); err != nil {
				t.Fatal(err)
			}
			type flow struct {
				p    *Provider
				s, r Socket
				res  streamResult
				err  error
			}
			var flows []*flow
			for i := range sh.Senders {
				p, _ := startOn(t, &sh.Senders[i], Config{})
				s := must[Socket](t)(p.Socket())
				if err := p.Connect(s, netip.AddrPortFrom(sh.Recv.Addr, 5000)); err != nil {
					t.Fatalf("connect %d: %v", i, err)
				}
				r, _, err := rp.Accept(ln)
				if err != nil {
					t.Fatal(err)
				}
				flows = append(flows, &flow{p: p, s: s, r: r})
			}
			q0, err := sh.BottleneckStats()
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for i, f := range flows {
				wg.Add(1)
				go func() {
					defer wg.Done()
					f.res, f.err = sendStream(f.p, rp, f.s, f.r, uint64(i+1), size)
				}()
			}
			wg.Wait()
			q, err := sh.BottleneckStats()
			if err != nil {
				t.Fatal(err)
			}
			var rates []float64
			var rtx, sent, echoed, reductions uint64
			for i, f := range flows {
				if f.err != nil {
					t.Fatalf("flow %d: %v", i, f.err)
				}
				st := f.p.Stats()
				rtx += st.Retransmits
				sent += st.DataOut
				reductions += st.ECNReductions
				rates = append(rates, float64(f.res.n)/f.res.elapsed.Seconds())
				info, err := f.p.ConnInfo(f.s)
				if err != nil {
					t.Fatalf("flow %d: ConnInfo: %v", i, err)
				}
				if !info.ECN {
					t.Errorf("flow %d: no ECN between two AF_XDP links, which carry the field", i)
				}
				echoed += info.CEEchoed
			}
			drops := float64(q.Dropped-q0.Dropped) / float64(q.Sent-q0.Sent+q.Dropped-q0.Dropped)
			retrans := float64(rtx) / float64(sent)
			marked := q.Marked - q0.Marked
			t.Logf("%d MiB each: %.0f and %.0f Mbit/s; bottleneck: %d sent, %d dropped (%.2f%%), %d marked; senders: %d of %d segments retransmitted (%.2f%%), %d marks echoed, %d ECN reductions; Jain %.3f",
				size>>20, rates[0]*8/1e6, rates[1]*8/1e6, q.Sent-q0.Sent, q.Dropped-q0.Dropped, 100*drops, marked, rtx, sent, 100*retrans, echoed, reductions, jain(rates))
			if drops > 0.05 {
				t.Errorf("%.1f%% of the frames dropped at the bottleneck, want under 5%% (issue 23 measured 19-25%% without a window)", 100*drops)
			}
			if j := jain(rates); j < 0.8 {
				t.Errorf("Jain's index %.3f between two flows", j)
			}
			switch {
			case !ecn && marked+echoed+reductions != 0:
				t.Errorf("drop-tail: %d marked at the port, %d echoed, %d ECN reductions", marked, echoed, reductions)
			case ecn && (marked == 0 || echoed == 0 || reductions == 0):
				t.Errorf("ECN: %d marked at the port, %d echoed to the senders, %d ECN reductions: want all of them", marked, echoed, reductions)
			case ecn && echoed > marked:
				t.Errorf("ECN: the senders heard %d marks, the port made %d", echoed, marked)
			case ecn && retrans > 0.02:
				t.Errorf("ECN: %.2f%% of the segments retransmitted, want under 2%% (the target, measured by sdxbench, is 0.5%%)", 100*retrans)
			}
			for _, f := range flows {
				f.p.CloseSocket(f.s)
				rp.CloseSocket(f.r)
			}
		})
	}
}

// TestVethRouted reaches a peer on another subnet through a kernel
// router (testbed.Routed): the link sends to the route's next hop, the
// router forwards in its kernel, and the stream arrives byte for byte,
// both ways, on a connection set up across it.
func TestVethRouted(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	r := testbed.NewRouted(t, 62)
	a, _ := startOn(t, &r.A, Config{})
	b, _ := startOn(t, &r.B, Config{})
	ln := must[Socket](t)(b.Socket())
	if err := b.Bind(ln, netip.AddrPortFrom(r.B.Addr, 5000)); err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(ln, 4); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		s := must[Socket](t)(a.Socket())
		if err := a.Connect(s, netip.AddrPortFrom(r.B.Addr, 5000)); err != nil {
			t.Fatalf("connect across the router: %v", err)
		}
		rs, peer, err := b.Accept(ln)
		if err != nil {
			t.Fatal(err)
		}
		if peer.Addr() != r.A.Addr {
			t.Fatalf("peer %v, want %v", peer, r.A.Addr)
		}
		// One stream each way, on a connection of its own.
		p, q, ss, rr := a, b, s, rs
		if i == 1 {
			p, q, ss, rr = b, a, rs, s
		}
		res, err := sendStream(p, q, ss, rr, uint64(i+7), 8<<20)
		if err != nil {
			t.Fatalf("stream %d across the router: %v", i, err)
		}
		t.Logf("8 MiB across the router: %v", res.elapsed)
		a.CloseSocket(s)
		b.CloseSocket(rs)
	}
}
