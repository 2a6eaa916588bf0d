package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/sdx-project/sdx/internal/sys"
)

// Shared is N sender hosts and one receiver on one switch: a bridge in a
// namespace of its own, whose port toward the receiver can be made a
// shallow-buffered bottleneck (SetBottleneck), where the senders' flows
// meet as they would at a switch port.
//
//	netns S0 "s" .1 ==== "p0" ─┐
//	netns S1 "s" .2 ==== "p1" ─┤ bridge "sw"  netns W
//	  ...                      │                        bottleneck:
//	netns Sn "s" .n+1 == "pn" ─┤                        tbf on "pr"
//	                           └── "pr" ==== "r" .254 netns R (receiver)
//
// in 198.18.X.0/24. Names are unique per process; Close removes every
// namespace, also after a failure.
type Shared struct {
	Senders  []Host
	Ports    []Host // the switch's ports facing the senders (no address)
	Recv     Host
	RecvPort Host   // the switch's port facing the receiver: the bottleneck
	W        string // the switch's namespace
	Prefix   netip.Prefix
	closed   atomic.Bool
}

// SharedOptions tune a shared-link testbed.
type SharedOptions struct {
	Senders int   // default 2, at most 200
	Subnet  uint8 // third octet of 198.18.X.0/24
	MTU     int   // of every veth end and the bridge (default 1500)
}

var sharedSeq atomic.Uint32

// CreateShared builds a shared-link testbed. The caller must Close it.
func CreateShared(o SharedOptions) (_ *Shared, err error) {
	sweepOnce.Do(Sweep)
	if o.Senders == 0 {
		o.Senders = 2
	}
	if o.Senders < 1 || o.Senders > 200 {
		return nil, fmt.Errorf("shared testbed: %d senders: want 1 to 200", o.Senders)
	}
	base := fmt.Sprintf("sdx-%d-sh%d", os.Getpid(), sharedSeq.Add(1))
	addr := func(host byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, o.Subnet, host}) }
	s := &Shared{
		W:        base + "-w",
		Recv:     Host{NS: base + "-r", If: "r", Addr: addr(254)},
		RecvPort: Host{NS: base + "-w", If: "pr"},
		Prefix:   netip.PrefixFrom(addr(0), 24),
	}
	for i := range o.Senders {
		s.Senders = append(s.Senders, Host{NS: fmt.Sprintf("%s-s%d", base, i), If: "s", Addr: addr(byte(i + 1))})
		s.Ports = append(s.Ports, Host{NS: s.W, If: fmt.Sprintf("p%d", i)})
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	cmds := [][]string{
		{"netns", "add", s.W},
		{"-n", s.W, "link", "add", "name", "sw", "type", "bridge"},
		{"-n", s.W, "link", "set", "dev", "lo", "up"},
		{"-n", s.W, "link", "set", "dev", "sw", "up"},
	}
	ends := append([]*Host{&s.Recv}, ptrs(s.Senders)...)
	ports := append([]*Host{&s.RecvPort}, ptrs(s.Ports)...)
	for i, e := range ends {
		p := ports[i]
		cmds = append(cmds,
			[]string{"netns", "add", e.NS},
			[]string{"-n", s.W, "link", "add", "name", p.If, "type", "veth", "peer", "name", e.If, "netns", e.NS},
			[]string{"-n", s.W, "link", "set", "dev", p.If, "master", "sw"},
			[]string{"-n", e.NS, "link", "set", "lo", "up"},
			[]string{"-n", e.NS, "addr", "add", e.Addr.String() + "/24", "dev", e.If},
		)
		if o.MTU != 0 {
			cmds = append(cmds,
				[]string{"-n", e.NS, "link", "set", "dev", e.If, "mtu", fmt.Sprint(o.MTU)},
				[]string{"-n", s.W, "link", "set", "dev", p.If, "mtu", fmt.Sprint(o.MTU)})
		}
		cmds = append(cmds,
			[]string{"-n", s.W, "link", "set", "dev", p.If, "up"},
			[]string{"-n", e.NS, "link", "set", "dev", e.If, "up"})
	}
	if o.MTU != 0 {
		cmds = append(cmds, []string{"-n", s.W, "link", "set", "dev", "sw", "mtu", fmt.Sprint(o.MTU)})
	}
	if err := ipAll(cmds); err != nil {
		return nil, fmt.Errorf("shared testbed: %w", err)
	}
	if err := learn(append(ends, ports...)...); err != nil {
		return nil, fmt.Errorf("shared testbed: %w", err)
	}
	return s, nil
}

func ptrs(hs []Host) []*Host {
	out := make([]*Host, len(hs))
	for i := range hs {
		out[i] = &hs[i]
	}
	return out
}

// NewShared builds a shared-link testbed for a test and removes it when
// the test ends.
func NewShared(t testing.TB, o SharedOptions) *Shared {
	t.Helper()
	return forTest(t, "shared testbed", func() (*Shared, error) { return CreateShared(o) })
}

