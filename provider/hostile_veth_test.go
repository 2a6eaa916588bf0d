package provider

// Hostile frames and host safety on the real path: connect and data frames
// from sources nobody may answer, UDP to the sdx port that is not sdx's,
// and ICMP port unreachables, true and forged.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/xdplink"
	"github.com/sdx-project/sdx/xdp"
)

func steerStats(t testing.TB, l *xdplink.Link) bpf.SteerStats {
	t.Helper()
	st, err := l.SteerStats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// sendFrame sends one whole Ethernet frame as it is.
func (r *rawHost) sendFrame(b []byte) error {
	f, ok := r.q.Alloc()
	if !ok {
		r.q.Complete()
		if f, ok = r.q.Alloc(); !ok {
			return errors.New("raw sender: no free UMEM frame")
		}
	}
	n := copy(r.q.Frame(f), b)
	r.tx = append(r.tx, xdp.Desc{Addr: r.q.Addr(f), Len: uint32(n)})
	return r.flush()
}

// sdxDatagram is the IPv4 datagram (IPv4, UDP, sdx header) of h from src
// to dst, as the frame after its Ethernet header.
func sdxDatagram(src, dst frame.Endpoint, h *wire.Header) []byte {
	buf := make([]byte, frame.HeaderLen+wire.HeaderLen+wire.SACKLen*wire.MaxSACK)
	n := h.Put(buf[frame.HeaderLen:], 0)
	flow := frame.Flow{Src: src, Dst: dst}
	l := flow.Encode(buf, n, 1)
	return buf[frame.EthLen:l]
}

// unreachFrame is an ICMP port unreachable from src to dst (Ethernet and
// IPv4 addresses) quoting datagram.
func unreachFrame(src, dst frame.Endpoint, datagram []byte) []byte {
	b := make([]byte, frame.EthLen+frame.IPv4Len+8+len(datagram))
	copy(b[0:6], dst.MAC[:])
	copy(b[6:12], src.MAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[frame.EthLen : frame.EthLen+frame.IPv4Len]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(b)-frame.EthLen))
	ip[8], ip[9] = 64, 1
	s, d := src.IP.As4(), dst.IP.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], frame.Checksum(ip))
	icmp := b[frame.EthLen+frame.IPv4Len:]
	icmp[0], icmp[1] = 3, 3
	copy(icmp[8:], datagram)
	binary.BigEndian.PutUint16(icmp[2:], frame.Checksum(icmp))
	return b
}

// TestSpoofedSourceDrawsNothing sends B connect requests and data frames
// whose IPv4 source is the subnet's broadcast or network address, 0.0.0.0,
// the limited broadcast, a multicast group, loopback or B's own address,
// from C on the hop's hub, where every frame B sends shows. B answers none
// of them (an answer to the broadcast address went to ff:ff:ff:ff:ff:ff,
// one connect drawing five accepts), keeps no half-open connection, and its
// steer program counts every one as spoofed.
func TestSpoofedSourceDrawsNothing(t *testing.T) {
	testutil.CheckGoroutines(t)
	const subnet = 92
	hp, raw := newForger(t, subnet, Config{}, true)
	hp.listen(t, 4)
	bEnd, cEnd := endpointOf(&hp.hop.B), endpointOf(&hp.hop.C)
	fromB := func() (n int) {
		raw.receive(func(p *frame.Parsed, _ *wire.Header, _ []byte) {
			if p.Flow.Src.MAC == bEnd.MAC {
				n++
			}
		})
		return n
	}

	// The control: a connect from C's own address draws an accept that C
	// sees, so the silence below is B's.
	h := wire.Header{Op: wire.OpConnect, SrcPort: 40000, DstPort: hp.portB, SrcConn: 1, Token: 0x5eed, Window: 1 << 16}
	if err := raw.send(cEnd, bEnd, &h, nil, nil); err != nil {
		t.Fatal(err)
	}
	seen := 0
	waitUntil(t, "B's accept to C's connect", func() bool { seen += fromB(); return seen > 0 })
	waitUntil(t, "the half-open connection to expire", func() bool { return hp.b.Stats().HalfOpen == 0 })
	time.Sleep(50 * time.Millisecond)
	fromB()

	b0, s0 := hp.b.Stats(), steerStats(t, hp.lb)
	sources := []string{
		fmt.Sprintf("198.18.%d.255", subnet), fmt.Sprintf("198.18.%d.0", subnet),
		"0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", hp.hop.B.Addr.String(),
	}
	const each = 10
	sent := 0
	for _, s := range sources {
		src := cEnd
		src.IP = netip.MustParseAddr(s)
		for i := range each {
			conn := wire.Header{Op: wire.OpConnect, SrcPort: 40000, DstPort: hp.portB, SrcConn: uint32(100 + i), Token: uint64(i) + 1, Window: 1 << 16}
			data := wire.Header{Op: wire.OpData, Flags: wire.FlagAck, SrcPort: 40000, DstPort: hp.portB, SrcConn: uint32(100 + i), DstConn: 12345, Token: uint64(i) + 1}
			for _, h := range []*wire.Header{&conn, &data} {
				if err := raw.send(src, bEnd, h, nil, nil); err != nil {
					t.Fatal(err)
				}
				sent++
			}
		}
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if steerStats(t, hp.lb).Spoofed-s0.Spoofed >= uint64(sent) {
			break
		}
	}
	time.Sleep(100 * time.Millisecond) // time for answers, were there any
	b, s := hp.b.Stats(), steerStats(t, hp.lb)
	if n := fromB(); n != 0 {
		t.Errorf("B sent %d frames in answer to spoofed sources", n)
	}
	if n := s.Spoofed - s0.Spoofed; n != uint64(sent) {
		t.Errorf("B's steer program counted %d spoofed frames; want %d", n, sent)
	}
	if b.HalfOpen != 0 || b.DatagramsIn != b0.DatagramsIn || b.DatagramsOut != b0.DatagramsOut {
		t.Errorf("B: %d half-open, %d datagrams in, %d out; want none", b.HalfOpen, b.DatagramsIn-b0.DatagramsIn, b.DatagramsOut-b0.DatagramsOut)
	}
}

