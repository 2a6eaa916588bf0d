package neigh

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// fakeKernel routes every address of 198.18.0.0/24 directly and
// everything else through 198.18.0.1; it knows the neighbours in macs.
type fakeKernel struct {
	macs      map[netip.Addr][6]byte
	solicited []netip.Addr
	lookups   int
}

var subnet = netip.MustParsePrefix("198.18.0.0/24")

func (k *fakeKernel) NextHop(dst netip.Addr) (netip.Addr, error) {
	if !dst.Is4() {
		return netip.Addr{}, errors.New("no route")
	}
	if subnet.Contains(dst) {
		return dst, nil
	}
	return netip.MustParseAddr("198.18.0.1"), nil
}

func (k *fakeKernel) Neighbour(hop netip.Addr) ([6]byte, bool, error) {
	k.lookups++
	mac, ok := k.macs[hop]
	return mac, ok, nil
}

func (k *fakeKernel) Solicit(hop netip.Addr) error {
	k.solicited = append(k.solicited, hop)
	return nil
}

var (
	peer = netip.MustParseAddr("198.18.0.2")
	far  = netip.MustParseAddr("198.19.1.1")
	mac2 = [6]byte{2, 0, 0, 0, 0, 2}
	gw   = [6]byte{2, 0, 0, 0, 0, 1}
)

// A known neighbour resolves at once and is asked for again only after
// TTL; a peer behind a gateway takes the gateway's address.
func TestLookupKnown(t *testing.T) {
	k := &fakeKernel{macs: map[netip.Addr][6]byte{peer: mac2, netip.MustParseAddr("198.18.0.1"): gw}}
	c := New(k)
	if mac, err := c.Lookup(peer, 0); err != nil || mac != mac2 {
		t.Fatalf("Lookup: %x %v", mac, err)
	}
	if mac, err := c.Lookup(far, 0); err != nil || mac != gw {
		t.Fatalf("Lookup through the gateway: %x %v", mac, err)
	}
	n := k.lookups
	for range 10 {
		c.Lookup(peer, TTL-1)
		c.Lookup(far, TTL-1)
	}
	if k.lookups != n {
		t.Fatalf("%d kernel lookups within the TTL", k.lookups-n)
	}
	c.Lookup(peer, TTL)
	if k.lookups != n+1 {
		t.Fatalf("%d kernel lookups after the TTL, want 1", k.lookups-n)
	}
}

// A peer the kernel does not know is solicited once and reported as
// resolving; Poll reports it once the kernel knows it, or as failed after
// Wait, and a failed peer fails fast for a backoff that doubles up to
// FailMax.
func TestLookupResolving(t *testing.T) {
	k := &fakeKernel{macs: map[netip.Addr][6]byte{}}
	c := New(k)
	if _, err := c.Lookup(peer, 0); !errors.Is(err, ErrResolving) {
		t.Fatalf("first lookup: %v, want ErrResolving", err)
	}
	if _, err := c.Lookup(peer, 1); !errors.Is(err, ErrResolving) || len(k.solicited) != 1 || c.Resolving() != 1 {
		t.Fatalf("second lookup: %v, %d solicitations, %d resolving", err, len(k.solicited), c.Resolving())
	}
	var got []bool
	done := func(p netip.Addr, mac [6]byte, ok bool) {
		if p != peer || ok && mac != mac2 {
			t.Fatalf("done(%v, %x, %v)", p, mac, ok)
		}
		got = append(got, ok)
	}
	c.Poll(PollEvery/2, done)
	if len(got) != 0 || k.lookups != 1 {
		t.Fatalf("Poll before PollEvery: %v, %d lookups", got, k.lookups)
	}
	k.macs[peer] = mac2
	c.Poll(PollEvery, done)
	if len(got) != 1 || !got[0] || c.Resolving() != 0 {
		t.Fatalf("Poll once resolved: %v, %d resolving", got, c.Resolving())
	}
	if mac, err := c.Lookup(peer, PollEvery); err != nil || mac != mac2 {
		t.Fatalf("lookup after resolution: %x %v", mac, err)
	}

	absent := netip.MustParseAddr("198.18.0.99")
	now := time.Duration(0)
	for i, want := range []time.Duration{FailFirst, 2 * FailFirst, 4 * FailFirst, 8 * FailFirst, 16 * FailFirst, FailMax, FailMax} {
		got = got[:0]
		if _, err := c.Lookup(absent, now); !errors.Is(err, ErrResolving) {
			t.Fatalf("round %d: lookup %v, want ErrResolving", i, err)
		}
		c.Poll(now+Wait-1, func(netip.Addr, [6]byte, bool) { t.Fatal("failed before Wait") })
		c.Poll(now+Wait, func(_ netip.Addr, _ [6]byte, ok bool) { got = append(got, ok) })
		if len(got) != 1 || got[0] {
			t.Fatalf("round %d: Poll after Wait: %v, want one failure", i, got)
		}
		now += Wait
		if _, err := c.Lookup(absent, now+want-1); !errors.Is(err, ErrUnresolved) {
			t.Fatalf("round %d: lookup within the backoff %v: %v, want ErrUnresolved", i, want, err)
		}
		now += want
	}
}

// At most MaxResolving peers resolve at once; Refuse keeps peers from the
// kernel altogether.
func TestLookupLimits(t *testing.T) {
	k := &fakeKernel{macs: map[netip.Addr][6]byte{}}
	c := New(k)
	c.Refuse = func(a netip.Addr) bool { return a == netip.MustParseAddr("198.18.0.255") }
	for i := range MaxResolving {
		if _, err := c.Lookup(netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}), 0); !errors.Is(err, ErrResolving) {
			t.Fatalf("peer %d: %v", i, err)
		}
	}
	if _, err := c.Lookup(netip.MustParseAddr("198.18.0.200"), 0); !errors.Is(err, ErrUnresolved) {
		t.Fatalf("peer beyond MaxResolving: %v, want ErrUnresolved", err)
	}
	n := len(k.solicited)
	if _, err := c.Lookup(netip.MustParseAddr("198.18.0.255"), 0); !errors.Is(err, ErrRefused) || len(k.solicited) != n {
		t.Fatalf("refused peer: %v, %d solicitations", err, len(k.solicited)-n)
	}
	if _, err := c.Lookup(netip.IPv6Loopback(), 0); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("peer with no route: %v, want ErrNoRoute", err)
	}
}
