package provider

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// lendLink is a memnet link that lends its engine memory, as the AF_XDP
// link lends UMEM frames, in two regions, as of two queues: a connection's
// frames go out from region lport+rport mod 2. A datagram sent in place
// goes on the wire at once, but the link gives its buffer back only hold
// flushes later, as a kernel that completes late does. Meanwhile the
// engine must neither write the buffer nor reuse it: the link checks,
// when it gives the buffer back, that its bytes are those it sent. A
// buffer of the other region is sent as a copy, and so is every fifth,
// as the AF_XDP link copies a buffer whose flow goes out on another
// queue.
type lendLink struct {
	*memnet.Link
	t                 testing.TB
	mem               [2][]byte
	per, stride, head int
	hold              int
	flushes           int
	out               []lentSend
	done              func(i uint32)
	inPlace, notHere  int
	otherRegion       int // refused: from a buffer of the other region
	rtxHeld, dataSent int
	byRegion          [2]int // sent in place
}

type lentSend struct {
	i    uint32
	due  int
	seq  uint64
	snap []byte
}

func newLendLink(t testing.TB, l *memnet.Link, per, hold int) *lendLink {
	const head = 42 // the AF_XDP link's Ethernet, IPv4 and UDP headers
	stride := (head + l.MTU() + 63) &^ 63
	ll := &lendLink{Link: l, t: t, per: per, stride: stride, head: head, hold: hold}
	for r := range ll.mem {
		ll.mem[r] = make([]byte, per*stride)
	}
	return ll
}

func (l *lendLink) Lent() ([][]byte, int, int, int) {
	return l.mem[:], l.per, l.stride, l.head
}

func (l *lendLink) Region(peer netip.Addr, lport, rport uint16) int {
	return int(lport+rport) % 2
}

func (l *lendLink) SetLentDone(fn func(i uint32)) { l.done = fn }

// at is lent buffer i's datagram of n bytes.
func (l *lendLink) at(i uint32, n int) []byte {
	r, j := int(i)/l.per, int(i)%l.per
	o := j*l.stride + l.head
	return l.mem[r][o : o+n]
}

func (l *lendLink) SendLent(peer netip.Addr, i uint32, n int, ect bool) (bool, error) {
	b := l.at(i, n)
	var h wire.Header
	h.Decode(b)
	copied := false
	if int(i)/l.per != l.Region(peer, h.SrcPort, h.DstPort) {
		l.otherRegion++
		copied = true
	} else if i%5 == 4 {
		l.notHere++
		copied = true
	}
	if copied {
		if ect {
			return false, l.SendECT(peer, b)
		}
		return false, l.Send(peer, b)
	}
	for _, o := range l.out {
		if o.i == i {
			l.t.Errorf("buffer %d sent in place while the link still sends it", i)
		}
	}
	send := l.Link.Send
	if ect {
		send = l.Link.SendECT
	}
	if err := send(peer, b); err != nil {
		return false, err
	}
	l.out = append(l.out, lentSend{i: i, due: l.flushes + l.hold, seq: h.Seq, snap: bytes.Clone(b)})
	l.inPlace++
	l.byRegion[i/uint32(l.per)]++
	l.dataSent++
	return true, nil
}

// Send counts the data datagrams the engine copies, and among them the
// retransmissions of a segment whose buffer the link still holds.
func (l *lendLink) Send(peer netip.Addr, b []byte) error {
	l.countCopy(b)
	return l.Link.Send(peer, b)
}

// SendECT is Send for a frame marked ECT(0): data on a connection with
// ECN goes out this way.
func (l *lendLink) SendECT(peer netip.Addr, b []byte) error {
	l.countCopy(b)
	return l.Link.SendECT(peer, b)
}

func (l *lendLink) countCopy(b []byte) {
	var h wire.Header
	if _, err := h.Decode(b); err == nil && h.Op == wire.OpData {
		l.dataSent++
		for _, o := range l.out {
			if o.seq == h.Seq {
				l.rtxHeld++
			}
		}
	}
}

func (l *lendLink) Flush() error {
	err := l.Link.Flush()
	l.flushes++
	l.Reap()
	return err
}

