package provider

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// The congestion window in the engine, on the in-memory network with a
// virtual clock: through a bottleneck (memnet's Rate and QueueBytes), with
// ECN marks, with a stalled receiver.

// plainLink hides memnet's ECN methods: a link that carries no ECN field,
// as an older stack's peer is to us.
type plainLink struct{ Link }

// incast connects hosts 0..n-2 each to the last host and sends size bytes
// on each connection at once. It returns the flows when all are through,
// each checked byte for byte, failing the test after limit of virtual time.
func incast(t *testing.T, v *vnet, size int, limit time.Duration) []*flow {
	t.Helper()
	n := len(v.hosts) - 1
	l := v.listen(n, 80, 64)
	var flows []*flow
	for i := range n {
		a := v.dial(i, n, 80)
		if a.state != stateEstablished {
			t.Fatalf("connect %d: %v", i, a.err)
		}
		v.run(time.Second, func() bool { return len(l.ln.backlog) > 0 })
		b := v.hosts[n].accept(l)
		flows = append(flows, newFlow(v.hosts[i], v.hosts[n], a, b, uint64(i), size))
	}
	runFlows(t, v, flows, limit)
	return flows
}

// jain is Jain's fairness index of xs: 1 when all are equal, 1/n when one
// has everything.
func jain(xs []float64) float64 {
	var s, s2 float64
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	return s * s / (float64(len(xs)) * s2)
}

// bottleneck is a port of 50 MB/s (400 Mbit/s) with a 100 KB buffer
// toward every host, 50 µs each way.
func bottleneck(mark int) memnet.Faults {
	return memnet.Faults{Rate: 50e6, QueueBytes: 100_000, MarkBytes: mark, Delay: 50 * time.Microsecond}
}

// Slow start: the first round trip carries the initial window, no more,
// and the window then doubles each round trip.
func TestCCSlowStart(t *testing.T) {
	v := newVNet(t, 1, memnet.Faults{Delay: 100 * time.Microsecond}, testEngineConfig(), 2)
	a, _ := v.pair()
	mss := a.mss
	if a.snd.cc.cwnd != initialSegments*mss {
		t.Fatalf("initial window %d, want %d", a.snd.cc.cwnd, initialSegments*mss)
	}
	data := make([]byte, 200<<10)
	n, err := v.hosts[0].write(a, data)
	if err != nil || n == 0 {
		t.Fatalf("write: %d %v", n, err)
	}
	start := v.now
	v.run(time.Second, func() bool { return v.now-start >= int64(150*time.Microsecond) })
	if out := int(a.snd.sndNxt - a.snd.sndUna); out > initialSegments*mss || out == 0 {
		t.Fatalf("%d bytes sent in the first round trip, want the initial window %d", out, initialSegments*mss)
	}
	// Four round trips (200 µs each): 10 → 160 segments, less what
	// pacing and the acks' timing hold back; at least 6 times the start
	// (congestion avoidance would give 14 segments).
	v.run(time.Second, func() bool { return v.now-start >= int64(4*200*time.Microsecond+100*time.Microsecond) })
	if a.snd.cc.cwnd < 6*initialSegments*mss {
		t.Fatalf("window %d segments after four round trips of slow start", a.snd.cc.cwnd/mss)
	}
}

// Through a drop-tail bottleneck, three flows that back off lose few
// frames and share the port; every byte arrives. Without a congestion
// window every flow sends its whole credit into the 100 KB buffer, and
// about a fifth of the frames are dropped.
func TestCCBottleneckDropTail(t *testing.T) {
	v := newVNet(t, 7, bottleneck(0), testEngineConfig(), 4)
	flows := incast(t, v, 8<<20, time.Minute)
	st := v.net.Stats()
	loss := float64(st.QueueDrops) / float64(st.Sent)
	var rtx, red uint64
	for _, f := range flows {
		rtx += f.se.st.retransmits.Load()
		red += f.se.st.lossReductions.Load()
	}
	t.Logf("drop-tail: %d of %d frames dropped at the bottleneck (%.2f%%), %d retransmissions, %d window reductions", st.QueueDrops, st.Sent, 100*loss, rtx, red)
	if st.QueueDrops == 0 || red == 0 {
		t.Errorf("no drops or no reductions: the bottleneck did not bite (%d, %d)", st.QueueDrops, red)
	}
	if loss > 0.05 {
		t.Errorf("%.1f%% of frames dropped at the bottleneck, want under 5%%", 100*loss)
	}
	checkFinish(t, flows)
}

