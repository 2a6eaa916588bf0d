package bpf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
)

const (
	testPort = 19000 // the sdx port the tests load the program with

	xdpPass     = 2
	xdpRedirect = 4

	ethHLen    = 14
	ethTypeIP  = 0x0800
	ethTypeARP = 0x0806
	ethTypeIP6 = 0x86dd
	tpidQ      = 0x8100 // 802.1Q
	tpidAD     = 0x88a8 // 802.1ad

	protoTCP = 6
	protoUDP = 17

	ipDF = 0x4000
	ipMF = 0x2000
)

// frame describes a test frame: Ethernet, optional tags, IPv4, UDP (or
// another protocol) and a payload. The zero value plus a port is a valid
// sdx frame.
type frame struct {
	tags    []uint16 // TPIDs of the VLAN tags, outermost first
	version int      // IP version nibble; 0 means 4
	ihl     int      // IHL nibble; 0 means 5, ihl0 means 0. Below 5 still writes 20 bytes
	tos     uint8    // IPv4 TOS byte: DSCP and ECN
	proto   uint8    // IP protocol; 0 means UDP
	fragOff uint16   // flags and fragment offset
	dport   uint16   // UDP (or TCP) destination port
	payload int      // payload bytes after the UDP header
	totLen  int      // IP total length if nonzero, else the true one
	udpLen  int      // UDP length if nonzero, else the true one
	pad     int      // bytes after the IP datagram (Ethernet padding)
	src     string   // IPv4 source if set, else 198.18.0.2
	dst     string   // IPv4 destination if set, else 198.18.0.1
}

// ihl0 asks frame for an IHL of 0.
const ihl0 = -1

var (
	macA = []byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = []byte{0x02, 0, 0, 0, 0, 0x0b}
)

func (f frame) bytes() []byte {
	b := append(append([]byte(nil), macA...), macB...)
	for _, tpid := range f.tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, 100) // PCP 0, VID 100
	}
	b = binary.BigEndian.AppendUint16(b, ethTypeIP)

	version, ihl, proto := 4, 5, uint8(protoUDP)
	if f.version != 0 {
		version = f.version
	}
	switch f.ihl {
	case 0:
	case ihl0:
		ihl = 0
	default:
		ihl = f.ihl
	}
	if f.proto != 0 {
		proto = f.proto
	}
	hlen := max(ihl, 5) * 4
	l4len := 8
	if proto == protoTCP {
		l4len = 20
	}
	totLen := hlen + l4len + f.payload
	if f.totLen != 0 {
		totLen = f.totLen
	}

	ip := make([]byte, hlen)
	ip[0] = byte(version<<4 | ihl&0x0f)
	ip[1] = f.tos
	binary.BigEndian.PutUint16(ip[2:], uint16(totLen))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], f.fragOff)
	ip[8] = 64
	ip[9] = proto
	src, dst := netip.AddrFrom4([4]byte{198, 18, 0, 2}), netip.AddrFrom4([4]byte{198, 18, 0, 1})
	if f.src != "" {
		src = netip.MustParseAddr(f.src)
	}
	if f.dst != "" {
		dst = netip.MustParseAddr(f.dst)
	}
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	for i := 20; i < hlen; i++ {
		ip[i] = 1 // NOP options
	}
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	b = append(b, ip...)

	l4 := make([]byte, l4len)
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], f.dport)
	if proto == protoTCP {
		l4[12] = 5 << 4 // data offset
		l4[13] = 0x02   // SYN
	} else {
		udpLen := 8 + f.payload
		if f.udpLen != 0 {
			udpLen = f.udpLen
		}
		binary.BigEndian.PutUint16(l4[4:], uint16(udpLen))
	}
	b = append(b, l4...)
	for i := range f.payload {
		b = append(b, byte(i))
	}
	return append(b, make([]byte, f.pad)...)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// arpFrame is an ARP request from B for A.
func arpFrame() []byte {
	b := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macB...)
	b = binary.BigEndian.AppendUint16(b, ethTypeARP)
	b = binary.BigEndian.AppendUint16(b, 1)         // Ethernet
	b = binary.BigEndian.AppendUint16(b, ethTypeIP) // IPv4
	b = append(b, 6, 4, 0, 1)                       // sizes, request
	b = append(append(b, macB...), 198, 18, 0, 2)
	return append(append(b, make([]byte, 6)...), 198, 18, 0, 1)
}

// ip6UDPFrame is IPv6/UDP to port.
func ip6UDPFrame(port uint16) []byte {
	b := append(append([]byte(nil), macA...), macB...)
	b = binary.BigEndian.AppendUint16(b, ethTypeIP6)
	ip := make([]byte, 40)
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:], 8+16) // payload length
	ip[6] = protoUDP
	ip[7] = 64
	ip[15], ip[31] = 2, 1 // ::2 -> ::1
	b = append(b, ip...)
	b = binary.BigEndian.AppendUint16(b, 40000)
	b = binary.BigEndian.AppendUint16(b, port)
	b = binary.BigEndian.AppendUint16(b, 8+16)
	b = binary.BigEndian.AppendUint16(b, 0)
	return append(b, make([]byte, 16)...)
}