// TestForeignUDPOnSdxPort gives B a second address and a stack that serves
// it: kernel UDP sockets on the sdx port of B's first address and of the
// subnet's broadcast address receive what A's kernel sends them while the
// stack carries a connection on the second address.
func TestForeignUDPOnSdxPort(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	bed := testbed.New(t, testbed.Options{Subnet: 93})
	served := netip.MustParseAddr("198.18.93.12")
	bcast := netip.MustParseAddr("198.18.93.255")
	if err := testbed.IP("-n", bed.B.NS, "addr", "add", served.String()+"/24", "dev", bed.B.If); err != nil {
		t.Fatal(err)
	}
	lb, err := xdplink.New(xdplink.Config{Netns: bed.B.NS, Interface: bed.B.If, Addr: served})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Startup(Config{Link: lb})
	if err != nil {
		lb.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Cleanup() })
	if lb.LocalAddr() != served {
		t.Fatalf("the link serves %v; want %v", lb.LocalAddr(), served)
	}
	if _, err := xdplink.New(xdplink.Config{Netns: bed.A.NS, Interface: bed.A.If, Addr: served}); err == nil {
		t.Fatal("a link on A serves B's address")
	}
	a, _ := startOn(t, &bed.A, Config{})

	var uni, bc, tx *net.UDPConn
	if err := bed.B.Do(func() (err error) {
		if uni, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bed.B.Addr, DefaultUDPPort))); err != nil {
			return err
		}
		bc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bcast, DefaultUDPPort)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uni.Close()
	defer bc.Close()
	if err := bed.A.Do(func() (err error) {
		tx, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bed.A.Addr, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	rc, err := tx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1) })
	if serr != nil {
		t.Fatal(serr)
	}

	// A connection to the served address, with data both ways around the
	// kernel's datagrams.
	ln := must[Socket](t)(b.Socket())
	if err := b.Bind(ln, netip.AddrPortFrom(served, 5000)); err != nil {
		t.Fatal(err)
	}
	if err := b.Listen(ln, 1); err != nil {
		t.Fatal(err)
	}
	acc := make(chan Socket, 1)
	go func() { r, _, _ := b.Accept(ln); acc <- r }()
	s := must[Socket](t)(a.Socket())
	if err := a.Connect(s, netip.AddrPortFrom(served, 5000)); err != nil {
		t.Fatal(err)
	}
	r := <-acc
	s0 := steerStats(t, lb)
	for i, c := range []struct {
		to *net.UDPConn
		at netip.Addr
	}{{uni, bed.B.Addr}, {bc, bcast}} {
		msg := fmt.Appendf(nil, "kernel datagram %d", i)
		if _, err := tx.WriteToUDPAddrPort(msg, netip.AddrPortFrom(c.at, DefaultUDPPort)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Send(s, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		c.to.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.to.Read(buf)
		if err != nil {
			t.Fatalf("kernel socket on %v:%d: %v", c.at, DefaultUDPPort, err)
		}
		if string(buf[:n]) != string(msg) {
			t.Errorf("kernel socket on %v: %q; want %q", c.at, buf[:n], msg)
		}
		n, err = b.Recv(r, buf)
		if err != nil || string(buf[:n]) != string(msg) {
			t.Fatalf("sdx on %v: %q, %v; want %q", served, buf[:n], err, msg)
		}
	}
	if st := steerStats(t, lb); st.Foreign-s0.Foreign != 2 {
		t.Errorf("B's steer program passed %d datagrams as foreign; want 2 (%+v)", st.Foreign-s0.Foreign, st)
	}
	a.CloseSocket(s)
	b.CloseSocket(r)
	b.CloseSocket(ln)
}

// goneBound is how soon a connection whose peer's stack is gone must fail
// on the port unreachable its next frame draws: the dead-peer bound is
// 10 s, the first keepalive 3.3 s; the benchmark measures milliseconds.
const goneBound = time.Second

// TestVethPeerGone takes B's AF_XDP socket out of B's steer program, as
// when B's process dies: B's kernel answers A's next frame with an ICMP
// port unreachable, and A's pending receive fails with ECONNRESET at once,
// a connect with ECONNREFUSED.
func TestVethPeerGone(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := newVethPair(t, Config{})
	ln := p.listen(t, 4)
	s, r, recvErr, start := peerGone(t, p, ln)
	select {
	case err := <-recvErr:
		el := time.Since(start)
		t.Logf("pending receive: %v after %v", err, el)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("pending receive: %v; want ECONNRESET", err)
		}
		if el > goneBound {
			t.Fatalf("pending receive failed after %v; want within %v", el, goneBound)
		}
	case <-time.After(3 * goneBound):
		t.Fatalf("pending receive still blocked %v after the peer's socket went", 3*goneBound)
	}
	if n := p.a.Stats().Unreachables; n != 1 {
		t.Errorf("A's Unreachables %d; want 1", n)
	}

	c := must[Socket](t)(p.a.Socket())
	start = time.Now()
	err := p.a.Connect(c, netip.AddrPortFrom(p.bed.B.Addr, p.portB))
	if el := time.Since(start); !errors.Is(err, syscall.ECONNREFUSED) || el > goneBound {
		t.Fatalf("connect to a host whose stack is gone: %v after %v; want ECONNREFUSED within %v", err, el, goneBound)
	}
	if st := steerStats(t, p.la); st.Unreach < 2 {
		t.Errorf("A's steer program steered %d port unreachables; want at least 2", st.Unreach)
	}
	p.a.CloseSocket(s)
	p.a.CloseSocket(c)
	p.b.CloseSocket(r)
}

