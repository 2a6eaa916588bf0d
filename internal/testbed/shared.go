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

	"github.com/cilium/ebpf/link"

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
//	netns Sn "s" .n+1 == "pn" ─┤                        tbf on "pr",
//	                           │                        for ECN sdx_mark
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

	// The ECN bottleneck's marker and its attachment, set by
	// SetBottleneck.
	marker   Marker
	markLink link.Link
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

// Bottleneck is the switch port toward the receiver: a token bucket (tbf)
// of Rate bits a second whose queue holds Buffer bytes and drops what
// does not fit. With ECN true a Marker at the port's egress also marks
// ECN-capable frames CE once its estimate of the queue is above Threshold
// bytes (step marking, as DCTCP's switches do), so that ECN-capable
// senders back off before the buffer overflows; Not-ECT frames meet
// drop-tail alone.
type Bottleneck struct {
	Rate   int64 // bits per second
	Buffer int   // bytes
	ECN    bool
	// Marker marks for the ECN variant: a *bpf.Marker from bpf.LoadMarker.
	// SetBottleneck configures and attaches it; the caller closes it after
	// the testbed.
	Marker Marker
	// Threshold is the marking threshold in bytes; 0 means
	// DefaultMarkThreshold(Buffer).
	Threshold int
}

// A Marker is an ECN-marking AQM that runs at a port's egress, in front
// of its qdisc: bpf.Marker, which this package does not import (the bpf
// package's own tests build testbeds). The kernel the tests run on has no
// marking qdisc (no RED, CoDel, FQ-CoDel, PIE or CAKE), so the marking is
// an eBPF program's.
type Marker interface {
	// Configure empties the marker's queue and sets it to drain at rate
	// bits a second, hold limit bytes and mark above threshold bytes, in
	// front of a tbf whose bucket holds burst bytes.
	Configure(rate int64, burst, threshold, limit int) error
	// AttachEgress attaches it to the interface ifindex in the calling
	// thread's namespace.
	AttachEgress(ifindex int) (link.Link, error)
	// Marked is how many frames it has marked CE so far.
	Marked() (uint64, error)
}

// DefaultMarkThreshold is the marking threshold for a buffer of buffer
// bytes: 15% of it, 15 KB of the 100 KB the benchmarks use. The
// threshold must keep the port busy: DCTCP's rule (Alizadeh et al.,
// SIGCOMM 2010: K > C·RTT/7; about 0.17·C·RTT in their 2011 analysis)
// gives about 4 KB at 500 Mbit/s and the testbed's round trip of 0.4 ms
// (the 64 B ping-pong's median through the marking port with 4 sdx
// senders, its queue included). It must let a lone burst through
// unmarked: the rule assumes ack-clocked arrivals, but here a sender
// hands the port a burst at veth speed, sdx mostly 4 to 15 segments (it
// acks every 16), and a threshold below a burst marks every burst
// whatever the load. And it must leave room for what arrives in the
// round trip before the senders react, which with 8 senders' bursts
// together is most of the buffer. 15 KB is ten segments, one typical
// burst, and leaves 85 KB. Measured at 500 Mbit/s with 8 sdx senders, 30
// KB dropped 0.07-0.53% of the frames at the port and 15 KB at most
// 0.03%, for no less goodput (bench/README.md).
func DefaultMarkThreshold(buffer int) int { return buffer * 15 / 100 }

// SetBottleneck makes the receiver's port the bottleneck b. With b.ECN it
// also turns ECN on for kernel TCP (net.ipv4.tcp_ecn=1, which is per
// namespace) on every host of the testbed, so that TCP senders take part
// in the marking as sdx's do.
func (s *Shared) SetBottleneck(b Bottleneck) error {
	burst := max(b.Rate/8/1000, 16<<10) // a millisecond's worth, at least 16 KiB
	if b.ECN && b.Marker == nil {
		return errors.New("testbed: an ECN bottleneck needs a Marker (bpf.LoadMarker)")
	}
	if err := TC("-n", s.W, "qdisc", "replace", "dev", s.RecvPort.If, "root", "handle", "1:", "tbf",
		"rate", fmt.Sprintf("%dbit", b.Rate), "burst", fmt.Sprint(burst), "limit", fmt.Sprint(b.Buffer)); err != nil {
		return err
	}
	if !b.ECN {
		return s.unmark()
	}
	k := b.Threshold
	if k == 0 {
		k = DefaultMarkThreshold(b.Buffer)
	}
	if err := b.Marker.Configure(b.Rate, int(burst), k, b.Buffer); err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	if s.markLink != nil && s.marker != b.Marker {
		if err := s.unmark(); err != nil {
			return err
		}
	}
	if s.markLink == nil {
		if err := s.RecvPort.Do(func() (err error) {
			s.markLink, err = b.Marker.AttachEgress(s.RecvPort.Index)
			return err
		}); err != nil {
			return fmt.Errorf("testbed: %w", err)
		}
	}
	s.marker = b.Marker
	return s.setTCPECN(1)
}

// unmark detaches the marker, if there is one, and turns kernel TCP's ECN
// back to Linux's default, 2: only when the peer asks for it.
func (s *Shared) unmark() error {
	if s.markLink == nil {
		return nil
	}
	err := s.markLink.Close()
	s.marker, s.markLink = nil, nil
	return errors.Join(err, s.setTCPECN(2))
}

// setTCPECN sets net.ipv4.tcp_ecn in every host's namespace.
func (s *Shared) setTCPECN(v int) error {
	for _, h := range append([]Host{s.Recv}, s.Senders...) {
		if err := h.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/tcp_ecn", []byte(fmt.Sprint(v)), 0) }); err != nil {
			return fmt.Errorf("testbed: tcp_ecn in %s: %w", h.NS, err)
		}
	}
	return nil
}

// QdiscStats are a bottleneck's counters: frames sent and dropped by its
// qdiscs, and marked CE by its Marker.
type QdiscStats struct {
	Sent, Dropped, Marked uint64
}

var reSent = regexp.MustCompile(`Sent \d+ bytes (\d+) pkt \(dropped (\d+)`)

// BottleneckStats reads the bottleneck's counters: Sent and Dropped from
// tc -s qdisc (Sent the root qdisc's, Dropped summed over the qdiscs),
// Marked from the Marker.
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
	if s.marker != nil {
		n, err := s.marker.Marked()
		if err != nil {
			return QdiscStats{}, err
		}
		st.Marked += n
	}
	return st, nil
}

// Close removes every namespace of the testbed. It is idempotent.
func (s *Shared) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var errs []error
	if s.markLink != nil {
		errs = append(errs, s.markLink.Close())
	}
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