// xdpMD is struct xdp_md, the context BPF_PROG_TEST_RUN accepts for XDP.
type xdpMD struct {
	Data, DataEnd, DataMeta      uint32
	IngressIfindex, RxQueueIndex uint32
	EgressIfindex                uint32
}

func (s SteerStats) sub(o SteerStats) SteerStats {
	return SteerStats{
		Seen:       s.Seen - o.Seen,
		Redirected: s.Redirected - o.Redirected,
		NoSocket:   s.NoSocket - o.NoSocket,
		Passed:     s.Passed - o.Passed,
		Malformed:  s.Malformed - o.Malformed,
		Foreign:    s.Foreign - o.Foreign,
		Spoofed:    s.Spoofed - o.Spoofed,
		Unreach:    s.Unreach - o.Unreach,
	}
}

func (s SteerStats) balanced() bool {
	return s.Seen == s.Redirected+s.NoSocket+s.Passed+s.Malformed+s.Foreign+s.Spoofed &&
		s.Unreach <= s.Redirected+s.NoSocket
}

// outcome is a verdict and the one counter (besides Seen) it bumps.
type outcome int

const (
	redirected outcome = iota + 1
	nosocket
	passed
	malformed
	foreign // sdx port, not a served destination
	spoofed // served destination, source nobody may answer
	unreach // an ICMP port unreachable about an sdx frame, no socket
)

func (o outcome) String() string {
	return [...]string{"?", "redirected", "nosocket", "passed", "malformed", "foreign", "spoofed", "unreach"}[o]
}

func (o outcome) verdict() uint32 {
	switch o {
	case redirected:
		return xdpRedirect
	case spoofed:
		return xdpDrop
	}
	return xdpPass
}

func (o outcome) stats() SteerStats {
	s := SteerStats{Seen: 1}
	switch o {
	case redirected:
		s.Redirected = 1
	case nosocket:
		s.NoSocket = 1
	case passed:
		s.Passed = 1
	case malformed:
		s.Malformed = 1
	case foreign:
		s.Foreign = 1
	case spoofed:
		s.Spoofed = 1
	case unreach:
		s.NoSocket, s.Unreach = 1, 1
	}
	return s
}

// mustLoad loads the program serving every destination (AnyAddr), so that
// the tests of the parse see no address checks but the source's.
func mustLoad(t *testing.T, port uint16) *Steer {
	t.Helper()
	return mustLoadServing(t, port, map[netip.Prefix]bool{AnyAddr: true})
}

