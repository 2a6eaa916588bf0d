package xdp_test

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/xdp"
)

const testPort = 4791

// pair is a testbed with the steer program on both ends and one queue on
// each: A sends to B.
type pair struct {
	bed            *testbed.Bed
	steerA, steerB *xdp.Steering
	a, b           *xdp.Queue
	flow           frame.Flow // A to B
}

func newPair(t *testing.T, cfg xdp.Config) *pair {
	t.Helper()
	return newPairOn(t, cfg, testbed.Options{})
}

// newPairOn is newPair on a testbed with options o.
func newPairOn(t *testing.T, cfg xdp.Config, o testbed.Options) *pair {
	t.Helper()
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	testutil.CheckFDs(t)
	p := &pair{bed: testbed.New(t, o)}
	for _, h := range []struct {
		host  *testbed.Host
		steer **xdp.Steering
		q     **xdp.Queue
	}{{&p.bed.A, &p.steerA, &p.a}, {&p.bed.B, &p.steerB, &p.b}} {
		s, err := xdp.AttachSteer(xdp.SteerConfig{Netns: h.host.NS, Interface: h.host.If, Port: testPort})
		if err != nil {
			t.Fatalf("attach on %s: %v", h.host.NS, err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("detach: %v", err)
			}
		})
		c := cfg
		c.Netns, c.Interface = h.host.NS, h.host.If
		q, err := xdp.Open(c)
		if err != nil {
			t.Fatalf("open queue on %s: %v", h.host.NS, err)
		}
		// Closing checks the frame accounting: every frame back in the pool.
		t.Cleanup(func() {
			if err := q.Close(); err != nil {
				t.Errorf("close queue: %v", err)
			}
		})
		if err := s.Register(q); err != nil {
			t.Fatal(err)
		}
		*h.steer, *h.q = s, q
	}
	p.flow = frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(p.bed.A.MAC), IP: p.bed.A.Addr, Port: 40000},
		Dst: frame.Endpoint{MAC: [6]byte(p.bed.B.MAC), IP: p.bed.B.Addr, Port: testPort},
	}
	return p
}

// payload fills b with the seeded bytes of frame seq: an 8-byte sequence
// number, then bytes from a PCG seeded with (seed, seq). The receiver
// regenerates them instead of storing what was sent.
func payload(b []byte, seed, seq uint64) []byte {
	var g rand.PCG
	g.Seed(seed, seq)
	n := 8 + int(g.Uint64()%1400)
	b = b[:n]
	binary.BigEndian.PutUint64(b, seq)
	for i := 8; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], g.Uint64())
		copy(b[i:], w[:])
	}
	return b
}

// send builds and queues frames seq..seq+n-1 from q; it returns how many it
// queued (fewer when frames or tx slots run out).
func send(q *xdp.Queue, flow *frame.Flow, seed, seq uint64, n int) int {
	var descs [64]xdp.Desc
	n = min(n, len(descs))
	built := 0
	for ; built < n; built++ {
		f, ok := q.Alloc()
		if !ok {
			break
		}
		buf := q.Frame(f)
		pl := payload(buf[frame.HeaderLen:], seed, seq+uint64(built))
		l := flow.Encode(buf, len(pl), uint16(seq))
		descs[built] = xdp.Desc{Addr: q.Addr(f), Len: uint32(l)}
	}
	queued := q.Transmit(descs[:built])
	for _, d := range descs[queued:built] {
		q.Release(q.FrameOf(d))
	}
	return queued
}

