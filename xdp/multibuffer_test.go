package xdp_test

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/xdp"
)

// sendPacket builds one frame of payload as a packet of as many UMEM
// frames as it takes and appends its chain to descs (Transmit not yet
// called).
func sendPacket(q *xdp.Queue, flow *frame.Flow, payload []byte, descs []xdp.Desc) []xdp.Desc {
	n := len(descs)
	descs, ok := q.AllocPacket(descs, frame.HeaderLen+len(payload))
	if !ok {
		panic("out of frames")
	}
	flow.Encode(q.Data(descs[n]), len(payload), uint16(n))
	q.WritePacket(descs[n:], frame.HeaderLen, payload)
	return descs
}

// takeSent receives what q's rx ring holds, each packet a whole chain of
// descriptors, checks the packets byte for byte against sent[got:], and
// returns got moved past them. It refills q, and waits a little when
// nothing came.
func takeSent(t *testing.T, q *xdp.Queue, sent [][]byte, got int) int {
	t.Helper()
	var (
		rx     [64]xdp.Desc
		whole  = make([]byte, 2*xdp.MaxPacketLen(q.FrameSize()))
		parsed frame.Parsed
	)
	n := q.Receive(rx[:])
	if n > 0 && rx[n-1].Options&xdp.PktContd != 0 {
		t.Fatalf("Receive took %d descriptors: a packet cut in two", n)
	}
	for i := 0; i < n; {
		m, k := q.ReadPacket(whole, rx[i:n])
		if rx[i+k-1].Options&xdp.PktContd != 0 {
			t.Fatalf("packet %d: chain of %d descriptors without an end", got, k)
		}
		q.ReleasePacket(rx[i : i+k])
		i += k
		if err := frame.Parse(whole[:m], &parsed); err != nil {
			t.Fatalf("packet %d (%d bytes): %v", got, m, err)
		}
		if got >= len(sent) || !bytes.Equal(parsed.Payload, sent[got]) {
			t.Fatalf("packet %d: %d bytes, or different bytes, of %d sent", got, len(parsed.Payload), len(sent))
		}
		got++
	}
	q.Refill()
	if n == 0 {
		q.Wait(time.Millisecond)
	}
	return got
}

// TestMultiBufferFrames sends frames of every length from one UMEM frame's
// to the 9000-byte MTU's as multi-buffer packets over veth, through a tx
// ring too small for a whole burst, and receives them byte-exact, each as
// one whole packet of chained descriptors.
func TestMultiBufferFrames(t *testing.T) {
	const mtu = 9000
	p := newPairOn(t, xdp.Config{TxSize: 8, CompletionSize: 8}, testbed.Options{MTU: mtu})
	for _, q := range []*xdp.Queue{p.a, p.b} {
		if !q.MultiBuffer() || q.MultiBufferErr() != nil || q.MaxFrameLen() < mtu+14 {
			t.Fatalf("multi-buffer %v (%v), frames up to %d; want frames of the %d MTU", q.MultiBuffer(), q.MultiBufferErr(), q.MaxFrameLen(), mtu)
		}
	}
	gen := rand.New(rand.NewPCG(1, 2))
	maxPayload := mtu - frame.IPv4Len - frame.UDPLen
	var sent [][]byte
	for n := 1; n <= maxPayload; n += 1 + gen.IntN(200) {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(gen.Uint32())
		}
		sent = append(sent, b)
	}
	sent = append(sent, make([]byte, maxPayload))

	var (
		pending []xdp.Desc // built, not yet on the tx ring
		got     int
		next    int
	)
	deadline := time.Now().Add(30 * time.Second)
	for got < len(sent) {
		if time.Now().After(deadline) {
			ks, _ := p.b.KernelStats()
			t.Fatalf("timed out: %d of %d received; A %+v; B %+v; kernel %+v", got, len(sent), p.a.Stats(), p.b.Stats(), ks)
		}
		// Three packets a turn, on a ring of eight slots: the ring takes
		// whole packets only.
		for len(pending) < 24 && next < len(sent) && next-got < 16 {
			pending = sendPacket(p.a, &p.flow, sent[next], pending)
			next++
		}
		if len(pending) > 0 {
			n := p.a.Transmit(pending)
			if n > 0 && pending[n-1].Options&xdp.PktContd != 0 {
				t.Fatalf("Transmit put %d descriptors: a packet cut in two", n)
			}
			pending = append(pending[:0], pending[n:]...)
		}
		if err := p.a.Kick(); err != nil {
			t.Fatal(err)
		}
		p.a.Complete()
		got = takeSent(t, p.b, sent, got)
	}
	ks, err := p.b.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	ka, _ := p.a.KernelStats()
	if ks.RxDropped != 0 || ks.RxInvalid != 0 || ka.TxInvalid != 0 {
		t.Fatalf("kernel counters: receiver %+v, sender %+v", ks, ka)
	}
	t.Logf("%d packets of up to %d bytes byte-exact; A %+v; B %+v", got, maxPayload, p.a.Stats(), p.b.Stats())
}

