package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
)

// Hop is the testbed with a hop in the middle, a bridge in a namespace of
// its own, where the loss injector (bpf's sdx_fault) runs on the bridge
// ports and where a third host can join the segment:
//
//	 netns A             netns R (the hop)                      netns B
//	+-----------+       +------------------------------+       +-----------+
//	| veth "a"  |=======| "ra" -- bridge "hop" -- "rb" |=======| veth "b"  |
//	| .1/24     |       |             |                |       | .2/24     |
//	+-----------+       |            "rc"              |       +-----------+
//	                    +-------------||---------------+
//	                    netns C  | veth "c" .3/24 |   (HopOptions.Third)
//
// in 198.18.X.0/24. The bridge makes the hop invisible: A, B (and C)
// share a subnet and see each other's MACs, as on the plain testbed. A
// program attached to "ra" sees what A sends, to "rb" what B sends, to
// "rc" what C sends; the bridge forwards what they pass. Names are unique
// per process; Close removes everything, also after a failure.
type Hop struct {
	A, B   Host
	C      Host // the third host; zero without HopOptions.Third
	RA, RB Host // the hop's ports facing A and B (no address)
	RC     Host // the hop's port facing C; zero without HopOptions.Third
	R      string
	Prefix netip.Prefix
	MTU    int // of every veth end and the bridge
	closed atomic.Bool
}

// HopOptions tune a hop testbed.
type HopOptions struct {
	// Subnet is the third octet of 198.18.X.0/24 (default 0).
	Subnet uint8
	// Third adds host C on a third bridge port.
	Third bool
	// MTU of every veth end and of the bridge (default 1500).
	MTU int
}

var hopSeq atomic.Uint32

// CreateHop builds a hop testbed. The caller must Close it.
func CreateHop(o HopOptions) (_ *Hop, err error) {
	sweepOnce.Do(Sweep)
	base := fmt.Sprintf("sdx-%d-hop%d", os.Getpid(), hopSeq.Add(1))
	addr := func(host byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, o.Subnet, host}) }
	h := &Hop{
		A:      Host{NS: base + "-a", If: "a", Addr: addr(1)},
		B:      Host{NS: base + "-b", If: "b", Addr: addr(2)},
		R:      base + "-r",
		Prefix: netip.PrefixFrom(addr(0), 24),
		MTU:    1500,
	}
	if o.MTU != 0 {
		h.MTU = o.MTU
	}
	h.RA = Host{NS: h.R, If: "ra"}
	h.RB = Host{NS: h.R, If: "rb"}
	ends := []*Host{&h.A, &h.B}
	ports := []*Host{&h.RA, &h.RB}
	if o.Third {
		h.C = Host{NS: base + "-c", If: "c", Addr: addr(3)}
		h.RC = Host{NS: h.R, If: "rc"}
		ends = append(ends, &h.C)
		ports = append(ports, &h.RC)
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	cmds := [][]string{
		{"netns", "add", h.R},
		{"-n", h.R, "link", "add", "name", "hop", "type", "bridge"},
		{"-n", h.R, "link", "set", "dev", "lo", "up"},
		{"-n", h.R, "link", "set", "dev", "hop", "up"},
	}
	for i, e := range ends {
		p := ports[i]
		cmds = append(cmds,
			[]string{"netns", "add", e.NS},
			[]string{"-n", h.R, "link", "add", "name", p.If, "type", "veth", "peer", "name", e.If, "netns", e.NS},
			[]string{"-n", h.R, "link", "set", "dev", p.If, "master", "hop"},
			[]string{"-n", h.R, "link", "set", "dev", p.If, "up"},
			[]string{"-n", e.NS, "link", "set", "lo", "up"},
			[]string{"-n", e.NS, "addr", "add", e.Addr.String() + "/24", "dev", e.If},
			[]string{"-n", e.NS, "link", "set", "dev", e.If, "up"},
		)
	}
	if o.MTU != 0 {
		for i, e := range ends {
			cmds = append(cmds,
				[]string{"-n", e.NS, "link", "set", "dev", e.If, "mtu", fmt.Sprint(o.MTU)},
				[]string{"-n", h.R, "link", "set", "dev", ports[i].If, "mtu", fmt.Sprint(o.MTU)})
		}
		cmds = append(cmds, []string{"-n", h.R, "link", "set", "dev", "hop", "mtu", fmt.Sprint(o.MTU)})
	}
	if err := ipAll(cmds); err != nil {
		return nil, fmt.Errorf("hop testbed: %w", err)
	}
	if err := learn(append(ends, ports...)...); err != nil {
		return nil, fmt.Errorf("hop testbed: %w", err)
	}
	return h, nil
}