// checkFinish checks that the flows of an incast finished close together:
// each took at least half as long as the slowest.
func checkFinish(t *testing.T, flows []*flow) {
	t.Helper()
	var last int64
	for _, f := range flows {
		last = max(last, f.doneAt)
	}
	var xs []float64
	for _, f := range flows {
		xs = append(xs, float64(f.doneAt))
		if f.doneAt < last/2 {
			t.Errorf("a flow finished at %v, the last at %v", time.Duration(f.doneAt), time.Duration(last))
		}
	}
	if j := jain(xs); j < 0.9 {
		t.Errorf("Jain's index of the finishing times %.3f", j)
	}
}

// Through a bottleneck that marks ECN-capable frames above 30 KB queued,
// the flows back off on the marks (DCTCP) and almost nothing is dropped.
func TestCCBottleneckECN(t *testing.T) {
	v := newVNet(t, 7, bottleneck(30_000), testEngineConfig(), 4)
	flows := incast(t, v, 8<<20, time.Minute)
	st := v.net.Stats()
	var ceIn, echoed, red uint64
	for _, f := range flows {
		if !f.src.ecnOK || !f.dst.ecnOK {
			t.Fatal("ECN not agreed between two ECN links")
		}
		echoed += f.se.st.ceEchoed.Load()
		red += f.se.st.ecnReductions.Load()
	}
	ceIn = v.hosts[len(v.hosts)-1].st.ceIn.Load()
	t.Logf("ECN: %d of %d frames dropped, %d marked; receiver counted %d, senders heard %d, %d reductions", st.QueueDrops, st.Sent, st.Marked, ceIn, echoed, red)
	if st.Marked == 0 || ceIn != st.Marked || echoed == 0 || red == 0 {
		t.Errorf("marks %d, counted %d, echoed %d, reductions %d", st.Marked, ceIn, echoed, red)
	}
	if loss := float64(st.QueueDrops) / float64(st.Sent); loss > 0.005 {
		t.Errorf("%.2f%% dropped with ECN marking, want under 0.5%%", 100*loss)
	}
	checkFinish(t, flows)
}

// A peer whose link carries no ECN field does not announce ECN: nothing
// is sent ECN-capable, so nothing is marked, and the bottleneck drops
// instead; the flows still get through, backing off on loss.
func TestCCOldPeerNoECN(t *testing.T) {
	v := newVNetLinks(t, 7, bottleneck(30_000), testEngineConfig(), 3, func(i int, l *memnet.Link) Link {
		if i == 2 {
			return plainLink{l}
		}
		return l
	})
	flows := incast(t, v, 2<<20, time.Minute)
	st := v.net.Stats()
	for _, f := range flows {
		if f.src.ecnOK || f.dst.ecnOK {
			t.Fatal("ECN agreed with a peer without it")
		}
	}
	if st.Marked != 0 {
		t.Errorf("%d frames marked: something was sent ECN-capable to a peer without ECN", st.Marked)
	}
}

// DCTCP's α follows a known marking pattern: every fourth data frame
// marked, on a link with no other congestion, makes α about 1/4.
func TestCCDCTCPAlphaPattern(t *testing.T) {
	count := 0
	faults := memnet.Faults{Delay: 50 * time.Microsecond}
	faults.Mark = func(_, _ netip.Addr, d []byte) bool {
		if len(d) > 1 && wire.Opcode(d[1]) == wire.OpData {
			count++
			return count%4 == 0
		}
		return false
	}
	v := newVNet(t, 3, faults, testEngineConfig(), 2)
	a, b := v.pair()
	transfer(t, v, a, b, 16<<20, 5, false)
	alpha := float64(a.snd.cc.alpha) / alphaOne
	t.Logf("α %.3f after %d of %d data frames marked; %d reductions", alpha, v.net.Stats().Marked, count, v.hosts[0].st.ecnReductions.Load())
	if alpha < 0.15 || alpha > 0.35 {
		t.Errorf("α %.3f with a quarter of the frames marked, want about 0.25", alpha)
	}
}

