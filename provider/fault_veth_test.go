package provider

// Loss on the real path: a provider on A and on B of a hop testbed
// (testbed.Hop), with bpf's sdx_fault on the hop's ports dropping sdx
// frames, seeded, at a rate or by opcode. The frames really go missing
// between two AF_XDP sockets; the hosts run the production steer program
// and the AF_XDP link unchanged.

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/sdx-project/sdx/bpf"
	"github.com/sdx-project/sdx/internal/testbed"
	"github.com/sdx-project/sdx/internal/testutil"
	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/xdplink"
)

// hopPair is a provider on A and on B of a hop testbed, with one sdx_fault
// program attached to both of the hop's ports: its settings apply to both
// directions. Until configured it passes every frame.
type hopPair struct {
	*vethPair // on the hop's A and B
	hop       *testbed.Hop
	fault     *bpf.Fault
}

// newHopPair makes a hopPair; the test's cleanup checks that no goroutine
// of it is left.
func newHopPair(t testing.TB, o testbed.HopOptions, cfg Config) *hopPair {
	t.Helper()
	testutil.Privileged(t)
	testutil.CheckGoroutines(t)
	hop := testbed.NewHop(t, o)
	hp := &hopPair{hop: hop, vethPair: &vethPair{bed: &testbed.Bed{A: hop.A, B: hop.B, Prefix: hop.Prefix}, portB: 5000}}
	f, err := bpf.LoadFault()
	if err != nil {
		t.Fatalf("load fault: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	hp.fault = f
	for _, port := range []*testbed.Host{&hp.hop.RA, &hp.hop.RB} {
		var l link.Link
		if err := port.Do(func() (err error) {
			l, _, err = bpf.Attach(f.Program(), port.Index, bpf.ModeNative)
			return err
		}); err != nil {
			t.Fatalf("attach fault to %s: %v", port.If, err)
		}
		t.Cleanup(func() { l.Close() })
	}
	hp.a, hp.la = startOn(t, &hp.hop.A, cfg)
	hp.b, hp.lb = startOn(t, &hp.hop.B, cfg)
	return hp
}

// configure sets the fault program's settings; the port is always sdx's.
func (hp *hopPair) configure(t testing.TB, c bpf.FaultConfig) {
	t.Helper()
	c.Port = DefaultUDPPort
	if err := hp.fault.Configure(c); err != nil {
		t.Fatalf("configure fault %+v: %v", c, err)
	}
}

func (hp *hopPair) faultStats(t testing.TB) bpf.FaultStats {
	t.Helper()
	st, err := hp.fault.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// streamResult is what one seeded transfer did.
type streamResult struct {
	n       int64
	elapsed time.Duration
}

// drained is what drainAsync's receiver got: the length of the stream,
// checked byte for byte, and the error that ended it.
type drained struct {
	n   int64
	err error
}

// drainAsync receives r's stream, seed's bytes, on q in chunks of up to
// chunk bytes until it ends, on a goroutine of its own, and delivers what
// it got.
func drainAsync(q *Provider, r Socket, seed uint64, chunk int) <-chan drained {
	got := make(chan drained, 1)
	go func() {
		n, err := recvSeeded(func(b []byte) (int, error) { return q.Recv(r, b) }, seed, chunk)
		got <- drained{n, err}
	}()
	return got
}

// sendStream sends size seeded bytes from a to b over one new connection,
// ends the stream, and checks on b that exactly those bytes arrived in
// order. Both sockets are closed at the end.
func sendStream(p, q *Provider, s, r Socket, seed uint64, size int64) (streamResult, error) {
	got := drainAsync(q, r, seed, 64<<10)
	start := time.Now()
	err := sendSeeded(func(b []byte) (int, error) { return p.Send(s, b) }, seed, size, 61<<10)
	if err == nil {
		err = p.Shutdown(s)
	}
	if err != nil {
		// Unblock the reader: a hard close resets its connection.
		p.CloseSocket(s)
		<-got
		return streamResult{}, fmt.Errorf("send: %w", err)
	}
	d := <-got
	res := streamResult{n: d.n, elapsed: time.Since(start)}
	if d.err != nil {
		return res, fmt.Errorf("receive after %d bytes: %w", d.n, d.err)
	}
	if d.n != size {
		return res, fmt.Errorf("received %d of %d bytes", d.n, size)
	}
	return res, nil
}

// stream connects a new pair to ln, streams size bytes of seed's data
// from A to B over it (sendStream), closes both ends and returns the
// result; a failed stream fails t, the message led by what.
func (hp *hopPair) stream(t testing.TB, ln Socket, seed uint64, size int64, what string) streamResult {
	t.Helper()
	s, r := hp.connectPair(t, ln)
	res, err := sendStream(hp.a, hp.b, s, r, seed, size)
	hp.a.CloseSocket(s)
	hp.b.CloseSocket(r)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return res
}

// TestFaultLossTransfer moves a seeded stream from A to B while sdx_fault
// drops 1%, 5% and 20% of the sdx frames in both directions (data one
// way, acks the other): every byte arrives, in order (checked one by
// one), and the hop's counters show the loss really happened at the
// rate asked for.
func TestFaultLossTransfer(t *testing.T) {
	hp := newHopPair(t, testbed.HopOptions{Subnet: 30}, Config{})
	ln := hp.listen(t, 16)
	for i, c := range lossCases() {
		t.Run(fmt.Sprintf("loss=%v", c.rate), func(t *testing.T) {
			size := c.size
			if testing.Short() {
				size = min(size, 8<<20)
			}
			hp.configure(t, bpf.FaultConfig{DropRate: c.rate, Seed: uint64(100 + i)})
			f0, a0, b0 := hp.faultStats(t), hp.a.Stats(), hp.b.Stats()
			res := hp.stream(t, ln, uint64(i+1), size, fmt.Sprintf("%d MiB at %v loss", size>>20, c.rate))
			f := subFault(hp.faultStats(t), f0)
			a, b := hp.a.Stats(), hp.b.Stats()
			rate := float64(f.Dropped) / float64(f.Eligible)
			t.Logf("%d MiB at %v loss: %v, %.1f MB/s; hop: %d of %d sdx frames dropped (%.4f); A: %d data out, %d retransmits (%d fast), %d timer expiries; B: %d acks out, %d duplicates dropped",
				size>>20, c.rate, res.elapsed.Round(time.Millisecond), float64(size)/res.elapsed.Seconds()/1e6,
				f.Dropped, f.Eligible, rate,
				a.DataOut-a0.DataOut, a.Retransmits-a0.Retransmits, a.FastRetransmits-a0.FastRetransmits, a.RTOExpiries-a0.RTOExpiries,
				b.AcksOut-b0.AcksOut, b.Drops.Duplicate-b0.Drops.Duplicate)
			// The loss was real: the hop dropped about the rate asked for,
			// and A had to retransmit at least what was dropped of its data.
			if f.Dropped == 0 || rate < c.rate/2 || rate > c.rate*2 {
				t.Errorf("hop dropped %d of %d frames (%.4f); want about %v", f.Dropped, f.Eligible, rate, c.rate)
			}
			if a.Retransmits == a0.Retransmits {
				t.Errorf("no retransmissions at %v loss", c.rate)
			}
		})
	}
	hp.configure(t, bpf.FaultConfig{})
	checkQuiet(t, hp.a, hp.b)
}

// lossCase is one loss rate and the bytes moved through it.
type lossCase struct {
	rate float64
	size int64
}

func subFault(a, b bpf.FaultStats) bpf.FaultStats {
	return bpf.FaultStats{Seen: a.Seen - b.Seen, Eligible: a.Eligible - b.Eligible, Dropped: a.Dropped - b.Dropped, Passed: a.Passed - b.Passed}
}

// checkQuiet waits until the providers hold no data and no sockets, then
// checks their buffer accounting.
func checkQuiet(t testing.TB, ps ...*Provider) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range ps {
		for {
			st := p.Stats()
			sum := st.BuffersFree + st.BuffersSendQueued + st.BuffersInFlight + st.BuffersOutOfOrder + st.BuffersRecvQueued + st.BuffersSending
			if st.BuffersFree == st.Buffers && st.HeldBuffers == 0 && st.OpsInUse == 0 && sum == st.Buffers {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("provider not back to rest: %d of %d buffers free (places sum to %d), %d held by the link, %d ops in use, %d sockets",
					st.BuffersFree, st.Buffers, sum, st.HeldBuffers, st.OpsInUse, st.Sockets)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestFaultAcksLost drops pure acks only, half of them, in both
// directions, while A streams to B: B's acks are all pure acks (it sends
// no data), so half its acknowledgements and window updates go missing,
// and every byte still arrives in order. Dropping every pure ack is
// survivable too (TestEngineAllPureAcksLostZeroWindow): probes are
// answered with probes.
func TestFaultAcksLost(t *testing.T) {
	hp := newHopPair(t, testbed.HopOptions{Subnet: 31}, Config{})
	ln := hp.listen(t, 4)
	hp.configure(t, bpf.FaultConfig{DropRate: 0.5, Opcodes: []uint8{uint8(wire.OpAck)}, Seed: 1})
	f0, a0, b0 := hp.faultStats(t), hp.a.Stats(), hp.b.Stats()
	s, r := hp.connectPair(t, ln)
	size := scaled[int64](64<<20, 4<<20)
	res, err := sendStream(hp.a, hp.b, s, r, 7, size)
	if err != nil {
		t.Fatal(err)
	}
	f := subFault(hp.faultStats(t), f0)
	a, b := hp.a.Stats(), hp.b.Stats()
	acks := a.AcksOut - a0.AcksOut + b.AcksOut - b0.AcksOut
	t.Logf("%d MiB in %v (%.1f MB/s) with half the acks dropped: hop dropped %d of %d acks; A %d retransmits, %d timer expiries; B %d acks out",
		size>>20, res.elapsed.Round(time.Millisecond), float64(size)/res.elapsed.Seconds()/1e6, f.Dropped, f.Eligible,
		a.Retransmits-a0.Retransmits, a.RTOExpiries-a0.RTOExpiries, b.AcksOut-b0.AcksOut)
	if f.Dropped == 0 || f.Eligible != acks {
		t.Errorf("hop: %+v; want only the %d acks eligible, some dropped", f, acks)
	}
	hp.a.CloseSocket(s)
	hp.b.CloseSocket(r)
	checkQuiet(t, hp.a, hp.b)
}

// TestFaultResetLost is issue 4's point 6 on the real path: the reset of a
// hard close is lost on the wire, and the peer is reset all the same by
// the answer to its next frame. The connection survives nothing it
// should not: the peer's pending receive fails with ECONNRESET.
func TestFaultResetLost(t *testing.T) {
	hp := newHopPair(t, testbed.HopOptions{Subnet: 32}, Config{})
	s, r := hp.connectPair(t, hp.listen(t, 4))
	// The next reset on the wire, whichever way, is dropped; later ones
	// pass.
	hp.configure(t, bpf.FaultConfig{Opcodes: []uint8{uint8(wire.OpReset)}, DropNext: 1, Seed: 2})
	f0 := hp.faultStats(t)
	recvErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 16)
		_, err := hp.b.Recv(r, buf)
		recvErr <- err
	}()
	time.Sleep(10 * time.Millisecond) // let B's receive be pending
	a0 := hp.a.Stats()
	if err := hp.a.CloseSocket(s); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the reset to be dropped at the hop", func() bool { return hp.faultStats(t).Dropped-f0.Dropped == 1 })
	select {
	case err := <-recvErr:
		t.Fatalf("B's receive ended with %v although the reset was lost", err)
	case <-time.After(20 * time.Millisecond):
	}
	// B's next frame (data here; a keepalive probe otherwise) reaches a
	// connection A no longer has: A answers with a reset, which passes.
	start := time.Now()
	if _, err := hp.b.Send(r, []byte("anyone there?")); err != nil {
		t.Fatalf("send on B: %v", err)
	}
	waitReset(t, recvErr, 5*time.Second, "B's pending receive, after its next frame,")
	f := subFault(hp.faultStats(t), f0)
	a, b := hp.a.Stats(), hp.b.Stats()
	t.Logf("B reset %v after its next frame; hop %+v; A: %d resets out, %d unknown-connection drops; B: %d resets in",
		time.Since(start).Round(time.Microsecond), f, a.ResetsOut-a0.ResetsOut, a.Drops.UnknownConn-a0.Drops.UnknownConn, b.ResetsIn)
	if f.Dropped != 1 || f.Eligible < 2 {
		t.Errorf("hop: %+v; want the first reset dropped and a later one passed", f)
	}
	if a.Drops.UnknownConn-a0.Drops.UnknownConn == 0 || a.ResetsOut-a0.ResetsOut < 2 || b.ResetsIn != 1 {
		t.Errorf("A: %d unknown-connection drops, %d resets out; B: %d resets in; want ≥1, ≥2, 1",
			a.Drops.UnknownConn-a0.Drops.UnknownConn, a.ResetsOut-a0.ResetsOut, b.ResetsIn)
	}
	hp.b.CloseSocket(r)
	checkQuiet(t, hp.a, hp.b)
}

// TestFaultConnectRepliesLost drops connect replies: lost accepts make the
// connector repeat its request, the listener answers the repeat with the
// same accept (no second connection), and the connection then carries a
// stream; a lost reject delays ECONNREFUSED by a retransmission, no more.
func TestFaultConnectRepliesLost(t *testing.T) {
	hp := newHopPair(t, testbed.HopOptions{Subnet: 33}, Config{})
	ln := hp.listen(t, 4)
	const lost = 3
	hp.configure(t, bpf.FaultConfig{Opcodes: []uint8{uint8(wire.OpAccept), uint8(wire.OpReject)}, DropNext: lost, Seed: 3})
	f0, a0, b0 := hp.faultStats(t), hp.a.Stats(), hp.b.Stats()
	start := time.Now()
	s, r := hp.connectPair(t, ln)
	el := time.Since(start)
	f, a, b := subFault(hp.faultStats(t), f0), hp.a.Stats(), hp.b.Stats()
	t.Logf("connected in %v past %d lost accepts; hop %+v; A %d connect retransmissions", el.Round(time.Microsecond), lost, f, a.RTOExpiries-a0.RTOExpiries)
	// B repeats its accept on its own timer and in answer to each
	// repeated connect request, so more than lost+1 may cross the hop.
	if f.Dropped != lost || f.Eligible < lost+1 {
		t.Errorf("hop: %+v; want %d accepts dropped and at least one passed", f, lost)
	}
	if a.RTOExpiries-a0.RTOExpiries == 0 {
		t.Error("A never repeated its connect request")
	}
	if b.DatagramsIn-b0.DatagramsIn < 2 {
		t.Errorf("B received %d datagrams; want the repeated connect requests", b.DatagramsIn-b0.DatagramsIn)
	}
	if st := hp.b.Stats(); st.Sockets != 2 { // the listener and r
		t.Errorf("B has %d sockets after the repeated connects; want 2 (no ghost connection)", st.Sockets)
	}
	if _, err := sendStream(hp.a, hp.b, s, r, 9, 1<<20); err != nil {
		t.Fatal(err)
	}
	hp.a.CloseSocket(s)
	hp.b.CloseSocket(r)

	// A reject lost once: the refusal comes with the repeated request.
	hp.configure(t, bpf.FaultConfig{Opcodes: []uint8{uint8(wire.OpAccept), uint8(wire.OpReject)}, DropNext: 1, Seed: 4})
	f0 = hp.faultStats(t)
	c := must[Socket](t)(hp.a.Socket())
	start = time.Now()
	err := hp.a.Connect(c, netip.AddrPortFrom(hp.hop.B.Addr, hp.portB+1))
	el = time.Since(start)
	hp.a.CloseSocket(c)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to a port nobody listens on, first reject lost: %v; want ECONNREFUSED", err)
	}
	if f := subFault(hp.faultStats(t), f0); f.Dropped != 1 || f.Eligible != 2 {
		t.Errorf("hop: %+v; want one reject dropped, one passed", f)
	}
	t.Logf("refused in %v past a lost reject", el.Round(time.Microsecond))
	if el > time.Second {
		t.Errorf("refusal took %v; want about one initial RTO", el)
	}
	checkQuiet(t, hp.a, hp.b)
}

// TestFaultHostTrafficUnderLoss checks that while sdx frames are being
// dropped and a transfer runs, the hosts' own traffic on the same
// interfaces is untouched: kernel TCP, UDP on another port, ICMP, and ARP
// after a neighbour flush.
func TestFaultHostTrafficUnderLoss(t *testing.T) {
	hp := newHopPair(t, testbed.HopOptions{Subnet: 34}, Config{})
	ln := hp.listen(t, 4)
	hp.configure(t, bpf.FaultConfig{DropRate: 0.2, Seed: 5})
	s, r := hp.connectPair(t, ln)
	done := make(chan error, 1)
	size := int64(16 << 20)
	if raceOn {
		size = 2 << 20
	}
	go func() {
		_, err := sendStream(hp.a, hp.b, s, r, 11, size)
		done <- err
	}()
	checkHostTraffic(t, hp.hop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	hp.a.CloseSocket(s)
	hp.b.CloseSocket(r)
	checkQuiet(t, hp.a, hp.b)
}

// checkHostTraffic runs kernel TCP, UDP, ICMP and ARP between A and B.
func checkHostTraffic(t testing.TB, h *testbed.Hop) {
	t.Helper()
	if err := testutil.TCPEcho(h.A.NS, h.B.NS, h.B.Addr, 8080, 1<<20); err != nil {
		t.Errorf("kernel TCP: %v", err)
	}
	if err := testutil.UDPEcho(h.A.NS, h.B.NS, h.B.Addr, DefaultUDPPort+1); err != nil {
		t.Errorf("kernel UDP on another port: %v", err)
	}
	if err := testbed.IP("-n", h.A.NS, "neigh", "flush", "dev", h.A.If); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", h.A.NS, "ping", "-c", "3", "-i", "0.1", "-W", "2", h.B.Addr.String()).CombinedOutput()
	if err != nil {
		t.Errorf("ping after a neighbour flush (ARP, ICMP): %v\n%s", err, out)
	}
}

// waitUntil polls cond every millisecond for up to five seconds.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, what, 5*time.Second, cond)
}

// waitWithin is waitUntil with a bound of its own.
func waitWithin(t testing.TB, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkFaultLoss reports the throughput of one connection from A to
// B through the hop at 0%, 1%, 5% and 20% loss of sdx frames (both
// directions). Each iteration moves 16 MiB over a new connection.
func BenchmarkFaultLoss(b *testing.B) {
	hp := newHopPair(b, testbed.HopOptions{Subnet: 35}, Config{})
	ln := hp.listen(b, 16)
	for i, c := range []struct {
		rate float64
		size int64 // the window backs off under loss: less at higher loss
	}{{0, 16 << 20}, {0.01, 4 << 20}, {0.05, 1 << 20}, {0.2, 64 << 10}} {
		rate, size := c.rate, c.size
		b.Run(fmt.Sprintf("loss=%v", rate), func(b *testing.B) {
			hp.configure(b, bpf.FaultConfig{DropRate: rate, Seed: uint64(200 + i)})
			var moved int64
			var busy time.Duration
			b.ReportAllocs()
			for b.Loop() {
				res := hp.stream(b, ln, uint64(i), size, "stream")
				moved += res.n
				busy += res.elapsed
			}
			b.ReportMetric(float64(moved)/busy.Seconds()/1e6, "MB/s")
		})
	}
}

// TestFaultJumboTransfer moves a stream through the lossy hop at jumbo
// MTUs, where every full segment is a multi-buffer packet of several UMEM
// frames: the hop drops whole packets, the retransmissions are
// multi-buffer packets too, and every byte arrives in order. No socket
// sees an invalid descriptor either way.
func TestFaultJumboTransfer(t *testing.T) {
	testutil.CheckGoroutines(t)
	for i, mtu := range []int{9000, 65000} {
		t.Run(fmt.Sprint(mtu), func(t *testing.T) {
			hp := newHopPair(t, testbed.HopOptions{Subnet: uint8(36 + i), MTU: mtu}, Config{})
			for _, l := range []*xdplink.Link{hp.la, hp.lb} {
				if s := l.Stats(); !s.MultiBuffer || s.MTU != mtu-28 {
					t.Fatalf("link: multi-buffer %v (%q), datagram %d; want multi-buffer datagrams of %d", s.MultiBuffer, s.MultiBufferFallback, s.MTU, mtu-28)
				}
			}
			ln := hp.listen(t, 4)
			const rate = 0.02
			size := lossCases()[0].size / 4 // 64 MiB, 8 MiB with -race
			if testing.Short() {
				size = 8 << 20
			}
			// Data frames only, and the first two whatever the draw: at
			// MTU 65000 a short stream is a few hundred frames.
			hp.configure(t, bpf.FaultConfig{DropRate: rate, Seed: uint64(7 + i), Opcodes: []uint8{uint8(wire.OpData)}, DropNext: 2})
			f0, a0 := hp.faultStats(t), hp.a.Stats()
			res := hp.stream(t, ln, uint64(i+1), size, fmt.Sprintf("%d MiB at %v loss", size>>20, rate))
			f, a := subFault(hp.faultStats(t), f0), hp.a.Stats()
			t.Logf("%d MiB at MTU %d, %v loss: %v, %.1f MB/s; hop dropped %d of %d; A: %d data out, %d retransmits",
				size>>20, mtu, rate, res.elapsed.Round(time.Millisecond), float64(size)/res.elapsed.Seconds()/1e6,
				f.Dropped, f.Eligible, a.DataOut-a0.DataOut, a.Retransmits-a0.Retransmits)
			if f.Dropped == 0 || a.Retransmits == a0.Retransmits {
				t.Errorf("hop dropped %d frames, A retransmitted %d: the loss did not happen", f.Dropped, a.Retransmits-a0.Retransmits)
			}
			for _, l := range []*xdplink.Link{hp.la, hp.lb} {
				if k := l.Stats().Kernel; k.RxInvalid != 0 || k.TxInvalid != 0 || k.RxDropped != 0 {
					t.Errorf("kernel counters: %+v", k)
				}
			}
			hp.configure(t, bpf.FaultConfig{})
			checkQuiet(t, hp.a, hp.b)
		})
	}
}

// TestFaultDisorderTransfer moves streams through a hop that duplicates
// and delays sdx frames (bpf's sdx_disorder at both ports' egress, an htb
// class holding the delayed ones back while later frames overtake them),
// at MTU 1500 and at 9000, where every full segment is a multi-buffer
// packet: first with duplication and reordering alone, so that every
// segment B finds beyond a hole was overtaken, then with loss as well.
// Every byte arrives in order, the duplicates are dropped as such, and
// the providers' buffers are all back at the end.
func TestFaultDisorderTransfer(t *testing.T) {
	testutil.CheckGoroutines(t)
	for i, mtu := range []int{1500, 9000} {
		t.Run(fmt.Sprint(mtu), func(t *testing.T) {
			hp := newHopPair(t, testbed.HopOptions{Subnet: uint8(38 + i), MTU: mtu}, Config{})
			d, err := bpf.LoadDisorder()
			if err != nil {
				t.Fatalf("load disorder: %v", err)
			}
			t.Cleanup(func() { d.Close() })
			for _, port := range []*testbed.Host{&hp.hop.RA, &hp.hop.RB} {
				if err := hp.hop.AddDelayClass(port, 300*time.Microsecond); err != nil {
					t.Fatal(err)
				}
				var l link.Link
				if err := port.Do(func() (err error) {
					l, err = d.AttachEgress(port.Index)
					return err
				}); err != nil {
					t.Fatalf("attach disorder to %s: %v", port.If, err)
				}
				t.Cleanup(func() { l.Close() })
			}
			ln := hp.listen(t, 4)
			// Enough segments, also under -race, that some delayed one
			// is overtaken while it waits.
			const size = 8 << 20
			for j, loss := range []float64{0, 0.01} {
				if err := d.Configure(bpf.DisorderConfig{Port: DefaultUDPPort, DupRate: 0.02, DelayRate: 0.05,
					DelayClass: testbed.DelayClass, Seed: uint64(10*i + j)}); err != nil {
					t.Fatal(err)
				}
				hp.configure(t, bpf.FaultConfig{DropRate: loss, Seed: uint64(20*i + j)})
				d0, err := d.Stats()
				if err != nil {
					t.Fatal(err)
				}
				f0, b0 := hp.faultStats(t), hp.b.Stats()
				res := hp.stream(t, ln, uint64(j+1), size, fmt.Sprintf("%d MiB, %v loss", size>>20, loss))
				d1, err := d.Stats()
				if err != nil {
					t.Fatal(err)
				}
				f, b := subFault(hp.faultStats(t), f0), hp.b.Stats()
				dup, delayed := d1.Duplicated-d0.Duplicated, d1.Delayed-d0.Delayed
				t.Logf("%d MiB at MTU %d, %v loss: %v; hop duplicated %d, delayed %d, dropped %d; B: %d duplicates dropped, %d segments beyond a hole",
					size>>20, mtu, loss, res.elapsed.Round(time.Millisecond), dup, delayed, f.Dropped,
					b.Drops.Duplicate-b0.Drops.Duplicate, b.OutOfOrder-b0.OutOfOrder)
				if dup == 0 || delayed == 0 || d1.DupFailed != d0.DupFailed || b.Drops.Duplicate == b0.Drops.Duplicate {
					t.Errorf("duplicated %d, delayed %d, copies refused %d, B dropped %d duplicates: the disorder did not happen",
						dup, delayed, d1.DupFailed-d0.DupFailed, b.Drops.Duplicate-b0.Drops.Duplicate)
				}
				if loss == 0 && (b.OutOfOrder == b0.OutOfOrder || f.Dropped != 0) {
					t.Errorf("without loss: %d segments beyond a hole, %d dropped: nothing was overtaken", b.OutOfOrder-b0.OutOfOrder, f.Dropped)
				}
				if loss > 0 && f.Dropped == 0 {
					t.Errorf("the hop dropped nothing at %v loss", loss)
				}
			}
			hp.configure(t, bpf.FaultConfig{})
			if err := d.Configure(bpf.DisorderConfig{Port: DefaultUDPPort}); err != nil {
				t.Fatal(err)
			}
			checkQuiet(t, hp.a, hp.b)
		})
	}
}
