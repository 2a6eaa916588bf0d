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

// TestWaitAfterBatch: a queue that has just kicked a full batch no longer
// has the netpoller watching its socket (Queue.watch); a frame that
// arrives then, or while the next Wait is parked, still ends that Wait,
// alone and in a Group.
func TestWaitAfterBatch(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	bed := testbed.New(t, testbed.Options{})
	_, as := openAll(t, &bed.A, 1)
	_, bs := openAll(t, &bed.B, 1)
	a, b := as[0], bs[0]
	ab := frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(bed.A.MAC), IP: bed.A.Addr, Port: 40000},
		Dst: frame.Endpoint{MAC: [6]byte(bed.B.MAC), IP: bed.B.Addr, Port: testPort},
	}
	ba := ab.Reverse()
	ba.Dst.Port = testPort // the steer program's
	g, err := xdp.NewGroup(as)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var descs [64]xdp.Desc
	toA := func() {
		if send(b, &ba, 2, 0, 1) != 1 {
			t.Fatal("nothing sent from b")
		}
		if err := b.Kick(); err != nil {
			t.Fatal(err)
		}
	}
	for round, c := range []struct {
		name   string
		wait   func() (bool, error)
		during bool
	}{
		{"queue, frame before", func() (bool, error) { return a.Wait(-1) }, false},
		{"queue, frame during", func() (bool, error) { return a.Wait(-1) }, true},
		{"group, frame before", func() (bool, error) { return g.Wait(-1) }, false},
		{"group, frame during", func() (bool, error) { return g.Wait(-1) }, true},
	} {
		if got := send(a, &ab, 1, uint64(round), 32); got != 32 {
			t.Fatalf("%s: %d of 32 frames built", c.name, got)
		}
		if err := a.Kick(); err != nil {
			t.Fatal(err)
		}
		if !c.during {
			toA()
		}
		done := make(chan error, 1)
		go func() {
			_, err := c.wait()
			done <- err
		}()
		if c.during {
			time.Sleep(20 * time.Millisecond) // most likely parked by now
			toA()
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: Wait: %v", c.name, err)
			}
		case <-time.After(5 * time.Second):
			a.Wake()
			g.Wake()
			<-done
			t.Fatalf("%s: a frame arrived after a batch, and Wait did not end", c.name)
		}
		if n := a.Receive(descs[:]); n == 0 {
			t.Fatalf("%s: Wait ended with nothing received", c.name)
		} else {
			a.ReleasePacket(descs[:n])
		}
		for n := b.Receive(descs[:]); n > 0; n = b.Receive(descs[:]) {
			b.ReleasePacket(descs[:n])
		}
		a.Complete()
		a.Refill()
		b.Complete()
		b.Refill()
	}
}