func (l *lendLink) Reap() {
	k := 0
	for _, o := range l.out {
		if o.due > l.flushes {
			l.out[k] = o
			k++
			continue
		}
		if !bytes.Equal(l.at(o.i, len(o.snap)), o.snap) {
			l.t.Errorf("buffer %d (seq %d) written while the link sent from it", o.i, o.seq)
		}
		l.done(o.i)
	}
	l.out = l.out[:k]
}

// TestEngineSendsInPlace moves data both ways over several connections,
// under loss, duplication and reordering, through links that lend half
// the pool in two regions and give buffers back late. It checks what the
// link checks (nothing written or reused while lent), that segments went
// out in place from their connection's region, and as copies when
// retransmitted while still lent; and that every buffer comes back.
func TestEngineSendsInPlace(t *testing.T) {
	for _, mtu := range []int{memnet.DefaultMTU, 9000 - 28} {
		t.Run(fmt.Sprint(mtu), func(t *testing.T) {
			cfg := testEngineConfig()
			cfg.Buffers = max(cfg.Buffers*memnet.DefaultMTU/mtu, 128)
			v := &vnet{t: t, net: memnet.New(7)}
			v.net.SetClock(func() time.Duration { return time.Duration(v.now) })
			v.net.SetFaults(memnet.Faults{Loss: 0.03, Dup: 0.02, Reorder: 0.05, Delay: 10 * time.Microsecond})
			v.net.SetMTU(mtu)
			var lls []*lendLink
			for i := range 2 {
				ml, err := v.net.NewLink()
				if err != nil {
					t.Fatal(err)
				}
				ll := newLendLink(t, ml, cfg.Buffers/4, 3)
				e, err := newEngine(ll, cfg, [32]byte{byte(i)})
				if err != nil {
					t.Fatal(err)
				}
				if e.lender == nil || e.pool.nLent != cfg.Buffers/4*2 {
					t.Fatalf("the engine took %d lent buffers, want %d", e.pool.nLent, cfg.Buffers/4*2)
				}
				v.hosts = append(v.hosts, e)
				v.links = append(v.links, ml)
				lls = append(lls, ll)
			}
			// Four connections, one after the other, of random
			// ephemeral ports: both regions have some.
			l := v.listen(1, 80, 16)
			for k := range 4 {
				a := v.dial(0, 1, 80)
				v.run(time.Minute, func() bool { return len(l.ln.backlog) > 0 })
				b := v.hosts[1].accept(l)
				if a.state != stateEstablished || b == nil {
					t.Fatalf("connection %d: %v %v", k, a.state, a.err)
				}
				transfer(t, v, a, b, 1<<20, uint64(9+k), true)
			}
			// The last buffers come back with the flushes still due.
			for range 4 {
				for _, e := range v.hosts {
					e.flush()
				}
			}
			for i, e := range v.hosts {
				ll := lls[i]
				st := &e.st
				if len(ll.out) != 0 || e.pool.nLinked != 0 || e.pool.count(placeSending) != 0 {
					t.Fatalf("host %d: %d sends held, %d buffers linked, %d sending", i, len(ll.out), e.pool.nLinked, e.pool.count(placeSending))
				}
				if ll.inPlace == 0 || ll.notHere == 0 || ll.rtxHeld == 0 || st.inPlace.Load() != uint64(ll.inPlace) || ll.otherRegion > ll.inPlace/4 || ll.byRegion[0] == 0 || ll.byRegion[1] == 0 {
					t.Fatalf("host %d: %d sent in place (engine: %d; by region %v), %d refused, %d from the other region, %d retransmitted while held, of %d data; retransmits %d",
						i, ll.inPlace, st.inPlace.Load(), ll.byRegion, ll.notHere, ll.otherRegion, ll.rtxHeld, ll.dataSent, st.retransmits.Load())
				}
				t.Logf("host %d: %d of %d data datagrams in place (by region %v), %d refused, %d from the other region, %d retransmitted while held", i, ll.inPlace, ll.dataSent, ll.byRegion, ll.notHere, ll.otherRegion, ll.rtxHeld)
				checkPool(t, e)
			}
		})
	}
}