// NewHop builds a hop testbed for a test and removes it when the test
// ends.
func NewHop(t testing.TB, o HopOptions) *Hop {
	t.Helper()
	return forTest(t, "hop testbed", func() (*Hop, error) { return CreateHop(o) })
}

// SetHub turns MAC learning off (on true) or back on for every bridge
// port. Without learning the bridge floods every frame to every other
// port, like a hub: C then sees what A and B send each other, and a frame
// C sends with another host's source MAC does not move that host's
// forwarding entry.
func (h *Hop) SetHub(on bool) error {
	learning := "on"
	if on {
		learning = "off"
	}
	for _, p := range []*Host{&h.RA, &h.RB, &h.RC} {
		if p.If == "" {
			continue
		}
		if err := IP("-n", h.R, "link", "set", "dev", p.If, "type", "bridge_slave", "learning", learning); err != nil {
			return err
		}
	}
	if on {
		return IP("-n", h.R, "link", "set", "dev", "hop", "type", "bridge", "fdb_flush")
	}
	return nil
}

// DelayClass is the handle (1:2) of the slow class AddDelayClass builds:
// a frame whose skb->priority is DelayClass waits in it.
const DelayClass = 1<<16 | 2

// AddDelayClass gives the hop's port p (RA, RB or RC) an htb root qdisc
// whose one leaf class, DelayClass, sends at a rate that holds a frame of
// the hop's MTU back for about delay; every other frame takes htb's direct
// queue, unshaped, and overtakes the frames waiting in the class. htb
// picks the class by skb->priority (htb_classify), which bpf's
// sdx_disorder sets, at the port's tcx egress, for the frames it delays.
// Frames that arrive faster than the class's rate queue behind each other,
// up to 1000, and the next is dropped. The qdisc goes with the namespace.
func (h *Hop) AddDelayClass(p *Host, delay time.Duration) error {
	if p.NS != h.R || delay <= 0 {
		return fmt.Errorf("hop delay class: %s in %s, delay %v: want a port of the hop and a positive delay", p.If, p.NS, delay)
	}
	bits := int64(h.MTU+14) * 8
	rate := max(bits*int64(time.Second)/int64(delay), 8000)
	for _, c := range [][]string{
		// No default class: whatever priority names no class goes direct.
		// veth's queue length is 0, which would cap the direct queue at 2.
		{"qdisc", "add", "dev", p.If, "root", "handle", "1:", "htb", "direct_qlen", "1000"},
		// A burst of one small frame: a full one always waits.
		{"class", "add", "dev", p.If, "parent", "1:", "classid", "1:2", "htb",
			"rate", fmt.Sprintf("%dbit", rate), "burst", "64b", "cburst", "64b"},
		{"qdisc", "add", "dev", p.If, "parent", "1:2", "handle", "2:", "pfifo", "limit", "1000"},
	} {
		if err := TC(append([]string{"-n", h.R}, c...)...); err != nil {
			return fmt.Errorf("hop delay class: %w", err)
		}
	}
	return nil
}

// Close removes every namespace of the testbed (and with them the veth
// pairs and the bridge). It is idempotent.
func (h *Hop) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, ns := range []string{h.A.NS, h.B.NS, h.C.NS, h.R} {
		if ns != "" && sys.NetnsExists(ns) {
			errs = append(errs, IP("netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}