// Bottleneck is the switch port toward the receiver: a token bucket of
// Rate bits a second whose queue holds Buffer bytes. With ECN false the
// queue is tbf's own, drop-tail; with ECN true it is a RED queue with
// ecn under the bucket, which marks ECN-capable frames (and drops the
// others) as it fills from a third of Buffer on, and drops only when
// Buffer is full.
type Bottleneck struct {
	Rate   int64 // bits per second
	Buffer int   // bytes
	ECN    bool
}

// SetBottleneck makes the receiver's port the bottleneck b.
func (s *Shared) SetBottleneck(b Bottleneck) error {
	burst := max(b.Rate/8/1000, 16<<10) // a millisecond's worth, at least 16 KiB
	dev := []string{"-n", s.W, "qdisc", "replace", "dev", s.RecvPort.If}
	if !b.ECN {
		return TC(append(dev, "root", "handle", "1:", "tbf", "rate", fmt.Sprintf("%dbit", b.Rate),
			"burst", fmt.Sprint(burst), "limit", fmt.Sprint(b.Buffer))...)
	}
	if err := TC(append(dev, "root", "handle", "1:", "tbf", "rate", fmt.Sprintf("%dbit", b.Rate),
		"burst", fmt.Sprint(burst), "limit", fmt.Sprint(b.Buffer))...); err != nil {
		return err
	}
	// RED: marking starts at min (a third of the buffer) with probability
	// rising to 1 at max; the hard limit is the buffer.
	minB, maxB := b.Buffer/6, b.Buffer/3
	if !HasQdisc("red") {
		return ErrNoMarkingQdisc
	}
	return TC("-n", s.W, "qdisc", "replace", "dev", s.RecvPort.If, "parent", "1:1", "handle", "10:", "red",
		"limit", fmt.Sprint(b.Buffer*2), "min", fmt.Sprint(minB), "max", fmt.Sprint(maxB),
		"avpkt", "1500", "burst", fmt.Sprint(minB/1500+2), "bandwidth", fmt.Sprintf("%dbit", b.Rate),
		"probability", "1", "ecn", "harddrop")
}

// ErrNoMarkingQdisc is SetBottleneck's answer for an ECN-marking
// bottleneck on a kernel built without RED (CONFIG_NET_SCH_RED), as the
// project's 6.18 test VM is: it has no CoDel, FQ-CoDel or PIE either.
var ErrNoMarkingQdisc = errors.New("testbed: the kernel has no ECN-marking qdisc (CONFIG_NET_SCH_RED is not set)")

// HasQdisc reports whether the kernel offers the qdisc kind, by trying
// it on a dummy device in a namespace of its own.
func HasQdisc(kind string) bool {
	ns := fmt.Sprintf("sdx-%d-q%d", os.Getpid(), sharedSeq.Add(1))
	if IP("netns", "add", ns) != nil {
		return false
	}
	defer IP("netns", "del", ns)
	if IP("-n", ns, "link", "add", "q", "type", "veth", "peer", "name", "q2") != nil {
		return false
	}
	args := map[string][]string{"red": {"limit", "200000", "min", "20000", "max", "40000", "avpkt", "1500", "burst", "15", "bandwidth", "100mbit", "ecn"}}[kind]
	return TC(append([]string{"-n", ns, "qdisc", "add", "dev", "q", "root", kind}, args...)...) == nil
}

// QdiscStats are a bottleneck's counters: frames sent, dropped and
// ECN-marked by its qdiscs, summed.
type QdiscStats struct {
	Sent, Dropped, Marked uint64
}

var (
	reSent    = regexp.MustCompile(`Sent \d+ bytes (\d+) pkt \(dropped (\d+)`)
	reMarked  = regexp.MustCompile(`marked (\d+)`)
	reECNMark = regexp.MustCompile(`ecn_mark (\d+)`)
)

// BottleneckStats reads the bottleneck's counters (tc -s qdisc). Sent is
// the root qdisc's; Dropped and Marked are summed over the qdiscs.
func (s *Shared) BottleneckStats() (QdiscStats, error) {
	out, err := exec.Command("tc", "-n", s.W, "-s", "qdisc", "show", "dev", s.RecvPort.If).CombinedOutput()
	if err != nil {
		return QdiscStats{}, fmt.Errorf("tc -s qdisc: %w: %s", err, out)
	}
	var st QdiscStats
	for i, m := range reSent.FindAllSubmatch(out, -1) {
		n, _ := strconv.ParseUint(string(m[1]), 10, 64)
		d, _ := strconv.ParseUint(string(m[2]), 10, 64)
		if i == 0 {
			st.Sent = n
		}
		st.Dropped += d
	}
	for _, re := range []*regexp.Regexp{reMarked, reECNMark} {
		for _, m := range re.FindAllSubmatch(out, -1) {
			n, _ := strconv.ParseUint(string(m[1]), 10, 64)
			st.Marked += n
		}
	}
	return st, nil
}

// Close removes every namespace of the testbed. It is idempotent.
func (s *Shared) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var errs []error
	nss := []string{s.W, s.Recv.NS}
	for _, h := range s.Senders {
		nss = append(nss, h.NS)
	}
	for _, ns := range nss {
		if ns != "" && sys.NetnsExists(ns) {
			errs = append(errs, IP("netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}