// TestForgedUnreachable has C, on the hop's hub, read a data frame of a live
// connection from A to B and send A port unreachables that quote it with
// one thing wrong each: the token, an id, a port, the quoted destination,
// the ICMP's source, or a quote cut after the UDP header. The connection
// lives on, and carries data; the genuine article, which only a reader of
// the wire can make, kills it, as a reset with the token would.
func TestForgedUnreachable(t *testing.T) {
	hp, raw := newForger(t, 94, Config{}, true)
	s, r := hp.connectPair(t, hp.listen(t, 4))
	roundTrip := func() error {
		buf := make([]byte, 16)
		if _, err := hp.a.Send(s, []byte("ping")); err != nil {
			return err
		}
		if _, err := hp.b.Recv(r, buf); err != nil {
			return err
		}
		if _, err := hp.b.Send(r, []byte("pong")); err != nil {
			return err
		}
		_, err := hp.a.Recv(s, buf)
		return err
	}
	var seen wire.Header
	deadline := time.Now().Add(5 * time.Second)
	for seen.Op != wire.OpData {
		if err := roundTrip(); err != nil {
			t.Fatal(err)
		}
		raw.receive(func(p *frame.Parsed, h *wire.Header, _ []byte) {
			if h.Op == wire.OpData && p.Flow.Src.IP == hp.hop.A.Addr {
				seen = *h
			}
		})
		if time.Now().After(deadline) {
			t.Fatal("C saw no data frame from A")
		}
	}
	aEnd, bEnd, cEnd := endpointOf(&hp.hop.A), endpointOf(&hp.hop.B), endpointOf(&hp.hop.C)
	asB := bEnd
	asB.MAC = cEnd.MAC
	with := func(f func(h *wire.Header)) []byte {
		h := seen
		if f != nil {
			f(&h)
		}
		return sdxDatagram(aEnd, bEnd, &h)
	}
	toC := func() []byte { h := seen; return sdxDatagram(aEnd, cEnd, &h) }
	a0, s0 := hp.a.Stats(), steerStats(t, hp.la)
	forged := []struct {
		name     string
		from     frame.Endpoint
		quoted   []byte
		toEngine bool // passes the steer program and the link: the engine judges
	}{
		{"wrong token", asB, with(func(h *wire.Header) { h.Token ^= 1 << 33 }), true},
		{"wrong src conn", asB, with(func(h *wire.Header) { h.SrcConn ^= 1 }), true},
		{"wrong dst conn", asB, with(func(h *wire.Header) { h.DstConn ^= 1 }), true},
		{"wrong stream port", asB, with(func(h *wire.Header) { h.SrcPort++ }), true},
		{"IPv4 and UDP headers only", asB, with(nil)[:frame.IPv4Len+frame.UDPLen], true},
		{"quoting a frame to C", asB, toC(), false},
		{"from C's address", cEnd, with(nil), false},
	}
	engine := 0
	for _, f := range forged {
		if err := raw.sendFrame(unreachFrame(f.from, aEnd, f.quoted)); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if f.toEngine {
			engine++
		}
	}
	waitUntil(t, "A to count the forged unreachables", func() bool {
		return hp.a.Stats().Drops.Unreach-a0.Drops.Unreach >= uint64(engine)
	})
	if err := roundTrip(); err != nil {
		t.Fatalf("the connection after forged unreachables: %v", err)
	}
	a, st := hp.a.Stats(), steerStats(t, hp.la)
	if n := a.Drops.Unreach - a0.Drops.Unreach; n != uint64(engine) || a.Unreachables != 0 {
		t.Errorf("A dropped %d forged unreachables, took %d; want %d dropped, none taken", n, a.Unreachables, engine)
	}
	if n := st.Unreach - s0.Unreach; n != uint64(engine) {
		t.Errorf("A's steer program steered %d unreachables; want %d", n, engine)
	}

	recvErr := make(chan error, 1)
	go func() {
		_, err := hp.a.Recv(s, make([]byte, 16))
		recvErr <- err
	}()
	if err := raw.sendFrame(unreachFrame(asB, aEnd, with(nil))); err != nil {
		t.Fatal(err)
	}
	waitReset(t, recvErr, 5*time.Second, "pending receive after the genuine unreachable")
	hp.a.CloseSocket(s)
	hp.b.CloseSocket(r)
}

