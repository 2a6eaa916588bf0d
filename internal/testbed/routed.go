package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"

	"github.com/sdx-project/sdx/internal/sys"
)

// Routed is two hosts on two subnets with a kernel router between them:
// each reaches the other through its route's next hop, the router, which
// forwards in its kernel (no XDP there).
//
//	 netns A                 netns R (router, ip_forward=1)          netns B
//	+-----------------+     +------------------------------+     +-----------------+
//	| "a" 198.18.X.1  |=====| "ra" .X.254      "rb" .Y.254 |=====| "b" 198.18.Y.1  |
//	| default via .254|     +------------------------------+     | default via .254|
//	+-----------------+                                          +-----------------+
//
// with Y = X+1, both /24 in 198.18.0.0/15. Names are unique per process;
// Close removes every namespace, also after a failure.
type Routed struct {
	A, B   Host
	RA, RB Host // the router's interfaces, with addresses
	R      string
	closed atomic.Bool
}

var routedSeq atomic.Uint32

// CreateRouted builds a routed testbed on subnets 198.18.subnet.0/24 and
// 198.18.subnet+1.0/24. The caller must Close it.
func CreateRouted(subnet uint8) (_ *Routed, err error) {
	sweepOnce.Do(Sweep)
	if subnet == 255 {
		return nil, fmt.Errorf("routed testbed: subnet %d has no next", subnet)
	}
	base := fmt.Sprintf("sdx-%d-rt%d", os.Getpid(), routedSeq.Add(1))
	addr := func(net, host byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, net, host}) }
	r := &Routed{
		A:  Host{NS: base + "-a", If: "a", Addr: addr(subnet, 1)},
		B:  Host{NS: base + "-b", If: "b", Addr: addr(subnet+1, 1)},
		R:  base + "-r",
		RA: Host{NS: base + "-r", If: "ra", Addr: addr(subnet, 254)},
		RB: Host{NS: base + "-r", If: "rb", Addr: addr(subnet+1, 254)},
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	cmds := [][]string{
		{"netns", "add", r.R},
		{"-n", r.R, "link", "set", "dev", "lo", "up"},
	}
	for _, p := range []struct{ end, port *Host }{{&r.A, &r.RA}, {&r.B, &r.RB}} {
		cmds = append(cmds,
			[]string{"netns", "add", p.end.NS},
			[]string{"-n", r.R, "link", "add", "name", p.port.If, "type", "veth", "peer", "name", p.end.If, "netns", p.end.NS},
			[]string{"-n", r.R, "addr", "add", p.port.Addr.String() + "/24", "dev", p.port.If},
			[]string{"-n", r.R, "link", "set", "dev", p.port.If, "up"},
			[]string{"-n", p.end.NS, "link", "set", "lo", "up"},
			[]string{"-n", p.end.NS, "addr", "add", p.end.Addr.String() + "/24", "dev", p.end.If},
			[]string{"-n", p.end.NS, "link", "set", "dev", p.end.If, "up"},
			[]string{"-n", p.end.NS, "route", "add", "198.18.0.0/15", "via", p.port.Addr.String()},
		)
	}
	if err := ipAll(cmds); err != nil {
		return nil, fmt.Errorf("routed testbed: %w", err)
	}
	if err := run("ip", "netns", "exec", r.R, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return nil, fmt.Errorf("routed testbed: %w", err)
	}
	if err := learn(&r.A, &r.B, &r.RA, &r.RB); err != nil {
		return nil, fmt.Errorf("routed testbed: %w", err)
	}
	return r, nil
}

// NewRouted builds a routed testbed for a test and removes it when the
// test ends.
func NewRouted(t testing.TB, subnet uint8) *Routed {
	t.Helper()
	return forTest(t, "routed testbed", func() (*Routed, error) { return CreateRouted(subnet) })
}

// Close removes every namespace of the testbed. It is idempotent.
func (r *Routed) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, ns := range []string{r.A.NS, r.B.NS, r.R} {
		if sys.NetnsExists(ns) {
			errs = append(errs, IP("netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}