// A receiver that does not run for 10 ms (its process waits for a CPU)
// makes the sender's 5 ms timer expire; its acks then cover segments the
// timer presumed lost and that were never sent again, so the timeout was
// spurious and its reduction of the window is undone.
func TestCCSpuriousRTOUndone(t *testing.T) {
	v := newVNet(t, 1, memnet.Faults{Delay: 50 * time.Microsecond}, testEngineConfig(), 2)
	a, b := v.pair()
	e0 := v.hosts[0]
	transfer(t, v, a, b, 2<<20, 1, false) // open the window
	data := make([]byte, 200<<10)
	if n, _ := e0.write(a, data); n == 0 {
		t.Fatal("write took nothing")
	}
	// Run the sender alone for 10 ms: its frames wait at the receiver.
	until := v.now + int64(10*time.Millisecond)
	var before int
	for v.now < until {
		e0.poll(v.now)
		if e0.st.rtoExpiries.Load() == 0 {
			before = a.snd.cc.cwnd
		}
		next := until
		if t, ok := e0.nextTimer(); ok && t < next {
			next = max(t, v.now+1)
		}
		v.now = next
	}
	if e0.st.rtoExpiries.Load() == 0 {
		t.Fatal("the timer did not expire while the receiver stalled")
	}
	if a.snd.cc.cwnd >= before {
		t.Fatalf("the timeout left the window at %d (was %d)", a.snd.cc.cwnd, before)
	}
	v.run(time.Second, func() bool { return e0.st.spuriousRTOs.Load() > 0 || a.snd.sent == 0 })
	if e0.st.spuriousRTOs.Load() == 0 {
		t.Fatalf("the spurious timeout was not detected; window %d, was %d", a.snd.cc.cwnd, before)
	}
	if a.snd.cc.cwnd < before {
		t.Fatalf("window %d after the undo, was %d before the timeout", a.snd.cc.cwnd, before)
	}
}

// ConnInfo and Stats show the congestion state: a stream through a
// marking bottleneck on real goroutines leaves ECN agreed, marks seen by
// the receiver and echoed to the sender, a window below its start, and
// the sender's limit named; a listener has no such state.
func TestProviderConnInfo(t *testing.T) {
	tn, l, a, b := connNet(t, 5, memnet.Faults{Rate: 20e6, QueueBytes: 60_000, MarkBytes: 15_000}, 2, 4, nil)
	before, err := tn.ps[0].ConnInfo(a)
	if err != nil {
		t.Fatal(err)
	}
	if !before.ECN || before.Cwnd == 0 || before.Ssthresh != maxCwnd || !before.SlowStart {
		t.Fatalf("a new connection: %+v", before)
	}
	stream(t, tn.ps[0], tn.ps[1], a, b, 4<<20, 9, false)
	ia := must[ConnInfo](t)(tn.ps[0].ConnInfo(a))
	ib := must[ConnInfo](t)(tn.ps[1].ConnInfo(b))
	s0, s1 := tn.ps[0].Stats(), tn.ps[1].Stats()
	t.Logf("sender %+v; receiver saw %d marks; stats: %d ECN reductions, %d cwnd-limited", ia, ib.CEReceived, s0.ECNReductions, s0.CwndLimited)
	if ia.CEEchoed == 0 || ib.CEReceived == 0 || ia.CEEchoed > ib.CEReceived || ia.Alpha <= 0 || ia.Ssthresh == maxCwnd {
		t.Errorf("marks: sender heard %d, receiver saw %d, α %.3f, ssthresh %d", ia.CEEchoed, ib.CEReceived, ia.Alpha, ia.Ssthresh)
	}
	if s0.ECNReductions == 0 || s0.CwndLimited == 0 || s1.CEReceived != ib.CEReceived || s0.ECNConnections != 1 {
		t.Errorf("stats: %d reductions, %d cwnd-limited, %d CE received, %d ECN connections", s0.ECNReductions, s0.CwndLimited, s1.CEReceived, s0.ECNConnections)
	}
	if _, err := tn.ps[1].ConnInfo(l); err != ErrNotConn {
		t.Errorf("ConnInfo of a listener: %v", err)
	}
	if ia.Limit == "" {
		t.Errorf("no limit named: %+v", ia)
	}
}

// Pacing keeps bursts of new segments at 16 or so: with it the burst
// histogram has nothing at 32 segments or more. Without it (the default) a
// sender in slow start on a 1 ms round trip sends twice what each ack
// covers at once, and an ack covers 16 segments.
func TestCCPacingBursts(t *testing.T) {
	for _, pacing := range []bool{false, true} {
		cfg := testEngineConfig()
		cfg.Pacing = pacing
		v := newVNet(t, 7, memnet.Faults{Delay: 500 * time.Microsecond}, cfg, 2)
		a, b := v.pair()
		took := transfer(t, v, a, b, 8<<20, 3, false)
		var hist [numBurstBuckets]uint64
		for i := range hist {
			hist[i] = v.hosts[0].st.bursts[i].Load()
		}
		t.Logf("pacing %v: bursts of 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+ segments: %v; 8 MiB in %v", pacing, hist, took)
		big := hist[5] + hist[6]
		if pacing && big != 0 || !pacing && big == 0 {
			t.Errorf("pacing %v: %d bursts of 32 segments or more", pacing, big)
		}
	}
}
