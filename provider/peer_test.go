package provider

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// pairs opens n connections from host i to host j's listener on port and
// returns both ends of each.
func (v *vnet) pairs(i, j int, port uint16, n int) (conns, accepted []*endpoint) {
	v.t.Helper()
	l := v.listen(j, port, n)
	for range n {
		c := v.dial(i, j, port)
		if c.state != stateEstablished {
			v.t.Fatalf("connect: %v %v", c.state, c.err)
		}
		conns = append(conns, c)
	}
	v.run(time.Minute, func() bool { return len(l.ln.backlog) == n })
	for range n {
		accepted = append(accepted, v.hosts[j].accept(l))
	}
	return conns, accepted
}

// allFailed reports whether every endpoint of eps has failed.
func allFailed(eps []*endpoint) bool {
	for _, ep := range eps {
		if ep.state != stateFailed {
			return false
		}
	}
	return true
}

// runFor steps the network for d of virtual time.
func (v *vnet) runFor(d time.Duration) {
	end := v.now + int64(d)
	for v.now < end {
		if !v.step() {
			v.advance()
		}
	}
}

// TestEngineUnreachableEndsPeer: one verified ICMP port unreachable ends
// every connection to the peer's address at once, the connect in
// progress too, not only the connection it quotes; connections to another
// host are untouched.
func TestEngineUnreachableEndsPeer(t *testing.T) {
	tap := &capture{}
	v := newVNet(t, 9, memnet.Faults{Delay: 50 * time.Microsecond}, testEngineConfig(), 3)
	tap.from = v.addr(0)
	v.net.SetFaults(memnet.Faults{Delay: 50 * time.Microsecond, Drop: tap.fn})
	conns, _ := v.pairs(0, 1, 80, 8)
	other, _ := v.pairs(0, 2, 80, 2)
	// The last frame host 0 sent went to host 2; make one to host 1.
	tap.drop = func(d []byte) bool { return false }
	e := v.hosts[0]
	e.now = v.now
	e.ackSoon(conns[3], true)
	for v.step() {
	}
	sent := tap.get()
	var h wire.Header
	if _, err := h.Decode(sent); err != nil || h.DstConn != conns[3].peerID {
		t.Fatalf("captured %x (%v); want a frame of connection 3", sent, err)
	}
	// A connect to host 1 in progress, its request lost.
	tap.drop = func(d []byte) bool { return len(d) > 1 && wire.Opcode(d[1]) == wire.OpConnect }
	c, err := e.newEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.connect(c, netip.AddrPortFrom(v.addr(1), 80)); err != nil {
		t.Fatal(err)
	}
	if !v.net.InjectUnreachable(v.addr(1), v.addr(0), sent) {
		t.Fatal("InjectUnreachable refused")
	}
	start := v.now
	v.run(time.Second, func() bool { return v.net.Queued() == 0 })
	for v.step() {
	}
	for i, a := range conns {
		if a.state != stateFailed || !errors.Is(a.err, ErrConnReset) {
			t.Errorf("connection %d to the peer: %v (%v); want failed with ECONNRESET", i, a.state, a.err)
		}
	}
	if c.state != stateFailed || !errors.Is(c.err, ErrConnRefused) {
		t.Errorf("connect to the peer: %v (%v); want failed with ECONNREFUSED", c.state, c.err)
	}
	for i, a := range other {
		if a.state != stateEstablished {
			t.Errorf("connection %d to another host: %v (%v)", i, a.state, a.err)
		}
	}
	if d := time.Duration(v.now - start); d > time.Millisecond {
		t.Errorf("took %v of virtual time", d)
	}
	if n := e.st.unreachIn.Load(); n != 1 {
		t.Errorf("Unreachables %d; want 1", n)
	}
	if len(e.peers) != 1 {
		t.Errorf("%d peers left; want 1 (host 2)", len(e.peers))
	}
}

