package xdplink

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestShardOfSymmetric: both ends of a flow name the same shard, and
// flows spread evenly over the shards.
func TestShardOfSymmetric(t *testing.T) {
	a := netip.MustParseAddr("198.18.0.1")
	b := netip.MustParseAddr("198.18.0.2")
	for _, n := range []int{1, 2, 3, 8} {
		count := make([]int, n)
		for lport := uint16(49152); lport < 49152+4096; lport++ {
			x, y := netip.AddrPortFrom(a, lport), netip.AddrPortFrom(b, 8080)
			s := ShardOf(x, y, n)
			if r := ShardOf(y, x, n); r != s {
				t.Fatalf("n=%d: %v→%v is shard %d, %v→%v shard %d", n, x, y, s, y, x, r)
			}
			if s < 0 || s >= n {
				t.Fatalf("n=%d: shard %d", n, s)
			}
			count[s]++
		}
		for i, c := range count {
			if want := 4096 / n; c < want*8/10 || c > want*12/10 {
				t.Errorf("n=%d: shard %d has %d of 4096 flows, want about %d: %v", n, i, c, want, count)
			}
		}
	}
}

// TestInbox: datagrams come out in order, whole (their pieces joined),
// with their peer and marks; a full inbox refuses, and takes again once
// drained.
func TestInbox(t *testing.T) {
	in := newInbox(100)
	if len(in.slots) != inboxMax {
		t.Fatalf("%d slots for 100-byte datagrams, want %d", len(in.slots), inboxMax)
	}
	peer := netip.MustParseAddr("198.18.0.9")
	for i := range inboxMax {
		if !in.put(peer, []byte{byte(i), 1}, [][]byte{{2, 3}, {4}}, uint8(i%4), i%2 == 1) {
			t.Fatalf("put %d refused", i)
		}
	}
	if in.put(peer, []byte{0}, nil, 0, false) {
		t.Fatal("a full inbox took another datagram")
	}
	for i := range inboxMax {
		d, ok := in.peek()
		if !ok {
			t.Fatalf("peek %d: empty", i)
		}
		if got, want := in.data(d), []byte{byte(i), 1, 2, 3, 4}; !bytes.Equal(got, want) {
			t.Fatalf("datagram %d: %v, want %v", i, got, want)
		}
		if d.peer != peer || d.ecn != uint8(i%4) || d.icmp != (i%2 == 1) {
			t.Fatalf("datagram %d: %+v", i, d)
		}
		in.pop()
	}
	if in.pending() {
		t.Fatal("a drained inbox is pending")
	}
	if !in.put(peer, []byte{7}, nil, 0, false) {
		t.Fatal("a drained inbox refused")
	}
	// A datagram longer than a slot is cut to it, not spilled into the
	// next (the engine drops it on its checksum).
	big := newInbox(16)
	big.put(peer, bytes.Repeat([]byte{1}, big.size+8), nil, 0, false)
	big.put(peer, []byte{2}, nil, 0, false)
	d, _ := big.peek()
	if n := len(big.data(d)); n != big.size {
		t.Errorf("a %d-byte datagram in %d-byte slots came out %d bytes", big.size+8, big.size, n)
	}
	big.pop()
	if d, _ := big.peek(); !bytes.Equal(big.data(d), []byte{2}) {
		t.Errorf("the next datagram came out %v", big.data(d))
	}
}

// TestInboxAllocs: handing a frame to another shard allocates nothing.
func TestInboxAllocs(t *testing.T) {
	in := newInbox(1500)
	peer := netip.MustParseAddr("198.18.0.9")
	payload, more := make([]byte, 1000), [][]byte{make([]byte, 400)}
	if n := testing.AllocsPerRun(1000, func() {
		in.put(peer, payload, more, 0, false)
		d, _ := in.peek()
		_ = in.data(d)
		in.pop()
	}); n != 0 {
		t.Errorf("%.1f allocations per frame handed over", n)
	}
}
