// Package testbed builds the hosts that sdx's tests, benchmarks and demo run
// on: two network namespaces joined by a veth pair.
//
//	 netns A (sdx-<pid>-<n>-a)            netns B (sdx-<pid>-<n>-b)
//	+-------------------------+          +-------------------------+
//	| veth "a"  198.18.0.1/24 |==========| veth "b"  198.18.0.2/24 |
//	+-------------------------+          +-------------------------+
//
// Both ends live inside namespaces the testbed created; addresses come only
// from 198.18.0.0/15, the range set aside for network benchmarks. Names are
// unique per process, and Close removes everything, also after a failure.
package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sdx-project/sdx/internal/sys"
)

// Host is one end of the testbed.
type Host struct {
	NS    string           // namespace name, under /run/netns
	If    string           // interface name inside NS
	Index int              // interface index inside NS
	Addr  netip.Addr       // IPv4 address, in 198.18.0.0/15
	MAC   net.HardwareAddr // interface MAC
}

// Do runs fn on a locked OS thread inside the host's namespace.
func (h *Host) Do(fn func() error) error { return sys.InNetns(h.NS, fn) }

// Bed is a pair of hosts joined by a veth pair.
type Bed struct {
	A, B   Host
	Prefix netip.Prefix
	closed atomic.Bool
}

// Options tune a testbed; the zero value is the default topology above.
type Options struct {
	// Subnet is the third octet of 198.18.X.0/24 (default 0).
	Subnet uint8
	// MTU of both veth ends (default 1500). Native XDP on veth above about
	// 3.5 KB needs a frags-aware program (bpf's programs are, on Linux
	// 5.18 and later); a plain one falls back to generic XDP.
	MTU int
	// Queues is the number of rx and tx queues of each end (default 1).
	// veth keeps the queue across the pair: a frame sent from AF_XDP
	// queue q arrives on the peer's rx queue q (xdp's TestVethQueueToQueue).
	Queues int
}

var (
	seq       atomic.Uint32
	sweepOnce sync.Once
)

// Sweep removes the namespaces of testbeds whose process is gone: a test
// binary that panics or is killed cannot run its cleanups, so the next
// testbed created on the machine removes what it left. Namespaces of live
// processes are left alone.
func Sweep() {
	ents, err := os.ReadDir(sys.NetnsDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, ok := ownerPID(e.Name())
		if !ok || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			IP("netns", "del", e.Name())
		}
	}
}

// ownerPID returns the PID in a testbed namespace name, sdx-<pid>-<n>-...
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "sdx-")
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(num)
	return pid, err == nil && pid > 0
}

// Create builds a testbed. The caller must Close it.
func Create(o Options) (_ *Bed, err error) {
	sweepOnce.Do(Sweep)
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.Queues == 0 {
		o.Queues = 1
	}
	n := seq.Add(1)
	base := fmt.Sprintf("sdx-%d-%d", os.Getpid(), n)
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, o.Subnet, 0}), 24)
	b := &Bed{
		A:      Host{NS: base + "-a", If: "a", Addr: netip.AddrFrom4([4]byte{198, 18, o.Subnet, 1})},
		B:      Host{NS: base + "-b", If: "b", Addr: netip.AddrFrom4([4]byte{198, 18, o.Subnet, 2})},
		Prefix: p,
	}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	q := fmt.Sprint(o.Queues)
	cmds := [][]string{
		{"netns", "add", b.A.NS},
		{"netns", "add", b.B.NS},
		{"-n", b.A.NS, "link", "add", "name", b.A.If, "numtxqueues", q, "numrxqueues", q, "type", "veth",
			"peer", "name", b.B.If, "netns", b.B.NS, "numtxqueues", q, "numrxqueues", q},
	}
	for _, h := range []*Host{&b.A, &b.B} {
		cmds = append(cmds,
			[]string{"-n", h.NS, "link", "set", "lo", "up"},
			[]string{"-n", h.NS, "link", "set", "dev", h.If, "mtu", fmt.Sprint(o.MTU)},
			[]string{"-n", h.NS, "addr", "add", fmt.Sprintf("%s/%d", h.Addr, p.Bits()), "dev", h.If},
			[]string{"-n", h.NS, "link", "set", "dev", h.If, "up"},
		)
	}
	if err := ipAll(cmds); err != nil {
		return nil, err
	}
	if err := learn(&b.A, &b.B); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	return b, nil
}

// ipAll runs ip(8) with each of cmds in turn, stopping at the first error.
func ipAll(cmds [][]string) error {
	for _, c := range cmds {
		if err := IP(c...); err != nil {
			return err
		}
	}
	return nil
}

// learn fills in each host's interface index and MAC, read inside its
// namespace.
func learn(hosts ...*Host) error {
	for _, h := range hosts {
		if err := h.Do(func() error {
			ifi, err := net.InterfaceByName(h.If)
			if err != nil {
				return err
			}
			h.Index, h.MAC = ifi.Index, ifi.HardwareAddr
			return nil
		}); err != nil {
			return fmt.Errorf("%s: %w", h.NS, err)
		}
	}
	return nil
}

// forTest builds a testbed with create for a test, failing it with what's
// error, and closes the testbed when the test ends.
func forTest[T interface{ Close() error }](t testing.TB, what string, create func() (T, error)) T {
	t.Helper()
	b, err := create()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("%s close: %v", what, err)
		}
	})
	return b
}

// New builds a testbed for a test and removes it when the test ends.
func New(t testing.TB, o Options) *Bed {
	t.Helper()
	return forTest(t, "testbed", func() (*Bed, error) { return Create(o) })
}

// Close removes both namespaces (and with them the veth pair). It is
// idempotent.
func (b *Bed) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, ns := range []string{b.A.NS, b.B.NS} {
		if sys.NetnsExists(ns) {
			errs = append(errs, IP("netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}

// Neighbours installs permanent neighbour entries on both hosts, so frames
// built in user space find each other without waiting for ARP.
func (b *Bed) Neighbours() error {
	if err := IP("-n", b.A.NS, "neigh", "replace", b.B.Addr.String(), "lladdr", b.B.MAC.String(), "dev", b.A.If, "nud", "permanent"); err != nil {
		return err
	}
	return IP("-n", b.B.NS, "neigh", "replace", b.A.Addr.String(), "lladdr", b.A.MAC.String(), "dev", b.B.If, "nud", "permanent")
}

// IP runs the ip(8) command with args.
func IP(args ...string) error { return run("ip", args...) }

// TC runs the tc(8) command with args.
func TC(args ...string) error { return run("tc", args...) }

func run(name string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
