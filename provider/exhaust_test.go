package provider

// Resource exhaustion on the real path: UMEM frames, the provider's
// buffer pool, completion queue slots, operations and descriptors run
// out. Each gives back-pressure or a clear error (ENOBUFS, EMFILE), never
// a panic, a hang or lost data.

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/provider/xdplink"
	"github.com/sdx-project/sdx/xdp"
)

// exhaustPool is the buffer pool of TestExhaustBuffers.
const exhaustPool = 800

// newExhaustPair is a vethPair on subnet, with b listening on port 80 and
// each link's UMEM and rings sized by frames.
func newExhaustPair(t testing.TB, subnet uint8, frames xdp.Config, cfg Config) *vethPair {
	t.Helper()
	return newExhaustPairLink(t, subnet, xdplink.Config{Frames: frames}, cfg)
}

// newExhaustPairLink is newExhaustPair with the links configured by lc.
func newExhaustPairLink(t testing.TB, subnet uint8, lc xdplink.Config, cfg Config) *vethPair {
	t.Helper()
	testutil.Privileged(t)
	ep := &vethPair{bed: testbed.New(t, testbed.Options{Subnet: subnet}), portB: 80}
	ep.a, ep.la = startOnLink(t, &ep.bed.A, lc, cfg)
	ep.b, ep.lb = startOnLink(t, &ep.bed.B, lc, cfg)
	return ep
}