// mustLoadServing loads the program knowing the addresses given, each
// served or not.
func mustLoadServing(t *testing.T, port uint16, addrs map[netip.Prefix]bool) *Steer {
	t.Helper()
	s, err := LoadSteer(port)
	if err != nil {
		t.Fatalf("LoadSteer(%d): %v", port, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	for p, serve := range addrs {
		if err := s.AddAddr(p, serve); err != nil {
			t.Fatalf("AddAddr(%v, %v): %v", p, serve, err)
		}
	}
	return s
}

func stats(t *testing.T, s *Steer) SteerStats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}

// run runs the program once on pkt (queue 0, no device) and returns the
// verdict and the change in the counters.
func run(t *testing.T, s *Steer, pkt []byte) (uint32, SteerStats) {
	t.Helper()
	before := stats(t, s)
	verdict, err := s.Program().Run(&ebpf.RunOptions{Data: pkt, Repeat: 1})
	if err != nil {
		t.Fatalf("run on %d bytes: %v", len(pkt), err)
	}
	return verdict, stats(t, s).sub(before)
}

func expect(t *testing.T, s *Steer, name string, pkt []byte, want outcome) {
	t.Helper()
	verdict, delta := run(t, s, pkt)
	if verdict != want.verdict() || delta != want.stats() {
		t.Errorf("%s (%d bytes): verdict %d, counters %+v; want %s: verdict %d, counters %+v",
			name, len(pkt), verdict, delta, want, want.verdict(), want.stats())
	}
}

func TestSteerVerdicts(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	s := mustLoad(t, testPort)
	start := stats(t, s)

	sdx := frame{dport: testPort, payload: 16}
	with := func(f func(*frame)) []byte {
		c := sdx
		f(&c)
		return c.bytes()
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		want outcome
	}{
		{"sdx UDP, no socket", sdx.bytes(), nosocket},
		{"sdx UDP, no payload", with(func(f *frame) { f.payload = 0 }), nosocket},
		{"sdx UDP, Ethernet padding", with(func(f *frame) { f.payload = 2; f.pad = 2 }), nosocket},
		{"sdx UDP, DF set", with(func(f *frame) { f.fragOff = ipDF }), nosocket},
		{"sdx UDP, UDP length short of the IP payload", with(func(f *frame) { f.udpLen = 8 }), nosocket},
		{"other UDP port", with(func(f *frame) { f.dport = testPort + 1 }), passed},
		{"UDP port 0", with(func(f *frame) { f.dport = 0 }), passed},
		{"TCP to the sdx port", with(func(f *frame) { f.proto = protoTCP }), passed},
		{"ARP", arpFrame(), passed},
		{"IPv6 UDP to the sdx port", ip6UDPFrame(testPort), passed},
		{"802.1Q sdx UDP", with(func(f *frame) { f.tags = []uint16{tpidQ} }), nosocket},
		{"802.1ad sdx UDP", with(func(f *frame) { f.tags = []uint16{tpidAD} }), nosocket},
		{"QinQ sdx UDP", with(func(f *frame) { f.tags = []uint16{tpidAD, tpidQ} }), passed},
		{"double 802.1Q sdx UDP", with(func(f *frame) { f.tags = []uint16{tpidQ, tpidQ} }), passed},
		{"IPv4 options, IHL 6", with(func(f *frame) { f.ihl = 6 }), nosocket},
		{"IPv4 options, IHL 7", with(func(f *frame) { f.ihl = 7 }), nosocket},
		{"IPv4 options, IHL 15", with(func(f *frame) { f.ihl = 15 }), nosocket},
		{"802.1Q, IPv4 options, IHL 15", with(func(f *frame) { f.tags = []uint16{tpidQ}; f.ihl = 15 }), nosocket},
		{"first fragment (MF)", with(func(f *frame) { f.fragOff = ipMF }), passed},
		{"middle fragment (MF, offset)", with(func(f *frame) { f.fragOff = ipMF | 3 }), passed},
		{"last fragment (offset)", with(func(f *frame) { f.fragOff = 3 }), passed},
		{"last fragment, large offset", with(func(f *frame) { f.fragOff = 0x1fff }), passed},
		{"IHL 0", with(func(f *frame) { f.ihl = ihl0 }), malformed},
		{"IHL 4", with(func(f *frame) { f.ihl = 4 }), malformed},
		{"IHL 15, options cut off", with(func(f *frame) { f.ihl = 15; f.totLen = 60; f.payload = 0 })[:ethHLen+40], malformed},
		{"IP version 6 in an IPv4 ethertype", with(func(f *frame) { f.version = 6 }), malformed},
		{"IP total length beyond the frame", with(func(f *frame) { f.totLen = 20 + 8 + 17 }), malformed},
		{"IP total length below the header", with(func(f *frame) { f.totLen = 19 }), malformed},
		{"IP total length without room for UDP", with(func(f *frame) { f.totLen = 27 }), malformed},
		{"UDP length below 8", with(func(f *frame) { f.udpLen = 7 }), malformed},
		{"UDP length beyond the IP payload", with(func(f *frame) { f.udpLen = 8 + 17 }), malformed},
		{"TCP, IP total length beyond the frame", with(func(f *frame) { f.proto = protoTCP; f.totLen = 200 }), malformed},
	} {
		expect(t, s, c.name, c.pkt, c.want)
	}

	if total := stats(t, s).sub(start); !total.balanced() {
		t.Errorf("counters do not add up: %+v", total)
	}
}

// TestSteerTruncated cuts frames at every length from 0 to full: no cut
// frame is ever steered, and each is counted.
//
// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header with
// EINVAL, also behind metadata, and bpf_xdp_adjust_head/tail cannot shrink
// a frame below 14 bytes either: the kernel never runs an XDP program on
// less. Those lengths are checked to be refused, or, should a kernel ever
// run them, to be counted as malformed.
func TestSteerTruncated(t *testing.T) {
	testutil.Privileged(t)
	s := mustLoad(t, testPort)
	start := stats(t, s)

	for _, c := range []struct {
		name string
		f    frame
		// whole is the outcome of the uncut frame; cut, of a frame cut to n
		// bytes.
		whole outcome
		cut   func(n int) outcome
	}{
		{"sdx", frame{dport: testPort, payload: 16}, nosocket, func(int) outcome { return malformed }},
		{"sdx, no payload", frame{dport: testPort}, nosocket, func(int) outcome { return malformed }},
		{"802.1Q sdx", frame{tags: []uint16{tpidQ}, dport: testPort, payload: 16}, nosocket, func(int) outcome { return malformed }},
		{"IHL 7 sdx", frame{ihl: 7, dport: testPort, payload: 16}, nosocket, func(int) outcome { return malformed }},
		{"other port", frame{dport: testPort + 1, payload: 16}, passed, func(int) outcome { return malformed }},
		// Past the first tag a second one means "not ours": parsing stops.
		{"QinQ sdx", frame{tags: []uint16{tpidAD, tpidQ}, dport: testPort, payload: 16}, passed, func(n int) outcome {
			if n < ethHLen+4 {
				return malformed
			}
			return passed
		}},
	} {
		pkt := c.f.bytes()
		for n := 0; n <= len(pkt); n++ {
			name := fmt.Sprintf("%s cut to %d", c.name, n)
			want := c.whole
			if n < len(pkt) {
				want = c.cut(n)
			}
			if n >= ethHLen {
				expect(t, s, name, pkt[:n], want)
				continue
			}
			before := stats(t, s)
			verdict, err := s.Program().Run(&ebpf.RunOptions{Data: pkt[:n], Repeat: 1})
			delta := stats(t, s).sub(before)
			switch {
			case errors.Is(err, syscall.EINVAL) && delta == SteerStats{}:
				// Refused by the kernel, as expected; nothing ran.
			case err == nil && verdict == xdpPass && delta == malformed.stats():
				t.Logf("%s: this kernel runs XDP on less than an Ethernet header", name)
			default:
				t.Errorf("%s: verdict %d, counters %+v, err %v; want EINVAL, or malformed", name, verdict, delta, err)
			}
		}
	}

	total := stats(t, s).sub(start)
	if !total.balanced() || total.Redirected != 0 {
		t.Errorf("counters: %+v; want balanced and nothing redirected", total)
	}
}

func TestSteerPortIsConfiguration(t *testing.T) {
	testutil.Privileged(t)
	const p1, p2 = 19001, 53000
	s1, s2 := mustLoad(t, p1), mustLoad(t, p2)
	if s1.Port() != p1 || s2.Port() != p2 {
		t.Fatalf("ports %d, %d; want %d, %d", s1.Port(), s2.Port(), p1, p2)
	}
	f1 := frame{dport: p1, payload: 4}.bytes()
	f2 := frame{dport: p2, payload: 4}.bytes()
	expect(t, s1, "to p1 on p1", f1, nosocket)
	expect(t, s1, "to p2 on p1", f2, passed)
	expect(t, s2, "to p1 on p2", f1, passed)
	expect(t, s2, "to p2 on p2", f2, nosocket)
	// The port is compared in network byte order: its byte swap is another port.
	swapped := frame{dport: p1>>8 | p1&0xff<<8, payload: 4}.bytes()
	expect(t, s1, "to swapped p1 on p1", swapped, passed)

	if _, err := LoadSteer(0); !errors.Is(err, ErrPort) {
		t.Errorf("LoadSteer(0): %v; want ErrPort", err)
	}
}

// TestSteerQueueContext runs the program as if frames came in on rx queue 1
// of a real device, the way a redirect test with a bound AF_XDP socket will.
func TestSteerQueueContext(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{Queues: 2})
	s := mustLoad(t, testPort)
	pkt := frame{dport: testPort, payload: 16}.bytes()

	// runOn runs the program as if pkt came in on queue of veth "a"; the
	// kernel looks the device up in the calling thread's namespace.
	type result struct {
		verdict uint32
		delta   SteerStats
		err     error
	}
	runOn := func(queue int) (r result) {
		r.err = bed.A.Do(func() error {
			before, err := s.Stats()
			if err != nil {
				return err
			}
			r.verdict, err = s.Program().Run(&ebpf.RunOptions{
				Data:    pkt,
				Context: xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(bed.A.Index), RxQueueIndex: uint32(queue)},
				Repeat:  1,
			})
			if err != nil {
				return err
			}
			after, err := s.Stats()
			r.delta = after.sub(before)
			return err
		})
		return r
	}

	for q := range 2 {
		r := runOn(q)
		if r.err != nil {
			t.Fatalf("queue %d: %v", q, r.err)
		}
		if r.verdict != xdpPass || r.delta != nosocket.stats() {
			t.Errorf("queue %d: verdict %d, counters %+v; want nosocket", q, r.verdict, r.delta)
		}
	}
	// A queue the device does not have is refused by the kernel.
	if r := runOn(2); r.err == nil {
		t.Errorf("run on rx queue 2 of a 2-queue device: no error")
	}
}