// TestEngineHeartbeatLossy: two stacks with idle connections, and a
// stream on one of them for a while, at 20% loss both ways for ten
// minutes of virtual time: the peer is never declared dead, and the
// stream costs no heartbeat. Without loss the idle heartbeat costs at
// most 10 frames a second per peer host, both ways together.
func TestEngineHeartbeatLossy(t *testing.T) {
	cfg := testEngineConfig()
	cfg.Timeout = time.Hour // the per-connection bound stays out of the way
	for seed := range uint64(3) {
		v := newVNet(t, 100+seed, memnet.Faults{Delay: 50 * time.Microsecond}, cfg, 2)
		conns, accepted := v.pairs(0, 1, 80, 4)
		v.runFor(time.Second)

		// Idle, no loss: the cost of the heartbeat.
		out0, out1 := v.hosts[0].st.datagramsOut.Load(), v.hosts[1].st.datagramsOut.Load()
		hb0 := v.hosts[0].st.heartbeatsOut.Load()
		const idle = 60 * time.Second
		v.runFor(idle)
		frames := v.hosts[0].st.datagramsOut.Load() - out0 + v.hosts[1].st.datagramsOut.Load() - out1
		if rate := float64(frames) / idle.Seconds(); rate > 10 || v.hosts[0].st.heartbeatsOut.Load() == hb0 {
			t.Fatalf("seed %d: idle, %.1f frames/s between the two hosts (%d heartbeats from host 0); want some, at most 10/s", seed, rate, v.hosts[0].st.heartbeatsOut.Load()-hb0)
		}
		if seed == 0 {
			t.Logf("idle: %.2f frames/s between two hosts, both ways", float64(frames)/idle.Seconds())
		}

		// Busy: a stream of a few seconds costs no heartbeat.
		hb0, hb1 := v.hosts[0].st.heartbeatsOut.Load(), v.hosts[1].st.heartbeatsOut.Load()
		a, b := conns[0], accepted[0]
		sent, got := 0, 0
		buf := make([]byte, 64<<10)
		end := v.now + int64(500*time.Millisecond)
		for v.now < end {
			v.hosts[0].now = v.now
			if n, _ := v.hosts[0].write(a, buf); n > 0 {
				sent += n
			}
			v.hosts[1].now = v.now
			if n, _ := v.hosts[1].read(b, buf); n > 0 {
				got += n
			}
			if !v.step() {
				v.advance()
			}
		}
		if got == 0 {
			t.Fatalf("seed %d: the stream moved nothing", seed)
		}
		// A heartbeat may have been due as the stream began.
		if n := v.hosts[0].st.heartbeatsOut.Load() - hb0 + v.hosts[1].st.heartbeatsOut.Load() - hb1; n > 2 {
			t.Fatalf("seed %d: %d heartbeats during a stream of %d bytes", seed, n, got)
		}

		// 20% loss both ways for ten minutes (two under -race, which is
		// slower by far): never dead.
		lossFor := 10 * time.Minute
		if raceOn {
			lossFor = 2 * time.Minute
		}
		v.net.SetFaults(memnet.Faults{Delay: 50 * time.Microsecond, Loss: 0.2})
		hb0 = v.hosts[0].st.heartbeatsOut.Load()
		all := append(conns, accepted...)
		v.run(lossFor+time.Minute, func() bool {
			for _, c := range all {
				if c.state != stateEstablished {
					t.Fatalf("seed %d: a connection failed at 20%% loss: %v", seed, c.err)
				}
			}
			return v.now > end+int64(lossFor)
		})
		if seed == 0 {
			t.Logf("20%% loss: host 0 sent %.2f heartbeats/s", float64(v.hosts[0].st.heartbeatsOut.Load()-hb0)/lossFor.Seconds())
		}
		for i, e := range v.hosts {
			if n := e.st.peersDead.Load(); n != 0 {
				t.Fatalf("seed %d: host %d declared its peer dead %d times", seed, i, n)
			}
		}
	}
}

