package memnet

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testutil"
)

func newPair(t testing.TB, seed uint64) (*Network, *Link, *Link) {
	t.Helper()
	n := New(seed)
	a, err := n.NewLink()
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.NewLink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return n, a, b
}

// drain receives everything deliverable at l and returns the payloads'
// first bytes.
func drain(l *Link) (got []byte, from []netip.Addr) {
	for l.Receive(64, func(peer netip.Addr, p []byte, _ [][]byte) {
		got = append(got, p[0])
		from = append(from, peer)
	}) > 0 {
	}
	return got, from
}

func TestMemLinkDelivers(t *testing.T) {
	n, a, b := newPair(t, 1)
	if a.LocalAddr() != netip.MustParseAddr("198.18.0.1") || b.LocalAddr() != netip.MustParseAddr("198.18.0.2") {
		t.Fatalf("addresses %v %v", a.LocalAddr(), b.LocalAddr())
	}
	if a.MTU() != DefaultMTU {
		t.Fatalf("mtu %d", a.MTU())
	}
	for i := range 10 {
		if err := a.Send(b.LocalAddr(), []byte{byte(i), 1, 2}); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := drain(b); len(got) != 0 {
		t.Fatalf("delivered before Flush: %v", got)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	got, from := drain(b)
	if len(got) != 10 {
		t.Fatalf("got %d datagrams, want 10", len(got))
	}
	for i := range got {
		if got[i] != byte(i) || from[i] != a.LocalAddr() {
			t.Fatalf("datagram %d: %d from %v", i, got[i], from[i])
		}
	}
	if total, free := n.Buffers(); total != free {
		t.Fatalf("buffers: %d total, %d free", total, free)
	}
}

func TestMemLinkErrors(t *testing.T) {
	_, a, b := newPair(t, 1)
	if err := a.Send(b.LocalAddr(), make([]byte, a.MTU()+1)); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("oversize send: %v", err)
	}
	if err := a.Send(netip.AddrFrom4([4]byte{10, 0, 0, 1}) /* outside Prefix; nothing is sent */, []byte{1}); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("send outside the prefix: %v", err)
	}
	for i := range DefaultTxSlots {
		if err := a.Send(b.LocalAddr(), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Send(b.LocalAddr(), []byte{0}); !errors.Is(err, syscall.ENOBUFS) {
		t.Errorf("send past the tx slots: %v", err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(b.LocalAddr(), []byte{0}); err != nil {
		t.Errorf("send after flush: %v", err)
	}
	a.SetDown(true)
	if err := a.Flush(); !errors.Is(err, syscall.ENETDOWN) {
		t.Errorf("flush while down: %v", err)
	}
	if err := a.Send(b.LocalAddr(), []byte{0}); !errors.Is(err, syscall.ENETDOWN) {
		t.Errorf("send while down: %v", err)
	}
	a.SetDown(false)
	if err := a.Flush(); err != nil {
		t.Errorf("flush after up: %v", err)
	}
}

func TestMemLinkFaultRates(t *testing.T) {
	const N = 20000
	run := func(seed uint64) (Stats, []byte) {
		n, a, b := newPair(t, seed)
		var now time.Duration
		n.SetClock(func() time.Duration { return now })
		n.SetFaults(Faults{Loss: 0.05, Dup: 0.05, Reorder: 0.05})
		var got []byte
		for i := range N {
			a.Send(b.LocalAddr(), []byte{byte(i)})
			if i%100 == 99 {
				a.Flush()
				now += 50 * time.Microsecond
				g, _ := drain(b)
				got = append(got, g...)
			}
		}
		now += time.Second
		g, _ := drain(b)
		return n.Stats(), append(got, g...)
	}
	s, got := run(7)
	near := func(name string, v uint64) {
		if v < N*4/100 || v > N*6/100 {
			t.Errorf("%s: %d of %d, want about 5%%", name, v, N)
		}
	}
	near("lost", s.Lost)
	near("duplicated", s.Duplicated)
	near("reordered", s.Reordered)
	if want := s.Sent - s.Lost + s.Duplicated; uint64(len(got)) != want || s.Delivered != want {
		t.Errorf("delivered %d (counted %d), want %d", len(got), s.Delivered, want)
	}
	inversions := 0
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			inversions++
		}
	}
	if inversions == 0 {
		t.Error("no reordering seen")
	}
	s2, got2 := run(7)
	if s2 != s || string(got2) != string(got) {
		t.Error("same seed, different faults")
	}
	if s3, _ := run(8); s3 == s {
		t.Error("different seeds, same faults")
	}
}

func TestMemLinkDelayVirtualClock(t *testing.T) {
	n, a, b := newPair(t, 1)
	var now time.Duration
	n.SetClock(func() time.Duration { return now })
	n.SetFaults(Faults{Delay: 100 * time.Microsecond})
	a.Send(b.LocalAddr(), []byte{1})
	a.Flush()
	if got, _ := drain(b); len(got) != 0 {
		t.Fatal("delivered before its delay")
	}
	if at, ok := n.NextDelivery(); !ok || at != 100*time.Microsecond {
		t.Fatalf("next delivery %v %v", at, ok)
	}
	if err := b.Wait(time.Hour); err != nil { // virtual: returns at once
		t.Fatal(err)
	}
	now = 100 * time.Microsecond
	if got, _ := drain(b); len(got) != 1 {
		t.Fatal("not delivered after its delay")
	}
}

func TestMemLinkDropFilterPartitionDown(t *testing.T) {
	n, a, b := newPair(t, 1)
	n.SetFaults(Faults{Drop: func(from, to netip.Addr, d []byte) bool { return d[0] == 9 }})
	for _, v := range []byte{1, 9, 2} {
		a.Send(b.LocalAddr(), []byte{v})
	}
	a.Flush()
	if got, _ := drain(b); string(got) != "\x01\x02" {
		t.Fatalf("filter: got %v", got)
	}
	n.Partition(a.LocalAddr(), b.LocalAddr(), true)
	a.Send(b.LocalAddr(), []byte{3})
	b.Send(a.LocalAddr(), []byte{3})
	if a.Flush() != nil || b.Flush() != nil {
		t.Fatal("flush across a partition failed")
	}
	if g1, _ := drain(a); len(g1) != 0 {
		t.Fatal("delivered across a partition")
	}
	if g2, _ := drain(b); len(g2) != 0 {
		t.Fatal("delivered across a partition")
	}
	n.Partition(a.LocalAddr(), b.LocalAddr(), false)
	b.SetDown(true)
	a.Send(b.LocalAddr(), []byte{4})
	a.Flush()
	b.SetDown(false)
	if got, _ := drain(b); len(got) != 0 {
		t.Fatal("a down host received")
	}
	if s := n.Stats(); s.Filtered != 1 || s.Unreachable != 3 {
		t.Fatalf("stats %+v", s)
	}
	if total, free := n.Buffers(); total != free {
		t.Fatalf("buffers: %d total, %d free", total, free)
	}
}

func TestMemLinkWaitWake(t *testing.T) {
	testutil.CheckGoroutines(t)
	_, a, b := newPair(t, 1)
	start := time.Now()
	if err := b.Wait(5 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 5*time.Millisecond {
		t.Fatalf("Wait returned after %v, before its timeout", d)
	}
	go func() { time.Sleep(time.Millisecond); b.Wake() }()
	start = time.Now()
	b.Wait(10 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatal("Wake did not end Wait")
	}
	sent := make(chan struct{})
	go func() { time.Sleep(time.Millisecond); a.Send(b.LocalAddr(), []byte{1}); a.Flush(); close(sent) }()
	start = time.Now()
	b.Wait(10 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatal("an arriving datagram did not end Wait")
	}
	<-sent
	b.Close()
	if err := b.Wait(time.Second); !errors.Is(err, syscall.ENETDOWN) {
		t.Fatalf("Wait on a closed link: %v", err)
	}
}

// The bottleneck: datagrams to a host leave its queue at Rate, one that
// finds QueueBytes queued is dropped, and an ECN-capable one that finds
// MarkBytes queued arrives marked CE (ReceivedCE inside Receive's fn);
// one sent with Send is never marked.
func TestMemBottleneck(t *testing.T) {
	n, a, b := newPair(t, 1)
	var now time.Duration
	n.SetClock(func() time.Duration { return now })
	// 1000-byte datagrams at 1 MB/s: 1 ms each; 5000 B of queue, marks
	// from 2000 B on.
	n.SetFaults(Faults{Rate: 1e6, QueueBytes: 5000, MarkBytes: 2000})
	payload := make([]byte, 1000)
	for i := range 8 {
		payload[0] = byte(i)
		send := a.SendECT
		if i == 3 {
			send = a.Send // not ECN-capable: never marked
		}
		if err := send(b.LocalAddr(), payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	st := n.Stats()
	// Queued before each: 0, 1000, ..., 4000 B; the sixth on would make
	// it more than 5000.
	if st.QueueDrops != 3 || st.Marked != 2 {
		t.Fatalf("%d dropped, %d marked; want 3 and 2 (the 3rd and 5th: the 4th was not ECN-capable)", st.QueueDrops, st.Marked)
	}
	var ce []bool
	recv := func() {
		b.Receive(64, func(_ netip.Addr, p []byte, _ [][]byte) { ce = append(ce, b.ReceivedCE()) })
	}
	now = 999 * time.Microsecond
	if recv(); len(ce) != 0 {
		t.Fatalf("%d delivered before the first left the queue", len(ce))
	}
	now = 5 * time.Millisecond
	recv()
	if want := []bool{false, false, true, false, true}; len(ce) != len(want) || ce[2] != want[2] || ce[3] || !ce[4] || ce[0] || ce[1] {
		t.Fatalf("CE marks %v, want %v", ce, want)
	}
	if b.ReceivedCE() {
		t.Fatal("ReceivedCE outside Receive")
	}
}

// TestMemLinkHold: Hold keeps a datagram past Receive's fn, up to
// HoldCap, and only from inside fn; Release gives it back to the network
// with the next Receive, or at once after Close, which reports what is
// still held.
func TestMemLinkHold(t *testing.T) {
	n, a, b := newPair(t, 1)
	b.SetHoldCap(2)
	if hs := b.Hold(nil); len(hs) != 0 {
		t.Fatalf("Hold outside fn: %v", hs)
	}
	for i := range 3 {
		a.Send(b.LocalAddr(), []byte{byte(i), 'x'})
	}
	a.Flush()
	var hs []uint32
	b.Receive(10, func(_ netip.Addr, p []byte, _ [][]byte) { hs = b.Hold(hs) })
	if len(hs) != 2 || b.Held() != 2 {
		t.Fatalf("held %v (%d) at cap 2", hs, b.Held())
	}
	for i, h := range hs {
		if d := b.Data(h); len(d) != 2 || d[0] != byte(i) {
			t.Fatalf("held datagram %d: %v", i, d)
		}
	}
	if total, free := n.Buffers(); total-free != 2 {
		t.Fatalf("%d of %d buffers in use; want the 2 held", total-free, total)
	}
	b.Release(hs[0])
	b.Receive(10, func(netip.Addr, []byte, [][]byte) {})
	if total, free := n.Buffers(); total-free != 1 || b.Held() != 1 {
		t.Fatalf("after a release: %d of %d buffers in use, %d held", total-free, total, b.Held())
	}
	if err := b.Close(); err == nil || !strings.Contains(err.Error(), "1 datagrams held") {
		t.Fatalf("Close with one held: %v", err)
	}
	b.Release(hs[1]) // after Close, straight back to the network
	if total, free := n.Buffers(); total != free {
		t.Fatalf("after Close and the last release: %d of %d buffers free", free, total)
	}
}