// TestVethSendsInPlace: over veth, at MTU 1500 and 9000, a link lends the
// provider its whole default pool by default, part of a larger one when
// told, none when told so; data moves byte-exact each way, every data
// segment from a lent buffer goes out in place (one queue: no other to
// go out on) but retransmissions the kernel still held, and every
// buffer and UMEM frame comes back.
func TestVethSendsInPlace(t *testing.T) {
	for _, c := range []struct {
		mtu, lend, buffers int
	}{{1500, 0, 0}, {9000, 0, 0}, {9000, 64, 0}, {1500, -1, 0}, {1500, 0, 9000}} {
		t.Run(fmt.Sprintf("mtu=%d/lend=%d/buffers=%d", c.mtu, c.lend, c.buffers), func(t *testing.T) {
			testutil.Privileged(t)
			bed := testbed.New(t, testbed.Options{MTU: c.mtu})
			var ps [2]*Provider
			for i, h := range []*testbed.Host{&bed.A, &bed.B} {
				l, err := xdplink.New(xdplink.Config{Netns: h.NS, Interface: h.If, LendBuffers: c.lend})
				if err != nil {
					t.Fatal(err)
				}
				p, err := Startup(Config{Link: l, Buffers: c.buffers})
				if err != nil {
					l.Close()
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := p.Cleanup(); err != nil {
						t.Errorf("cleanup: %v", err)
					}
					if st := p.Stats(); st.BuffersFree != st.Buffers {
						t.Errorf("after cleanup, %d of %d buffers free, %d sending", st.BuffersFree, st.Buffers, st.BuffersSending)
					}
				})
				ps[i] = p
			}
			st := ps[0].Stats()
			var wantLent int
			switch {
			case c.lend < 0:
			case c.lend > 0:
				wantLent = c.lend
			case c.buffers > 0:
				wantLent = defaultLent(st.MTU)
			default:
				wantLent = st.Buffers
			}
			if st.BuffersLent != wantLent || c.buffers > 0 && st.Buffers != c.buffers {
				t.Fatalf("%d buffers, %d of them lent; want %d lent", st.Buffers, st.BuffersLent, wantLent)
			}
			p := &vethPair{bed: bed, a: ps[0], b: ps[1], portB: 5000}
			echoBytes(t, p, 8<<20)
			for _, pr := range ps {
				deadline := time.Now().Add(2 * time.Second)
				for pr.Stats().BuffersHeld() > 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				st := pr.Stats()
				if st.BuffersHeld() != 0 {
					t.Fatalf("buffers held after the transfer: %+v", st)
				}
				switch {
				case wantLent == 0 && st.SentInPlace != 0,
					// Every first transmission goes out in place; a
					// retransmission whose buffer the kernel still
					// holds goes as a copy.
					wantLent == st.Buffers && st.SentInPlace < st.DataOut-st.Retransmits,
					wantLent > 0 && st.SentInPlace == 0:
					t.Fatalf("%d of %d data segments sent in place, %d of %d buffers lent", st.SentInPlace, st.DataOut, st.BuffersLent, st.Buffers)
				}
				t.Logf("%d of %d data segments sent in place; %d of %d buffers lent", st.SentInPlace, st.DataOut, st.BuffersLent, st.Buffers)
			}
		})
	}
}

// defaultLent is defaultBuffers for a Config of default buffer sizes:
// what the AF_XDP link lends when it is not told how many.
func defaultLent(mtu int) int {
	d := defaultEngineConfig()
	c := Config{SendBuffer: d.SendBuffer, RecvBuffer: d.RecvBuffer}
	return c.defaultBuffers(mtu)
}

// The AF_XDP link, which cannot import the provider, lends by default
// what the provider's default pool holds at its MTU.
func TestDefaultLendBuffers(t *testing.T) {
	for _, mtu := range []int{wire.HeaderLen + 64, 576, 1472, 3798, 8972, 9000, 64972, 65535} {
		if got, want := xdplink.DefaultLendBuffers(mtu), defaultLent(mtu); got != want {
			t.Errorf("MTU %d: the link lends %d by default, the provider's default pool is %d", mtu, got, want)
		}
	}
}