func TestTransferByteExact(t *testing.T) {
	p := newPair(t, xdp.Config{})
	total := 100000
	if testing.Short() {
		total = 10000
	}
	// The window stays below veth's 256-frame ring, so nothing is overrun.
	const seed, window = 42, 128
	var (
		sent, got int
		descs     [64]xdp.Desc
		want      = make([]byte, 2048)
		parsed    frame.Parsed
	)
	deadline := time.Now().Add(2 * time.Minute)
	for got < total {
		if time.Now().After(deadline) {
			ss, _ := p.steerB.Stats()
			ks, _ := p.b.KernelStats()
			t.Fatalf("timed out: sent %d, received %d; A %+v; B %+v; steer %+v; kernel %+v", sent, got, p.a.Stats(), p.b.Stats(), ss, ks)
		}
		if n := min(total-sent, window-(sent-got)); n > 0 {
			sent += send(p.a, &p.flow, seed, uint64(sent), n)
			if err := p.a.Kick(); err != nil {
				t.Fatal(err)
			}
		}
		p.a.Complete()
		n := p.b.Receive(descs[:])
		for _, d := range descs[:n] {
			data := p.b.Data(d)
			if err := frame.Parse(data, &parsed); err != nil {
				t.Fatalf("frame %d: %v", got, err)
			}
			if parsed.Flow != p.flow {
				t.Fatalf("frame %d: flow %+v, want %+v", got, parsed.Flow, p.flow)
			}
			w := payload(want, seed, uint64(got))
			if string(parsed.Payload) != string(w) {
				t.Fatalf("frame %d: payload differs (len %d, want %d; seq %d)", got, len(parsed.Payload), len(w), binary.BigEndian.Uint64(parsed.Payload))
			}
			p.b.Release(p.b.FrameOf(d))
			got++
		}
		p.b.Refill()
		if n == 0 && sent-got >= window {
			if _, err := p.b.Wait(10 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
	}
	ks, err := p.b.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	if ks.RxRingFull != 0 || ks.RxDropped != 0 || p.a.Stats().TxDropped != 0 {
		t.Fatalf("frames dropped: receiver %+v, sender %+v", ks, p.a.Stats())
	}
	ss, err := p.steerB.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if ss.Redirected != uint64(total) {
		t.Fatalf("steer redirected %d frames, want %d (%+v)", ss.Redirected, total, ss)
	}
	if err := p.a.Pool().Check(); err != nil {
		t.Fatal(err)
	}
	if err := p.b.Pool().Check(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d frames byte-exact; A %+v; B %+v; mode %v/%v", got, p.a.Stats(), p.b.Stats(), p.b.Mode(), p.steerB.Mode())
}

func TestOverrunIsCounted(t *testing.T) {
	p := newPair(t, xdp.Config{NumFrames: 256, FillSize: 64, RxSize: 64, CompletionSize: 256, TxSize: 256})
	const total = 1000
	sent := 0
	for sent < total {
		n := send(p.a, &p.flow, 7, uint64(sent), total-sent)
		if err := p.a.Kick(); err != nil {
			t.Fatal(err)
		}
		p.a.Complete()
		sent += n
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	var descs [64]xdp.Desc
	got := 0
	for {
		n := p.b.Receive(descs[:])
		if n == 0 {
			break
		}
		for _, d := range descs[:n] {
			p.b.Release(p.b.FrameOf(d))
		}
		got += n
	}
	ks, err := p.b.KernelStats()
	if err != nil {
		t.Fatal(err)
	}
	ss, err := p.steerB.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// Every frame is accounted for: dropped by veth on transmit (the
	// sender's TxDropped), or redirected and then received or dropped at
	// the receiving socket (the kernel's counters).
	txDropped := p.a.Stats().TxDropped
	rxLost := ks.RxRingFull + ks.RxDropped
	t.Logf("sent %d: tx dropped %d, redirected %d: received %d, rx ring full %d, rx dropped %d", total, txDropped, ss.Redirected, got, ks.RxRingFull, ks.RxDropped)
	if got >= total || rxLost+txDropped == 0 {
		t.Fatalf("expected an overrun: received %d of %d", got, total)
	}
	if ss.Redirected+txDropped != total || uint64(got)+rxLost != ss.Redirected {
		t.Fatalf("overrun not accounted: sent %d != redirected %d + tx dropped %d, or redirected != received %d + rx lost %d", total, ss.Redirected, txDropped, got, rxLost)
	}
}

func TestWakeStopsBlockedWait(t *testing.T) {
	p := newPair(t, xdp.Config{})
	done := make(chan error, 1)
	go func() {
		woken, err := p.b.Wait(-1)
		if err == nil && !woken {
			err = errors.New("Wait returned without a wake or a frame")
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	p.b.Wake()
	testutil.NoErrWithin(t, done, 2*time.Second, "Wake, stopping a Wait blocked in poll")
}

// TestHostTrafficUnaffected proves the steer program leaves everything that
// is not sdx to the kernel: TCP and UDP on other ports, ARP and ICMP, both
// ways, and the sdx port itself while no socket is registered.
func TestHostTrafficUnaffected(t *testing.T) {
	p := newPair(t, xdp.Config{})
	ab := []*testbed.Host{&p.bed.A, &p.bed.B}
	for i, from := range ab {
		to := ab[1-i]
		t.Run(from.If+"->"+to.If, func(t *testing.T) {
			// Force ARP: flush the neighbour table first.
			if err := testbed.IP("-n", from.NS, "neigh", "flush", "dev", from.If); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("ip", "netns", "exec", from.NS, "ping", "-c2", "-i0.1", "-W2", to.Addr.String()).CombinedOutput()
			if err != nil {
				t.Fatalf("ICMP: %v\n%s", err, out)
			}
			neigh, _ := exec.Command("ip", "-n", from.NS, "neigh", "show", to.Addr.String()).CombinedOutput()
			if !strings.Contains(string(neigh), to.MAC.String()) {
				t.Fatalf("ARP did not resolve %v: %s", to.Addr, neigh)
			}
			if err := testutil.TCPEcho(from.NS, to.NS, to.Addr, 7000, 1<<20); err != nil {
				t.Fatalf("TCP: %v", err)
			}
			if err := testutil.UDPEcho(from.NS, to.NS, to.Addr, 7001); err != nil {
				t.Fatalf("UDP: %v", err)
			}
		})
	}
	if err := p.steerB.Unregister(0); err != nil {
		t.Fatal(err)
	}
	if err := testutil.UDPEcho(p.bed.A.NS, p.bed.B.NS, p.bed.B.Addr, testPort); err != nil {
		t.Fatalf("UDP to the sdx port with no socket registered: %v", err)
	}
	ss, err := p.steerB.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if ss.Passed == 0 || ss.NoSocket == 0 || ss.Redirected != 0 {
		t.Fatalf("steer counters: %+v", ss)
	}
}

func TestInterfaceDownIsAnError(t *testing.T) {
	p := newPair(t, xdp.Config{})
	if err := testbed.IP("-n", p.bed.A.NS, "link", "set", "dev", p.bed.A.If, "down"); err != nil {
		t.Fatal(err)
	}
	send(p.a, &p.flow, 1, 0, 8)
	err := p.a.Kick()
	if !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("Kick on a downed interface: %v, want ENETDOWN", err)
	}
	if p.a.TxPending() == 0 {
		t.Fatal("frames vanished from the accounting")
	}
	// Close (in cleanup) must still account for the frames left on the ring.
}

// queueOnA makes a testbed and opens a queue on its host A; the test's
// end closes the queue if the test did not.
func queueOnA(t *testing.T) (*testbed.Bed, *xdp.Queue) {
	t.Helper()
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	bed := testbed.New(t, testbed.Options{})
	q, err := xdp.Open(xdp.Config{Netns: bed.A.NS, Interface: bed.A.If})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return bed, q
}

// TestPeerNamespaceGone removes the peer's namespace, which takes the veth
// pair with it: transmits report the link down, then gone, each as a
// LinkError matching ENETDOWN, and Close still accounts for every frame.
func TestPeerNamespaceGone(t *testing.T) {
	bed, q := queueOnA(t)
	flow := frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(bed.A.MAC), IP: bed.A.Addr, Port: 40000},
		Dst: frame.Endpoint{MAC: [6]byte(bed.B.MAC), IP: bed.B.Addr, Port: testPort},
	}
	err := testbed.IP("netns", "del", bed.B.NS)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel dismantles a namespace asynchronously: the link may go
	// down (ENETDOWN) before it is gone (ENXIO).
	deadline := time.Now().Add(10 * time.Second)
	for !errors.Is(err, unix.ENXIO) && time.Now().Before(deadline) {
		send(q, &flow, 1, 0, 8)
		err = q.Kick()
		q.Complete()
		time.Sleep(5 * time.Millisecond)
	}
	var le *xdp.LinkError
	if !errors.Is(err, unix.ENETDOWN) || !errors.As(err, &le) || !errors.Is(err, unix.ENXIO) {
		t.Fatalf("Kick after the peer namespace went: %v, want a LinkError matching ENETDOWN (ENXIO)", err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("Close after the interface vanished: %v", err)
	}
}

func TestOpenInMissingNamespace(t *testing.T) {
	testutil.Privileged(t)
	_, err := xdp.Open(xdp.Config{Netns: "sdx-no-such-namespace", Interface: "a"})
	if err == nil || !strings.Contains(err.Error(), "sdx-no-such-namespace") {
		t.Fatalf("Open in a missing namespace: %v", err)
	}
}

// TestSteerRedirectVerdict runs the steer program through BPF_PROG_TEST_RUN
// with a real AF_XDP socket registered: an sdx frame gets XDP_REDIRECT, any
// other UDP port XDP_PASS.
func TestSteerRedirectVerdict(t *testing.T) {
	testutil.Privileged(t)
	bed := testbed.New(t, testbed.Options{})
	q, err := xdp.Open(xdp.Config{Netns: bed.B.NS, Interface: bed.B.If})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	s, err := bpf.LoadSteer(testPort)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddAddr(netip.PrefixFrom(bed.B.Addr, bed.Prefix.Bits()), true); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Register(0, q.FD()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	flow := frame.Flow{
		Src: frame.Endpoint{MAC: [6]byte(bed.A.MAC), IP: bed.A.Addr, Port: 40000},
		Dst: frame.Endpoint{MAC: [6]byte(bed.B.MAC), IP: bed.B.Addr, Port: testPort},
	}
	for _, c := range []struct {
		port uint16
		want uint32
	}{{testPort, 4 /* XDP_REDIRECT */}, {testPort + 1, 2 /* XDP_PASS */}} {
		flow.Dst.Port = c.port
		n := flow.Encode(buf, 32, 1)
		got, err := s.Program().Run(&ebpf.RunOptions{Data: buf[:n]})
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("port %d: verdict %d, want %d", c.port, got, c.want)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Redirected != 1 || st.Passed != 1 {
		t.Fatalf("counters %+v", st)
	}
}

// TestZeroCopyRefused: a queue asks for zero-copy first; veth refuses it,
// and the queue runs in copy mode and says why. With ForceCopy it does not
// ask.
func TestZeroCopyRefused(t *testing.T) {
	p := newPair(t, xdp.Config{})
	if p.a.Mode() != xdp.ModeCopy {
		t.Fatalf("mode %v on veth, want copy", p.a.Mode())
	}
	if err := p.a.ZeroCopyErr(); err == nil {
		t.Fatal("copy mode on veth without a refused zero-copy bind: zero-copy was never asked for")
	} else {
		t.Logf("zero-copy refused: %v", err)
	}
	f := newPair(t, xdp.Config{ForceCopy: true})
	if f.a.Mode() != xdp.ModeCopy || f.a.ZeroCopyErr() != nil {
		t.Fatalf("ForceCopy: mode %v, zero-copy error %v; want copy, none", f.a.Mode(), f.a.ZeroCopyErr())
	}
	// Both modes move frames: the transfer tests run on such queues.
}