// TestSingleBufferFallback: a queue told to keep to single-buffer frames
// at an MTU that needs more says why, and receives what one UMEM frame
// holds.
func TestSingleBufferFallback(t *testing.T) {
	p := newPairOn(t, xdp.Config{SingleBuffer: true}, testbed.Options{MTU: 9000})
	if p.b.MultiBuffer() || p.b.MultiBufferErr() == nil || p.b.MaxFrameLen() != p.b.RxFrameLen() {
		t.Fatalf("multi-buffer %v (%v), frames up to %d", p.b.MultiBuffer(), p.b.MultiBufferErr(), p.b.MaxFrameLen())
	}
	t.Logf("fallback: %v", p.b.MultiBufferErr())
	// At an MTU whose frames fit one UMEM frame nothing is asked for and
	// nothing is missing.
	q := newPair(t, xdp.Config{})
	if q.b.MultiBuffer() || q.b.MultiBufferErr() != nil {
		t.Fatalf("at MTU 1500: multi-buffer %v (%v)", q.b.MultiBuffer(), q.b.MultiBufferErr())
	}
}

// TestLentFrames builds packets of one and of several frames in the lent
// frames, sends them from there, and gets each frame back through the
// lent-done function, never through the pool; the receiver gets them
// byte-exact.
func TestLentFrames(t *testing.T) {
	const (
		mtu  = 9000
		lent = 3 * 4 // three buffers of four 4 KiB frames
	)
	p := newPairOn(t, xdp.Config{LentFrames: lent}, testbed.Options{MTU: mtu})
	fs := p.a.FrameSize()
	if got := len(p.a.Lent()); got != lent*fs {
		t.Fatalf("Lent is %d bytes, want %d", got, lent*fs)
	}
	var done []uint32
	p.a.SetLentDone(func(f uint32) { done = append(done, f) })
	free := p.a.Pool().Free()
	gen := rand.New(rand.NewPCG(3, 4))
	sizes := []int{64, fs - frame.HeaderLen, mtu - frame.IPv4Len - frame.UDPLen}
	var (
		descs []xdp.Desc
		sent  [][]byte
	)
	for i, n := range sizes {
		off := i * 4 * fs
		b := p.a.Lent()[off : off+frame.HeaderLen+n]
		for j := range b[frame.HeaderLen:] {
			b[frame.HeaderLen+j] = byte(gen.Uint32())
		}
		p.flow.Encode(b, n, uint16(i))
		sent = append(sent, b[frame.HeaderLen:])
		descs = p.a.LentPacket(descs, off, len(b))
	}
	if got, want := len(descs), 1+1+3; got != want {
		t.Fatalf("%d descriptors for packets of %v bytes, want %d", got, sizes, want)
	}
	if n := p.a.Transmit(descs); n != len(descs) {
		t.Fatalf("Transmit took %d of %d", n, len(descs))
	}
	got := 0
	for deadline := time.Now().Add(5 * time.Second); got < len(sent) || len(done) < len(descs); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d of %d received, %d of %d frames done", got, len(sent), len(done), len(descs))
		}
		if err := p.a.Kick(); err != nil {
			t.Fatal(err)
		}
		p.a.Complete()
		got = takeSent(t, p.b, sent, got)
	}
	seen := map[uint32]bool{}
	for _, f := range done {
		if f >= lent || seen[f] {
			t.Fatalf("lent frames done: %v", done)
		}
		seen[f] = true
	}
	if p.a.TxPending() != 0 || p.a.Pool().Free() != free {
		t.Fatalf("after the sends: %d pending, %d frames free of the pool (%d before)", p.a.TxPending(), p.a.Pool().Free(), free)
	}
}
