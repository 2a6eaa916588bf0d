package xdp_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/xdp"
)

func TestResolver(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	bed := testbed.New(t, testbed.Options{})
	r, err := xdp.NewResolver(bed.A.NS, bed.A.Index)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	hop, err := r.NextHop(bed.B.Addr)
	if err != nil || hop != bed.B.Addr {
		t.Fatalf("next hop of %v: %v, %v", bed.B.Addr, hop, err)
	}
	if _, err := r.NextHop(netip.MustParseAddr("198.19.255.1")); !errors.Is(err, xdp.ErrNoRoute) {
		t.Fatalf("next hop off the testbed's subnet: %v, want ErrNoRoute", err)
	}
	// The subnet's broadcast address has a route through the interface,
	// of type broadcast: never a next hop, so nothing is ever sent there.
	// The same goes for multicast and our own address. (The kernel routes
	// the network address as unicast: the provider refuses it by prefix.)
	for _, a := range []string{"198.18.0.255", "255.255.255.255", "224.0.0.1", "0.0.0.0", "127.0.0.1", bed.A.Addr.String()} {
		if hop, err := r.NextHop(netip.MustParseAddr(a)); !errors.Is(err, xdp.ErrNoRoute) {
			t.Errorf("next hop of %s: %v, %v; want ErrNoRoute", a, hop, err)
		}
	}
	if _, ok, err := r.Neighbour(bed.B.Addr); ok || err != nil {
		t.Fatalf("fresh namespace already knows %v (%v)", bed.B.Addr, err)
	}
	if err := r.Solicit(bed.B.Addr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		mac, ok, err := r.Neighbour(bed.B.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if mac != [6]byte(bed.B.MAC) {
				t.Fatalf("resolved %v to %x, want %v", bed.B.Addr, mac, bed.B.MAC)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the kernel did not resolve the neighbour after Solicit")
		}
		time.Sleep(time.Millisecond)
	}
}
