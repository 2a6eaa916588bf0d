package provider

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// Both ends announce their largest datagram in the handshake and send
// segments of the smaller: a peer whose link holds less than ours gets
// only frames it can hold, whichever end connects, in both directions.
// Without the agreement the larger end's full segments are dropped on
// arrival (memnet.Stats.TooBig) and the transfer never completes.
func TestEngineMTUAgreement(t *testing.T) {
	const big, small = 9000 - 28, 1500 - 28
	for _, c := range []struct {
		name string
		mtus []int
	}{
		{"larger connects", []int{big, small}},
		{"smaller connects", []int{small, big}},
		{"equal", []int{big, big}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := newVNetMTU(t, 3, memnet.Faults{Delay: 10 * time.Microsecond}, testEngineConfig(), c.mtus...)
			a, b := v.pair()
			want := min(c.mtus[0], c.mtus[1]) - wire.HeaderLen
			if a.mss != want || b.mss != want || !a.announced || !b.announced {
				t.Fatalf("segment sizes %d (announced %v) and %d (%v), want %d", a.mss, a.announced, b.mss, b.announced, want)
			}
			transfer(t, v, a, b, 4<<20, 7, true)
			if st := v.net.Stats(); st.TooBig != 0 {
				t.Fatalf("%d datagrams longer than their receiver's MTU", st.TooBig)
			}
			checkPool(t, v.hosts[0])
			checkPool(t, v.hosts[1])
		})
	}
}

// A connector established by a data frame, its accept lost, knows nothing
// of the acceptor's receive path: it sends segments every sdx link holds
// until an accept tells it more.
func TestEngineMTUUnannounced(t *testing.T) {
	v := newVNetMTU(t, 5, memnet.Faults{}, testEngineConfig(), 9000-28, 9000-28)
	c := &endpoint{state: stateConnecting}
	v.hosts[0].established(c, &wire.Header{SrcConn: 1}, 0, 0)
	if c.mss != wire.MinPeerDatagram-wire.HeaderLen || c.announced {
		t.Fatalf("segment size %d without an announcement, want %d", c.mss, wire.MinPeerDatagram-wire.HeaderLen)
	}
	// Its rings hold a send buffer of the small segments.
	if len(c.snd.segs) < v.hosts[0].cfg.SendBuffer/c.mss {
		t.Fatalf("%d segment slots for %d-byte segments", len(c.snd.segs), c.mss)
	}
}

// A connect or accept whose announcement is below the smallest MTU a
// provider starts on is malformed: dropped and counted, not obeyed.
func TestEngineMTUBadAnnouncement(t *testing.T) {
	v := newVNetMTU(t, 9, memnet.Faults{}, testEngineConfig(), memnet.DefaultMTU, memnet.DefaultMTU)
	v.listen(1, 80, 4)
	e := v.hosts[1]
	h := wire.Header{Op: wire.OpConnect, SrcPort: 5000, DstPort: 80, SrcConn: 7, Token: 99, Window: 1 << 16}
	for _, p := range [][]byte{{0, 10}, {5}} {
		before := e.st.dropMalformed.Load()
		e.input(v.addr(0), wire.AppendDatagram(nil, &h, p))
		if e.st.dropMalformed.Load() != before+1 || len(e.children) != 0 {
			t.Fatalf("announcement %x: malformed %d->%d, %d connections", p, before, e.st.dropMalformed.Load(), len(e.children))
		}
	}
}

