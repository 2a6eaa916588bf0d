package xdp_test

import (
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/xdp"
)

// openAll attaches the steer program on h and opens and registers a small
// queue on each of its n rx queues; everything closes when the test ends.
func openAll(t *testing.T, h *testbed.Host, n int) (*xdp.Steering, []*xdp.Queue) {
	t.Helper()
	s, err := xdp.AttachSteer(xdp.SteerConfig{Netns: h.NS, Interface: h.If, Port: testPort})
	if err != nil {
		t.Fatalf("attach on %s: %v", h.NS, err)
	}
	t.Cleanup(func() { s.Close() })
	var qs []*xdp.Queue
	for id := range n {
		q, err := xdp.Open(xdp.Config{Netns: h.NS, Interface: h.If, Queue: id, NumFrames: 512, FillSize: 256, CompletionSize: 256, RxSize: 256, TxSize: 256})
		if err != nil {
			t.Fatalf("open queue %d on %s: %v", id, h.NS, err)
		}
		t.Cleanup(func() {
			if err := q.Close(); err != nil {
				t.Errorf("close queue %d: %v", id, err)
			}
		})
		if err := s.Register(q); err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	return s, qs
}

// TestVethQueueToQueue pins the fact the multi-queue tests build on: on
// veth, a frame sent from AF_XDP queue q arrives on the peer's rx queue q,
// and a Group over the peer's queues wakes for it.
func TestVethQueueToQueue(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	testutil.CheckFDs(t)
	const n = 4
	bed := testbed.New(t, testbed.Options{Queues: n})
	for _, h := range []*testbed.Host{&bed.A, &bed.B} {
		got, err := xdp.RxQueues(h.NS, h.If)
		if err != nil || got != n {
			t.Fatalf("RxQueues(%s): %d, %v; want %d", h.If, got, err, n)
		}
	}
	_, as := openAll(t, &bed.A, n)
	steerB, bs := openAll(t, &bed.B, n)
	g, err := xdp.NewGroup(bs)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	flow := frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(bed.A.MAC), IP: bed.A.Addr, Port: 40000},
		Dst: frame.Endpoint{MAC: [6]byte(bed.B.MAC), IP: bed.B.Addr, Port: testPort},
	}
	var descs [64]xdp.Desc
	for q := range n {
		if send(as[q], &flow, 9, uint64(q), 1) != 1 {
			t.Fatalf("queue %d: nothing sent", q)
		}
		if err := as[q].Kick(); err != nil {
			t.Fatal(err)
		}
		if woken, err := g.Wait(2 * time.Second); err != nil || woken {
			t.Fatalf("queue %d: Wait: woken %v, %v; want a frame", q, woken, err)
		}
		for r := range n {
			got := bs[r].Receive(descs[:])
			for _, d := range descs[:got] {
				bs[r].Release(bs[r].FrameOf(d))
			}
			bs[r].Refill()
			if want := b2i(r == q); got != want {
				t.Fatalf("sent on A's queue %d: B's queue %d received %d frames, want %d", q, r, got, want)
			}
		}
		as[q].Complete()
	}
	g.Wake()
	if woken, err := g.Wait(2 * time.Second); err != nil || !woken {
		t.Fatalf("Wait after Wake: woken %v, %v", woken, err)
	}
	if ss, err := steerB.Stats(); err != nil || ss.Redirected != n || ss.NoSocket != 0 {
		t.Fatalf("steer on B: %+v, %v; want %d redirected, none without a socket", ss, err, n)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