// peerGone connects A to B's listener ln, starts a receive on A, takes
// B's AF_XDP socket out of its steer program and sends A's request: the
// receive's error arrives on recvErr; start is when the socket went.
func peerGone(tb testing.TB, p *vethPair, ln Socket) (s, r Socket, recvErr <-chan error, start time.Time) {
	tb.Helper()
	s = p.dial(tb)
	r, _, err := p.b.Accept(ln)
	if err != nil {
		tb.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := p.a.Recv(s, make([]byte, 64))
		errc <- err
	}()
	start = time.Now()
	if err := p.lb.SetSteered(false); err != nil {
		tb.Fatal(err)
	}
	if _, err := p.a.Send(s, []byte("request")); err != nil {
		tb.Fatal(err)
	}
	return s, r, errc, start
}

// BenchmarkDeadPeerDetection measures how long a pending receive takes to
// fail after the peer's stack is gone: B's socket leaves its steer program
// (as when B's process dies; B's kernel then answers sdx frames with port
// unreachables), A sends a request, and its pending receive fails on the
// ICMP. detect-ms is the mean from the socket's removal to the failure,
// max-ms the longest. B's namespace has ICMP rate limiting off, so that
// every round meets a fresh kernel's first answer.
func BenchmarkDeadPeerDetection(b *testing.B) {
	p := newVethPair(b, Config{})
	if err := testbed.IP("netns", "exec", p.bed.B.NS, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"); err != nil {
		b.Fatal(err)
	}
	ln := p.listen(b, 4)
	var total, worst time.Duration
	n := 0
	for b.Loop() {
		s, r, recvErr, start := peerGone(b, p, ln)
		waitReset(b, recvErr, 3*goneBound, "pending receive")
		el := time.Since(start)
		total += el
		worst = max(worst, el)
		n++
		if err := p.lb.SetSteered(true); err != nil {
			b.Fatal(err)
		}
		p.a.CloseSocket(s)
		p.b.CloseSocket(r)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(n)/1000, "detect-ms")
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
}