// When full-size frames vanish on the way (a hop with a smaller MTU, or a
// peer whose receive path holds less than it announced) while small ones
// pass, the connection fails with EMSGSIZE naming the size, instead of
// retransmitting for ever while keepalives keep it alive.
func TestEngineFramesTooBig(t *testing.T) {
	const hop = 1500 - 28
	v := newVNetMTU(t, 11, memnet.Faults{Delay: 10 * time.Microsecond}, testEngineConfig(), 9000-28, 9000-28)
	a, b := v.pair()
	v.net.SetFaults(memnet.Faults{Delay: 10 * time.Microsecond, Drop: func(_, _ netip.Addr, d []byte) bool { return len(d) > hop }})
	e := v.hosts[0]
	msg := make([]byte, 64<<10)
	if _, err := e.write(a, msg); err != nil {
		t.Fatal(err)
	}
	v.run(time.Minute, func() bool { return a.state == stateFailed })
	var fe *FrameSizeError
	if !errors.Is(a.err, syscall.EMSGSIZE) || !errors.As(a.err, &fe) || fe.Size != a.mss+wire.HeaderLen || fe.Peer != v.addr(1) {
		t.Fatalf("connection failed with %v, want EMSGSIZE for %d-byte frames to %v", a.err, a.mss+wire.HeaderLen, v.addr(1))
	}
	if got := e.st.tooBig.Load(); got != 1 {
		t.Fatalf("tooBig %d", got)
	}
	// Well before the dead-peer bound: the peer was alive all along.
	if d := time.Duration(v.now - a.lastHeard); d > time.Second {
		t.Fatalf("the peer was last heard %v before the failure", d)
	}
	t.Logf("failed after %v of virtual time: %v", time.Duration(v.now), a.err)
	// The peer learns it from the reset.
	v.run(time.Second, func() bool { return b.state == stateFailed })
	checkPool(t, e)
}

// Random loss, even heavy, does not pass for frames too big: lossy
// transfers that retransmit a lot complete, and no connection fails with
// EMSGSIZE.
func TestEngineLossIsNotTooBig(t *testing.T) {
	for _, p := range []float64{0.1, 0.3} {
		t.Run(fmt.Sprintf("loss=%v", p), func(t *testing.T) {
			v := newVNetMTU(t, 13, memnet.Faults{Loss: p, Delay: 10 * time.Microsecond}, testEngineConfig(), memnet.DefaultMTU, memnet.DefaultMTU)
			a, b := v.pair()
			transfer(t, v, a, b, 1<<20, 3, true)
			if n := v.hosts[0].st.tooBig.Load() + v.hosts[1].st.tooBig.Load(); n != 0 {
				t.Fatalf("%d connections failed as too big at %v loss", n, p)
			}
		})
	}
}

// Byte-exact transfers both ways at every datagram size from the IPv6
// minimum to a 65000-byte MTU's, under loss, duplication and reordering,
// between ends of equal and of unequal size: each size's buffers, segments
// and retransmissions carry the stream whole, and the pools are whole
// afterwards.
func TestEngineEveryDatagramSize(t *testing.T) {
	faults := memnet.Faults{Loss: 0.02, Dup: 0.02, Reorder: 0.05, Delay: 10 * time.Microsecond}
	sizes := []int{1280 - 28, memnet.DefaultMTU, 3798, 9000 - 28, 65000 - 28}
	for i, mtu := range sizes {
		peers := []int{mtu}
		if i > 0 {
			peers = append(peers, sizes[i-1]) // a peer holding less than we do
		}
		for _, peer := range peers {
			t.Run(fmt.Sprintf("%d-%d", mtu, peer), func(t *testing.T) {
				cfg := testEngineConfig()
				cfg.Buffers = max(cfg.Buffers*memnet.DefaultMTU/mtu, 64)
				v := newVNetMTU(t, uint64(20+i), faults, cfg, mtu, peer)
				a, b := v.pair()
				if want := min(mtu, peer) - wire.HeaderLen; a.mss != want || b.mss != want {
					t.Fatalf("segments of %d and %d bytes, want %d", a.mss, b.mss, want)
				}
				transfer(t, v, a, b, 2<<20, uint64(i+1), true)
				st := v.net.Stats()
				if st.TooBig != 0 || st.Lost == 0 || st.Duplicated == 0 || st.Reordered == 0 {
					t.Fatalf("network: %+v", st)
				}
				checkPool(t, v.hosts[0])
				checkPool(t, v.hosts[1])
			})
		}
	}
}