// endAndStats ends both providers and returns their links' counters, which
// may be read once the poller has stopped. Cleanup checks, through the
// links' Close, that every UMEM frame came back.
func (ep *vethPair) endAndStats(t testing.TB) (xdplink.Counters, xdplink.Counters) {
	t.Helper()
	for _, p := range []*Provider{ep.a, ep.b} {
		if err := p.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	return ep.la.Counters(), ep.lb.Counters()
}

// TestExhaustUMEM runs streams both ways over links with 128 UMEM frames
// and 64-entry rings: the sender keeps running out of frames and tx slots
// (ENOBUFS from the link, which the provider takes as back-pressure), and
// the receiver's fill ring runs dry (the kernel drops, the protocol
// retransmits). Every byte arrives, and every frame is accounted for at
// the end. The links lend no buffers: data sent in place takes no frame
// of the pool, and the point is to run out of those.
func TestExhaustUMEM(t *testing.T) {
	testutil.CheckGoroutines(t)
	small := xdp.Config{NumFrames: 128, FillSize: 64, CompletionSize: 64, RxSize: 64, TxSize: 64}
	// Unpaced (the default), a sender whose window opens sends it in
	// one burst, which is what runs a small UMEM dry; paced, it fits.
	ep := newExhaustPairLink(t, 60, xdplink.Config{Frames: small, LendBuffers: -1}, Config{})
	ln := ep.listen(t, 4)
	size := scaled[int64](64<<20, 8<<20)
	s1, r1 := ep.connectPair(t, ln)
	s2, r2 := ep.connectPair(t, ln)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	start := time.Now()
	for i, c := range []struct {
		p, q *Provider
		s, r Socket
	}{{ep.a, ep.b, s1, r1}, {ep.b, ep.a, r2, s2}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := sendStream(c.p, c.q, c.s, c.r, uint64(20+i), size); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	el := time.Since(start)
	for _, s := range []Socket{s1, r2} {
		ep.a.CloseSocket(s)
	}
	for _, s := range []Socket{r1, s2} {
		ep.b.CloseSocket(s)
	}
	sa, sb := ep.a.Stats(), ep.b.Stats()
	la, lb := ep.endAndStats(t)
	t.Logf("two %d MiB streams, one each way, in %v; links A %+v, B %+v; retransmits A %d, B %d",
		size>>20, el.Round(time.Millisecond), la, lb, sa.Retransmits, sb.Retransmits)
	if la.NoFrames == 0 && lb.NoFrames == 0 {
		t.Error("no send ever found the UMEM or the tx ring full: the test did not exhaust anything")
	}
}

// TestExhaustBuffers gives the providers a pool of 800 buffers, the least
// Startup accepts (two connections' send and receive buffers are 746), and
// runs six streams from A to B at once: writers wait for buffers (back-pressure), the
// receiver drops what it has no buffer for (the sender retransmits), and
// every stream arrives byte-exact.
func TestExhaustBuffers(t *testing.T) {
	testutil.CheckGoroutines(t)
	ep := newExhaustPair(t, 61, xdp.Config{}, Config{Buffers: exhaustPool})
	ln := ep.listen(t, 8)
	size := scaled[int64](16<<20, 4<<20)
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	var peakHeld int
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			peakHeld = max(peakHeld, ep.a.Stats().BuffersHeld(), ep.b.Stats().BuffersHeld())
		}
	}()
	start := time.Now()
	for i := range n {
		s, r := ep.connectPair(t, ln)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := sendStream(ep.a, ep.b, s, r, uint64(30+i), size)
			ep.a.CloseSocket(s)
			ep.b.CloseSocket(r)
			if err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	a, b := ep.a.Stats(), ep.b.Stats()
	t.Logf("%d streams of %d MiB through %d-buffer pools in %v; at most %d buffers held; B dropped %d for want of a buffer, A retransmitted %d",
		n, size>>20, exhaustPool, time.Since(start).Round(time.Millisecond), peakHeld, b.Drops.NoBuffer, a.Retransmits)
	if peakHeld > exhaustPool {
		t.Errorf("%d buffers held from a pool of %d", peakHeld, exhaustPool)
	}
	if peakHeld < exhaustPool/4 {
		t.Errorf("at most %d of %d buffers held: the pool was never under pressure", peakHeld, exhaustPool)
	}
	checkQuiet(t, ep.a, ep.b)
}

// TestExhaustCompletionQueue moves a stream through completion queues of
// two slots with the overlapped verbs only: a post finds its queue full
// (ENOBUFS) until the application reaps, and nothing is lost meanwhile:
// the bytes that arrive while no receive can be posted wait in the
// socket, and the stream arrives byte-exact.
func TestExhaustCompletionQueue(t *testing.T) {
	testutil.CheckGoroutines(t)
	ep := newExhaustPair(t, 62, xdp.Config{}, Config{})
	s, r := ep.connectPair(t, ep.listen(t, 4))
	size := scaled[int64](16<<20, 2<<20)
	const chunk = 16 << 10
	// Three buffers each side: with two slots, at most two operations are
	// pending, and a buffer is reused only after its completion is reaped.
	type result struct {
		n       int64
		refused int
		err     error
	}
	rcq := newCQ(t, ep.b, 2)
	recvd := make(chan result, 1)
	go func() {
		var res result
		defer func() { recvd <- res }()
		want := newStreamCheck(40)
		var bufs [3][chunk]byte
		next := 0
		comps := make([]Completion, 1)
		for {
			for {
				err := ep.b.PostRecv(r, bufs[next%3][:], rcq, uint64(next%3))
				if errors.Is(err, syscall.ENOBUFS) {
					res.refused++
					break
				}
				if err != nil {
					res.err = err
					return
				}
				next++
			}
			k, err := rcq.Wait(comps, 5*time.Second)
			if err != nil || k == 0 {
				res.err = fmt.Errorf("wait: %d completions, %v", k, err)
				return
			}
			c := comps[0]
			if c.Err != nil {
				res.err = c.Err
				return
			}
			if c.Bytes == 0 {
				rcq.Wait(comps, time.Second) // the other receive ends too
				return
			}
			if err := want.check(bufs[c.Context][:c.Bytes]); err != nil {
				res.err = err
				return
			}
			res.n += int64(c.Bytes)
		}
	}()
	scq := newCQ(t, ep.a, 2)
	var bufs [3][chunk]byte
	comps := make([]Completion, 1)
	reap := func() error {
		k, err := scq.Wait(comps, 5*time.Second)
		if err != nil || k == 0 {
			return fmt.Errorf("wait: %d completions, %v", k, err)
		}
		return comps[0].Err
	}
	i, sendRefused := 0, 0
	err := sendSeeded(func(b []byte) (int, error) {
		buf := bufs[i%3][:len(b)]
		i++
		copy(buf, b)
		for {
			err := ep.a.PostSend(s, buf, scq, 0)
			if err == nil {
				return len(b), nil
			}
			if !errors.Is(err, syscall.ENOBUFS) {
				return 0, err
			}
			sendRefused++
			if err := reap(); err != nil {
				return 0, err
			}
		}
	}, 40, size, chunk)
	if err != nil {
		t.Fatal(err)
	}
	for scq.Len() > 0 || ep.a.Stats().OpsInUse > 0 {
		scq.Wait(comps, 100*time.Millisecond)
	}
	if err := ep.a.Shutdown(s); err != nil {
		t.Fatal(err)
	}
	res := <-recvd
	if res.err != nil {
		t.Fatalf("receiver after %d bytes: %v", res.n, res.err)
	}
	if res.n != size {
		t.Fatalf("received %d of %d bytes", res.n, size)
	}
	t.Logf("%d MiB through two-slot completion queues: %d sends and %d receives found their queue full", size>>20, sendRefused, res.refused)
	if sendRefused == 0 || res.refused == 0 {
		t.Errorf("the queues never filled: %d sends, %d receives refused", sendRefused, res.refused)
	}
	ep.a.CloseSocket(s)
	ep.b.CloseSocket(r)
	checkQuiet(t, ep.a, ep.b)
}

// TestExhaustDescriptorsAndOps fills B's descriptor table and endpoint
// limit while a stream runs on a live connection, then A's operation
// pool: each limit answers with its error (EMFILE; a refused connect at
// the connector; ENOBUFS for a post and for a blocking call), the stream
// is unaffected, and everything works again once the descriptors are
// closed and the operations reaped.
func TestExhaustDescriptorsAndOps(t *testing.T) {
	testutil.CheckGoroutines(t)
	const maxSockets, maxOps = 16, 64
	ep := newExhaustPair(t, 63, xdp.Config{}, Config{MaxSockets: maxSockets, MaxConnections: maxSockets, MaxOps: maxOps})
	ln := ep.listen(t, 4)
	s, r := ep.connectPair(t, ln)
	done := make(chan error, 1)
	size := scaled[int64](32<<20, 4<<20)
	go func() {
		_, err := sendStream(ep.a, ep.b, s, r, 50, size)
		done <- err
	}()

	// B: the listener and r hold two descriptors; fill the rest.
	var held []Socket
	for {
		x, err := ep.b.Socket()
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("socket past the table: %v; want EMFILE", err)
			}
			break
		}
		held = append(held, x)
		if len(held) > maxSockets {
			t.Fatalf("%d sockets from a table of %d", len(held), maxSockets)
		}
	}
	if len(held) != maxSockets-2 {
		t.Errorf("%d sockets besides the listener and the stream's; want %d", len(held), maxSockets-2)
	}
	if _, err := ep.b.Duplicate(ln); !errors.Is(err, syscall.EMFILE) {
		t.Errorf("duplicate on a full table: %v; want EMFILE", err)
	}
	// B's endpoints are all taken too: a connect from A is refused at once.
	c := must[Socket](t)(ep.a.Socket())
	start := time.Now()
	if err := ep.a.Connect(c, netip.AddrPortFrom(ep.bed.B.Addr, 80)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect to a provider out of endpoints: %v; want ECONNREFUSED", err)
	}
	t.Logf("connect to a full provider refused in %v", time.Since(start).Round(time.Microsecond))
	ep.a.CloseSocket(c)
	if err := <-done; err != nil {
		t.Fatalf("stream while B's tables were full: %v", err)
	}
	ep.a.CloseSocket(s)
	ep.b.CloseSocket(r)
	for _, x := range held {
		ep.b.CloseSocket(x)
	}

	// A's operation pool: receives posted on an idle connection until
	// ENOBUFS; a blocking call then fails with ENOBUFS too, at once.
	idle, peer := ep.connectPair(t, ln)
	cq := newCQ(t, ep.a, 256)
	buf := make([]byte, 16)
	posted := 0
	for {
		err := ep.a.PostRecv(idle, buf, cq, 0)
		if err != nil {
			if !errors.Is(err, syscall.ENOBUFS) {
				t.Fatalf("post past the operation pool: %v; want ENOBUFS", err)
			}
			break
		}
		posted++
		if posted > maxOps {
			t.Fatalf("%d operations posted from a pool of %d", posted, maxOps)
		}
	}
	if posted != maxOps {
		t.Errorf("%d receives posted before ENOBUFS; want the pool's %d", posted, maxOps)
	}
	start = time.Now()
	if _, err := ep.a.Send(idle, []byte("x")); !errors.Is(err, syscall.ENOBUFS) {
		t.Errorf("blocking send with no operation free: %v; want ENOBUFS", err)
	}
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Errorf("blocking send took %v to report ENOBUFS", el)
	}
	// The peer's data completes the first receive; nothing is lost.
	if _, err := ep.b.Send(peer, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	comps := make([]Completion, 256)
	if k, err := cq.Wait(comps[:1], 5*time.Second); k != 1 || err != nil || string(buf[:comps[0].Bytes]) != "hello" {
		t.Fatalf("first receive: %d completions, %v, %q", k, err, buf[:comps[0].Bytes])
	}
	// Closing the socket aborts the other receives and frees the
	// operations.
	ep.a.CloseSocket(idle)
	ep.b.CloseSocket(peer)
	for reaped := 1; reaped < posted; {
		k, err := cq.Wait(comps, time.Second)
		if err != nil || k == 0 {
			t.Fatalf("reaped %d of %d receives: %v", reaped, posted, err)
		}
		for _, c := range comps[:k] {
			if !errors.Is(c.Err, ErrAborted) {
				t.Errorf("aborted receive completed with %v", c.Err)
			}
		}
		reaped += k
	}
	// Everything is usable again.
	s2, r2 := ep.connectPair(t, ln)
	if _, err := sendStream(ep.a, ep.b, s2, r2, 51, 1<<20); err != nil {
		t.Fatalf("stream after the limits: %v", err)
	}
	ep.a.CloseSocket(s2)
	ep.b.CloseSocket(r2)
	checkQuiet(t, ep.a, ep.b)
}