func TestSteerRegister(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	s := mustLoad(t, testPort)

	for _, q := range []int{-1, MaxQueues} {
		if err := s.Register(q, 0); !errors.Is(err, ErrQueueRange) {
			t.Errorf("Register(%d): %v; want ErrQueueRange", q, err)
		}
		if err := s.Unregister(q); !errors.Is(err, ErrQueueRange) {
			t.Errorf("Unregister(%d): %v; want ErrQueueRange", q, err)
		}
	}

	// Only AF_XDP sockets go into an XSKMAP.
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	raw, err := udp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var regErr error
	if err := raw.Control(func(fd uintptr) { regErr = s.Register(0, int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(regErr, syscall.EOPNOTSUPP) {
		t.Errorf("Register(0, UDP socket): %v; want EOPNOTSUPP", regErr)
	}
	if err := s.Register(0, -1); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Register(0, -1): %v; want EBADF", err)
	}
	for q := range MaxQueues {
		if err := s.Unregister(q); err != nil {
			t.Errorf("Unregister(%d) of an empty slot: %v", q, err)
		}
	}
}

func TestSteerClose(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	s, err := LoadSteer(testPort)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if _, err := s.Stats(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats after Close: %v; want ErrClosed", err)
	}
	if err := s.Register(0, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Register after Close: %v; want ErrClosed", err)
	}
	if err := s.Unregister(0); !errors.Is(err, ErrClosed) {
		t.Errorf("Unregister after Close: %v; want ErrClosed", err)
	}
}

// TestSteerSpec checks the embedded object against the Go side, without
// loading it.
func TestSteerSpec(t *testing.T) {
	spec, err := loadSteer()
	if err != nil {
		t.Fatal(err)
	}
	if m := spec.Maps[steerMapXsks]; m == nil || m.Type != ebpf.XSKMap || m.MaxEntries != MaxQueues {
		t.Errorf("xsks: %v; want an XSKMAP of MaxQueues (%d) entries", m, MaxQueues)
	}
	if m := spec.Maps[steerMapAddrs]; m == nil || m.Type != ebpf.Hash || m.MaxEntries != MaxAddrs || m.KeySize != 4 || m.ValueSize != 8 {
		t.Errorf("addrs: %v; want a hash of MaxAddrs (%d) entries, 4-byte keys, 8-byte values", m, MaxAddrs)
	}
	if m := spec.Maps[steerMapStats]; m == nil || m.Type != ebpf.PerCPUArray || m.MaxEntries != 1 {
		t.Errorf("stats: %v; want a one-entry per-CPU array", m)
	}
	if v := spec.Variables[steerVarSdxPort]; v == nil || v.Size() != 2 || !v.Constant() {
		t.Errorf("sdx_port: %v; want a 2-byte constant", v)
	}
	if p := spec.Programs[steerProgSdxSteer]; p == nil || p.Type != ebpf.XDP || p.License != "Dual BSD/GPL" {
		t.Errorf("sdx_steer: %v; want an XDP program, license Dual BSD/GPL", p)
	}
}

func TestMode(t *testing.T) {
	for m, want := range map[Mode]string{ModeNative: "native", ModeGeneric: "generic", 0: "Mode(0)"} {
		if got := m.String(); got != want {
			t.Errorf("Mode(%d).String() = %q; want %q", int(m), got, want)
		}
	}
}

func TestKernelFeatureError(t *testing.T) {
	err := fmt.Errorf("attach: %w", &KernelFeatureError{Feature: "XDP attach through bpf_link", Minimum: MinKernel, Err: syscall.EINVAL})
	if !errors.Is(err, ebpf.ErrNotSupported) || !errors.Is(err, syscall.EINVAL) {
		t.Errorf("%v: does not match ErrNotSupported and EINVAL", err)
	}
	if want := "XDP attach through bpf_link needs Linux 5.9 or later"; !strings.Contains(err.Error(), want) {
		t.Errorf("%q does not say %q", err, want)
	}
}

// xdpShown returns the XDP part of `ip link show` for dev in ns: empty when
func waitNoXDP(t *testing.T, ns, dev string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		shown := testutil.XDPShown(t, ns, dev)
		if shown == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s still shows %q", dev, ns, shown)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func attachIn(t *testing.T, h *testbed.Host, prog *ebpf.Program, ifindex int, modes ...Mode) (link.Link, Mode) {
	t.Helper()
	var l link.Link
	var got Mode
	err := h.Do(func() (err error) {
		l, got, err = Attach(prog, ifindex, modes...)
		return err
	})
	if err != nil {
		t.Fatalf("attach in %s: %v", h.NS, err)
	}
	return l, got
}

func TestAttach(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	bed := testbed.New(t, testbed.Options{})
	s := mustLoad(t, testPort)
	progInfo, err := s.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	progID, _ := progInfo.ID()

	for _, c := range []struct {
		name  string
		modes []Mode
		want  Mode
		shown string
	}{
		{"default", nil, ModeNative, "xdp"},
		{"forced native", []Mode{ModeNative}, ModeNative, "xdp"},
		{"forced generic", []Mode{ModeGeneric}, ModeGeneric, "xdpgeneric"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, got := attachIn(t, &bed.A, s.Program(), bed.A.Index, c.modes...)
			if got != c.want {
				t.Errorf("granted %s; want %s", got, c.want)
			}
			info, err := l.Info()
			if err != nil {
				t.Fatal(err)
			}
			if info.Program != progID || info.XDP() == nil || int(info.XDP().Ifindex) != bed.A.Index {
				t.Errorf("link info: program %d, xdp %+v; want program %d on ifindex %d", info.Program, info.XDP(), progID, bed.A.Index)
			}
			shown := testutil.XDPShown(t, bed.A.NS, bed.A.If)
			t.Logf("granted %s; ip link shows %q", got, shown)
			if !strings.Contains(" "+shown+" ", " "+c.shown+" ") {
				t.Errorf("ip link shows %q; want %q", shown, c.shown)
			}
			// A second program cannot take the interface while the link holds it.
			if err := bed.A.Do(func() error {
				l2, _, err := Attach(s.Program(), bed.A.Index)
				if err == nil {
					l2.Close()
					return errors.New("second attach succeeded")
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("close link: %v", err)
			}
			waitNoXDP(t, bed.A.NS, bed.A.If)
		})
	}
}

// TestAttachFallback attaches to the namespace's loopback, whose driver has
// no native XDP: the default falls back to generic, forced native fails.
func TestAttachFallback(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{})
	s := mustLoad(t, testPort)
	lo := 1

	err := bed.A.Do(func() error {
		l, _, err := Attach(s.Program(), lo, ModeNative)
		if err == nil {
			l.Close()
			return errors.New("native XDP on lo: no error")
		}
		if !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("native XDP on lo: %v; want EOPNOTSUPP", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	l, got := attachIn(t, &bed.A, s.Program(), lo)
	if got != ModeGeneric {
		t.Errorf("granted %s on lo; want generic", got)
	}
	if shown := testutil.XDPShown(t, bed.A.NS, "lo"); !strings.Contains(shown, "xdpgeneric") {
		t.Errorf("ip link shows %q on lo; want xdpgeneric", shown)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	waitNoXDP(t, bed.A.NS, "lo")
}

// TestSteerOnVeth attaches the program to veth "a" and sends real datagrams
// from B: with no socket registered, the sdx one reaches the kernel's UDP
// socket like any other, and the counters say so.
func TestSteerOnVeth(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{})
	s := mustLoad(t, testPort)
	l, mode := attachIn(t, &bed.A, s.Program(), bed.A.Index)
	defer l.Close()
	if mode != ModeNative {
		t.Errorf("granted %s on veth; want native", mode)
	}

	var sdxConn, otherConn *net.UDPConn
	if err := bed.A.Do(func() (err error) {
		sdxConn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bed.A.Addr, testPort)))
		if err != nil {
			return err
		}
		otherConn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bed.A.Addr, testPort+1)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sdxConn.Close()
	defer otherConn.Close()

	var tx *net.UDPConn
	if err := bed.B.Do(func() (err error) {
		tx, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bed.B.Addr, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()

	for _, c := range []*net.UDPConn{sdxConn, otherConn} {
		to := c.LocalAddr().(*net.UDPAddr)
		msg := []byte("to " + strconv.Itoa(to.Port))
		if _, err := tx.WriteToUDP(msg, to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read on %v: %v", to, err)
		}
		if string(buf[:n]) != string(msg) {
			t.Errorf("read %q on %v; want %q", buf[:n], to, msg)
		}
	}

	st := stats(t, s)
	t.Logf("counters after the exchange: %+v", st)
	if st.NoSocket != 1 || st.Passed < 2 || st.Redirected != 0 || st.Malformed != 0 || st.Foreign != 0 || st.Spoofed != 0 || !st.balanced() {
		t.Errorf("counters %+v; want 1 nosocket, the other datagram and ARP passed", st)
	}
}

// TestAttachReleasedOnExit attaches from a child process, kills it, and
// checks that the program left the interface with it.
func TestAttachReleasedOnExit(t *testing.T) {
	testutil.Privileged(t)
	if ns := os.Getenv("SDX_BPF_CHILD_NS"); ns != "" {
		attachChild(ns)
		return
	}
	bed := testbed.New(t, testbed.Options{})
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttachReleasedOnExit$")
	cmd.Env = append(os.Environ(), "SDX_BPF_CHILD_NS="+bed.A.NS, "SDX_BPF_CHILD_IFINDEX="+strconv.Itoa(bed.A.Index))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()

	lines := bufio.NewScanner(out)
	attached := false
	for lines.Scan() {
		if line := lines.Text(); line == "attached" {
			attached = true
			break
		} else if strings.HasPrefix(line, "error:") {
			t.Fatalf("child: %s", line)
		}
	}
	if !attached {
		t.Fatalf("child exited before attaching")
	}
	if shown := testutil.XDPShown(t, bed.A.NS, bed.A.If); shown == "" {
		t.Fatalf("no XDP program on %s while the child holds the link", bed.A.If)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitNoXDP(t, bed.A.NS, bed.A.If)
}

// attachChild is the child of TestAttachReleasedOnExit: it attaches, says
// so, and waits to be killed, never closing the link.
func attachChild(ns string) {
	fail := func(err error) {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	ifindex, err := strconv.Atoi(os.Getenv("SDX_BPF_CHILD_IFINDEX"))
	if err != nil {
		fail(err)
	}
	s, err := LoadSteer(testPort)
	if err != nil {
		fail(err)
	}
	var l link.Link
	if err := sys.InNetns(ns, func() (err error) {
		l, _, err = Attach(s.Program(), ifindex)
		return err
	}); err != nil {
		fail(err)
	}
	fmt.Println("attached")
	time.Sleep(time.Minute) // killed by the parent long before
	runtime.KeepAlive(l)
	runtime.KeepAlive(s)
	os.Exit(1)
}

// BenchmarkSteer runs the program through BPF_PROG_TEST_RUN. ns/op includes
// the syscall; ns/frame is the kernel's own timing of the program alone.
func BenchmarkSteer(b *testing.B) {
	testutil.Privileged(b)
	s, err := LoadSteer(testPort)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"sdx", frame{dport: testPort, payload: 64}.bytes()},
		{"sdx-vlan-options", frame{tags: []uint16{tpidQ}, ihl: 15, dport: testPort, payload: 64}.bytes()},
		{"other-port", frame{dport: testPort + 1, payload: 64}.bytes()},
		{"arp", arpFrame()},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			opts := &ebpf.RunOptions{Data: c.pkt, Repeat: 1}
			for b.Loop() {
				if _, err := s.Program().Run(opts); err != nil {
					b.Fatal(err)
				}
			}
			_, perFrame, err := s.Program().Benchmark(c.pkt, 10000, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(perFrame.Nanoseconds()), "ns/frame")
		})
	}
}

// icmpFrame is an ICMP error from src to dst that quotes the first n bytes
// (all, if n is 0 or beyond it) of the IPv4 datagram in quoted, an
// Ethernet frame.
func icmpFrame(src, dst string, typ, code uint8, quoted []byte, n int) []byte {
	q := quoted[ethHLen:]
	if n > 0 && n < len(q) {
		q = q[:n]
	}
	icmp := append([]byte{typ, code, 0, 0, 0, 0, 0, 0}, q...)
	binary.BigEndian.PutUint16(icmp[2:], ipChecksum(icmp))
	b := append(append([]byte(nil), macA...), macB...)
	b = binary.BigEndian.AppendUint16(b, ethTypeIP)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	ip[8] = 64
	ip[9] = 1 // ICMP
	s4, d4 := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	return append(append(b, ip...), icmp...)
}

// sdxFrom is an sdx datagram with both UDP ports the sdx port (as sdx
// sends them), from src to dst.
func sdxFrom(src, dst string, payload int) []byte {
	b := frame{dport: testPort, payload: payload, src: src, dst: dst}.bytes()
	binary.BigEndian.PutUint16(b[ethHLen+20:], testPort)
	return b
}

// TestSteerAddresses loads the program serving 198.18.0.1/24 on a host
// that also has 198.18.7.1/24 and 198.18.9.0/31: sdx frames to the served
// address from a source that can be answered are steered; to any other
// destination they go to the kernel (Foreign); from a broadcast, network,
// multicast, loopback, zero or own source they are dropped (Spoofed).
func TestSteerAddresses(t *testing.T) {
	testutil.Privileged(t)
	s := mustLoadServing(t, testPort, map[netip.Prefix]bool{
		netip.MustParsePrefix("198.18.0.1/24"): true,
		netip.MustParsePrefix("198.18.7.1/24"): false,
	})
	start := stats(t, s)
	sdx := func(src, dst string) []byte { return frame{dport: testPort, payload: 16, src: src, dst: dst}.bytes() }
	for _, c := range []struct {
		name     string
		src, dst string
		want     outcome
	}{
		{"from a peer on the subnet", "198.18.0.2", "198.18.0.1", nosocket},
		{"from a peer beyond a router", "198.19.4.255", "198.18.0.1", nosocket},
		{"from another subnet's .0", "198.18.1.0", "198.18.0.1", nosocket},
		{"to the host's address it does not serve", "198.18.0.2", "198.18.7.1", foreign},
		{"to the subnet broadcast", "198.18.0.2", "198.18.0.255", foreign},
		{"to the limited broadcast", "198.18.0.2", "255.255.255.255", foreign},
		{"to a multicast group", "198.18.0.2", "224.0.0.1", foreign},
		{"to another host (forwarded)", "198.18.0.2", "198.18.0.3", foreign},
		{"from the subnet broadcast", "198.18.0.255", "198.18.0.1", spoofed},
		{"from the network address", "198.18.0.0", "198.18.0.1", spoofed},
		{"from the limited broadcast", "255.255.255.255", "198.18.0.1", spoofed},
		{"from 0.0.0.0", "0.0.0.0", "198.18.0.1", spoofed},
		{"from 0.1.2.3", "0.1.2.3", "198.18.0.1", spoofed},
		{"from a multicast group", "239.1.2.3", "198.18.0.1", spoofed},
		{"from class E", "240.0.0.1", "198.18.0.1", spoofed},
		{"from loopback", "127.0.0.1", "198.18.0.1", spoofed},
		{"from our own address", "198.18.0.1", "198.18.0.1", spoofed},
		{"from our other address", "198.18.7.1", "198.18.0.1", spoofed},
	} {
		expect(t, s, c.name, sdx(c.src, c.dst), c.want)
	}
	// Other ports are the kernel's whatever their addresses.
	expect(t, s, "other port from the subnet broadcast",
		frame{dport: testPort + 1, payload: 16, src: "198.18.0.255"}.bytes(), passed)

	// A /31 has no network or broadcast address (RFC 3021).
	p31 := mustLoadServing(t, testPort, map[netip.Prefix]bool{netip.MustParsePrefix("198.18.9.0/31"): true})
	expect(t, p31, "/31: from the other end", sdx("198.18.9.1", "198.18.9.0"), nosocket)
	expect(t, p31, "/31: from ourselves", sdx("198.18.9.0", "198.18.9.0"), spoofed)

	if total := stats(t, s).sub(start); !total.balanced() {
		t.Errorf("counters do not add up: %+v", total)
	}
	if err := s.AddAddr(netip.MustParsePrefix("::1/128"), true); !errors.Is(err, ErrAddr) {
		t.Errorf("AddAddr(::1/128): %v; want ErrAddr", err)
	}
}

// TestSteerUnreach crafts ICMP errors: a port unreachable that quotes an
// sdx frame we sent (served address to the ICMP's source, from the sdx
// port or one of the source port range, to the sdx port) is steered, with as little as the UDP header quoted; every other
// ICMP goes to the kernel, and one from a source nobody may answer is
// dropped.
func TestSteerUnreach(t *testing.T) {
	testutil.Privileged(t)
	s := mustLoadServing(t, testPort, map[netip.Prefix]bool{netip.MustParsePrefix("198.18.0.1/24"): true})
	start := stats(t, s)
	ours := sdxFrom("198.18.0.1", "198.18.0.2", 64)
	const us, peer = "198.18.0.1", "198.18.0.2"
	otherSrcPort := append([]byte(nil), ours...)
	binary.BigEndian.PutUint16(otherSrcPort[ethHLen+20:], 40000)
	// A connection's own source port, from the range (wire.SrcPortMin).
	rangeLow, rangeHigh := append([]byte(nil), ours...), append([]byte(nil), ours...)
	binary.BigEndian.PutUint16(rangeLow[ethHLen+20:], 49152)
	binary.BigEndian.PutUint16(rangeHigh[ethHLen+20:], 65535)
	belowRange := append([]byte(nil), ours...)
	binary.BigEndian.PutUint16(belowRange[ethHLen+20:], 49151)
	withOptions := frame{dport: testPort, payload: 16, ihl: 6, src: us, dst: peer}.bytes()
	binary.BigEndian.PutUint16(withOptions[ethHLen+24:], testPort)
	tcp := frame{dport: testPort, proto: protoTCP, src: us, dst: peer}.bytes()
	for _, c := range []struct {
		name string
		pkt  []byte
		want outcome
	}{
		{"port unreachable, whole frame quoted", icmpFrame(peer, us, 3, 3, ours, 0), unreach},
		{"port unreachable, IPv4 and UDP headers quoted (RFC 792)", icmpFrame(peer, us, 3, 3, ours, 28), unreach},
		{"port unreachable, quoted IPv4 options", icmpFrame(peer, us, 3, 3, withOptions, 0), unreach},
		{"port unreachable, UDP header cut", icmpFrame(peer, us, 3, 3, ours, 27), passed},
		{"port unreachable, IPv4 header cut", icmpFrame(peer, us, 3, 3, ours, 12), passed},
		{"host unreachable", icmpFrame(peer, us, 3, 1, ours, 0), passed},
		{"protocol unreachable", icmpFrame(peer, us, 3, 2, ours, 0), passed},
		{"fragmentation needed", icmpFrame(peer, us, 3, 4, ours, 0), passed},
		{"time exceeded", icmpFrame(peer, us, 11, 0, ours, 0), passed},
		{"echo request", icmpFrame(peer, us, 8, 0, ours, 0), passed},
		{"quoting a frame to another port", icmpFrame(peer, us, 3, 3, otherSrcPort, 0), passed},
		{"quoting a frame from the lowest source port of the range", icmpFrame(peer, us, 3, 3, rangeLow, 0), unreach},
		{"quoting a frame from the highest source port of the range", icmpFrame(peer, us, 3, 3, rangeHigh, 0), unreach},
		{"quoting a frame from just below the range", icmpFrame(peer, us, 3, 3, belowRange, 0), passed},
		{"quoting TCP", icmpFrame(peer, us, 3, 3, tcp, 0), passed},
		{"quoting a frame from another host", icmpFrame(peer, us, 3, 3, sdxFrom("198.18.0.3", peer, 64), 0), passed},
		{"quoting a frame to another host than the sender", icmpFrame(peer, us, 3, 3, sdxFrom(us, "198.18.0.3", 64), 0), passed},
		{"to an address not served", icmpFrame(peer, "198.18.0.9", 3, 3, sdxFrom("198.18.0.9", peer, 64), 0), passed},
		{"from the subnet broadcast", icmpFrame("198.18.0.255", us, 3, 3, sdxFrom(us, "198.18.0.255", 64), 0), spoofed},
	} {
		expect(t, s, c.name, c.pkt, c.want)
	}
	if total := stats(t, s).sub(start); !total.balanced() {
		t.Errorf("counters do not add up: %+v", total)
	}
}