// TestEngineHeartbeatSilentPeer: a peer that goes silent (its process
// died with no ICMP to tell) is declared dead within PeerTimeout of the
// last frame heard from it, even when nothing has to be sent: every
// connection to it fails with ETIMEDOUT, within 1 s of the death.
func TestEngineHeartbeatSilentPeer(t *testing.T) {
	cfg := testEngineConfig()
	cfg.MaxConns = 256
	var worst time.Duration
	for seed := range uint64(8) {
		v := newVNet(t, 200+seed, memnet.Faults{Delay: 50 * time.Microsecond}, cfg, 2)
		conns, _ := v.pairs(0, 1, 80, 64) // a pool's worth
		// Idle for a while, then host 1 dies at a random moment.
		v.runFor(time.Duration(1+seed)*time.Second + time.Duration(seed)*37*time.Millisecond)
		died := v.now
		v.net.Partition(v.addr(0), v.addr(1), true)
		v.hosts = v.hosts[:1] // nothing runs there any more
		v.run(2*time.Second, func() bool { return allFailed(conns) })
		d := time.Duration(v.now - died)
		for i, c := range conns {
			if !errors.Is(c.err, ErrTimedOut) {
				t.Fatalf("seed %d: connection %d: %v; want ETIMEDOUT", seed, i, c.err)
			}
		}
		if d >= time.Second {
			t.Fatalf("seed %d: the dead peer noticed %v after it died; want under 1s", seed, d)
		}
		worst = max(worst, d)
		if len(v.hosts[0].peers) != 0 || v.hosts[0].ptimers.Len() != 0 {
			t.Fatalf("seed %d: %d peers, %d peer timers left", seed, len(v.hosts[0].peers), v.hosts[0].ptimers.Len())
		}
	}
	t.Logf("dead peer noticed at most %v after it went silent (8 runs)", worst)
}

// TestEngineHeartbeatRestart: host 1's stack restarts (a new engine with a
// new incarnation on the same address). Host 0's connections to the old
// one, all idle, fail with ECONNRESET at the new stack's first answer to
// a heartbeat; and a connect from the new stack makes host 0 ask at once.
func TestEngineHeartbeatRestart(t *testing.T) {
	cfg := testEngineConfig()
	for _, c := range []struct {
		name  string
		dial  bool // the restarted peer connects to host 0 first
		limit time.Duration
	}{
		{"heartbeat", false, 300 * time.Millisecond},
		{"connect from the new incarnation", true, 5 * time.Millisecond},
	} {
		v := newVNet(t, 300, memnet.Faults{Delay: 50 * time.Microsecond}, cfg, 2)
		conns, _ := v.pairs(0, 1, 80, 16)
		v.listen(0, 90, 4)
		v.runFor(500 * time.Millisecond)
		old := v.hosts[1].inc
		e, err := newEngine(v.links[1], cfg, [32]byte{9, 9, 9})
		if err != nil {
			t.Fatal(err)
		}
		if e.inc == old {
			t.Fatal("the same incarnation after a restart")
		}
		v.hosts[1] = e
		start := v.now
		var fresh *endpoint
		if c.dial {
			fresh = v.dial(1, 0, 90)
			if fresh.state != stateEstablished {
				t.Fatalf("%s: connect from the new stack: %v", c.name, fresh.err)
			}
		}
		v.run(time.Second, func() bool { return allFailed(conns) })
		d := time.Duration(v.now - start)
		for i, a := range conns {
			if !errors.Is(a.err, ErrConnReset) {
				t.Fatalf("%s: connection %d: %v; want ECONNRESET", c.name, i, a.err)
			}
		}
		if d > c.limit {
			t.Fatalf("%s: the restart was noticed after %v; want within %v", c.name, d, c.limit)
		}
		if n := v.hosts[0].st.peerRestarts.Load(); n != 1 {
			t.Fatalf("%s: %d restarts counted; want 1", c.name, n)
		}
		if fresh != nil {
			v.runFor(2 * time.Second)
			if fresh.state != stateEstablished {
				t.Fatalf("%s: the connection to the new incarnation: %v", c.name, fresh.err)
			}
		}
		t.Logf("%s: 16 connections to the old incarnation reset %v after the restart", c.name, d)
	}
}

