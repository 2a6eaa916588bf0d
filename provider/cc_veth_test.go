package provider

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

// TestVethBottleneck streams from two senders at once to one receiver
// through a switch whose port toward the receiver is a 500 Mbit/s token
// bucket with a 100 KB buffer (testbed.Shared): every byte arrives, the
// congestion windows keep the drops at the port low, and the two flows
// share it. The bounds are loose (a shared 2-core machine); sdxbench's
// incast workload measures. The ECN-marking variant needs RED in the
// kernel; where it is missing (the 6.18 test VM has no marking qdisc at
// all) the test says so in its log and runs the drop-tail variant only,
// and memnet's marking bottleneck (TestCCBottleneckECN) covers ECN.
func TestVethBottleneck(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	for _, ecn := range []bool{false, true} {
		if ecn && !testbed.HasQdisc("red") {
			t.Logf("ECN-marking variant not run: %v", testbed.ErrNoMarkingQdisc)
			continue
		}
		t.Run(fmt.Sprintf("ecn=%v", ecn), func(t *testing.T) {
			sh := testbed.NewShared(t, testbed.SharedOptions{Senders: 2, Subnet: 60})
			if err := sh.SetBottleneck(testbed.Bottleneck{Rate: 500e6, Buffer: 100_000, ECN: ecn}); err != nil {
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
			var rtx, sent uint64
			for i, f := range flows {
				if f.err != nil {
					t.Fatalf("flow %d: %v", i, f.err)
				}
				st := f.p.Stats()
				rtx += st.Retransmits
				sent += st.DataOut
				rates = append(rates, float64(f.res.n)/f.res.elapsed.Seconds())
			}
			drops := float64(q.Dropped-q0.Dropped) / float64(q.Sent-q0.Sent+q.Dropped-q0.Dropped)
			t.Logf("%d MiB each: %.0f and %.0f Mbit/s; bottleneck: %d sent, %d dropped (%.2f%%), %d marked; senders: %d of %d segments retransmitted; Jain %.3f",
				size>>20, rates[0]*8/1e6, rates[1]*8/1e6, q.Sent-q0.Sent, q.Dropped-q0.Dropped, 100*drops, q.Marked-q0.Marked, rtx, sent, jain(rates))
			if drops > 0.05 {
				t.Errorf("%.1f%% of the frames dropped at the bottleneck, want under 5%% (issue 23 measured 19-25%% without a window)", 100*drops)
			}
			if j := jain(rates); j < 0.8 {
				t.Errorf("Jain's index %.3f between two flows", j)
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