// TestEngineHeartbeatOldPeer: toward a peer that announces no incarnation
// (heartbeats off: as an sdx before them), no heartbeat is sent, and the
// peer is not declared dead when it goes silent for longer than
// PeerTimeout: only the per-connection bound applies. A heartbeat it gets
// anyway is dropped as an unknown opcode, unanswered.
func TestEngineHeartbeatOldPeer(t *testing.T) {
	cfg := testEngineConfig()
	old := cfg
	old.PeerTimeout = 0
	v := newVNet(t, 400, memnet.Faults{Delay: 50 * time.Microsecond}, cfg, 2)
	e, err := newEngine(v.links[1], old, [32]byte{4, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	v.hosts[1] = e
	conns, accepted := v.pairs(0, 1, 80, 2)
	back, _ := v.pairs(1, 0, 81, 2)
	conns = append(conns, back...)
	v.runFor(30 * time.Second)
	for _, h := range v.hosts {
		if n := h.st.heartbeatsOut.Load(); n != 0 {
			t.Fatalf("%d heartbeats sent between a stack and an old peer", n)
		}
	}
	for _, c := range append(conns, accepted...) {
		if c.state != stateEstablished {
			t.Fatalf("a connection to an old peer failed: %v", c.err)
		}
	}
	// Silent for 3 s: no death by heartbeat.
	v.net.Partition(v.addr(0), v.addr(1), true)
	v.runFor(3 * time.Second)
	for _, c := range conns {
		if c.state != stateEstablished {
			t.Fatalf("a connection to a silent old peer failed after 3s: %v", c.err)
		}
	}
	v.net.Partition(v.addr(0), v.addr(1), false)
	// A heartbeat named after a live connection: dropped, unanswered.
	a := conns[0]
	v.hosts[0].now = v.now
	before := e.st.dropMalformed.Load()
	v.hosts[0].sendHeartbeat(a.peer, a, wire.FlagAckReq)
	v.hosts[0].flush()
	in := v.hosts[0].st.heartbeatsIn.Load()
	v.runFor(10 * time.Millisecond)
	if e.st.dropMalformed.Load() != before+1 || v.hosts[0].st.heartbeatsIn.Load() != in {
		t.Fatalf("old peer: heartbeat dropped %d times, %d answers", e.st.dropMalformed.Load()-before, v.hosts[0].st.heartbeatsIn.Load()-in)
	}
}

// TestEngineCheckPeer: a health check (WaitEnd with EndPeerChecked) asks
// a peer not heard from lately and is answered in a round trip: by a live
// peer, with nothing changed; by a restarted one, with every connection
// to its former incarnation reset, long before the next heartbeat.
func TestEngineCheckPeer(t *testing.T) {
	cfg := testEngineConfig()
	v := newVNet(t, 500, memnet.Faults{Delay: 50 * time.Microsecond}, cfg, 2)
	conns, _ := v.pairs(0, 1, 80, 4)
	v.runFor(100 * time.Millisecond)
	e := v.hosts[0]
	check := func(ep *endpoint) {
		e.now = v.now
		e.checkPeer(ep)
		v.run(time.Millisecond, func() bool { return !ep.peerCheck })
	}
	hb := e.st.heartbeatsOut.Load()
	check(conns[0])
	if e.st.heartbeatsOut.Load() != hb+1 || conns[0].state != stateEstablished {
		t.Fatalf("live peer: %d heartbeats, %v", e.st.heartbeatsOut.Load()-hb, conns[0].state)
	}
	// Heard from just now: nothing to ask.
	check(conns[1])
	if e.st.heartbeatsOut.Load() != hb+1 {
		t.Fatal("asked a peer heard from within peerFresh")
	}
	v.runFor(10 * time.Millisecond)
	nh, err := newEngine(v.links[1], cfg, [32]byte{5, 5, 5})
	if err != nil {
		t.Fatal(err)
	}
	v.hosts[1] = nh
	start := v.now
	check(conns[2])
	if !allFailed(conns) || !errors.Is(conns[3].err, ErrConnReset) {
		t.Fatalf("after a check of a restarted peer: %v %v", conns[3].state, conns[3].err)
	}
	if d := time.Duration(v.now - start); d > time.Millisecond {
		t.Fatalf("the check took %v", d)
	}
}

// TestEngineHeartbeatStall: both stacks' pollers stop for 2 s (a process
// descheduled, a machine overloaded) and resume: neither takes the other
// for dead on waking, before it has asked and waited for answers.
func TestEngineHeartbeatStall(t *testing.T) {
	v := newVNet(t, 600, memnet.Faults{Delay: 50 * time.Microsecond}, testEngineConfig(), 2)
	conns, accepted := v.pairs(0, 1, 80, 4)
	v.runFor(time.Second)
	v.now += int64(2 * time.Second) // nothing ran meanwhile
	v.runFor(2 * time.Second)
	for _, c := range append(conns, accepted...) {
		if c.state != stateEstablished {
			t.Fatalf("a connection failed after a stall of both pollers: %v", c.err)
		}
	}
}
