package provider

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

func TestCookieMAC(t *testing.T) {
	m := newCookieMAC([16]byte{1, 2, 3})
	peer := netip.AddrFrom4([4]byte{198, 18, 0, 1})
	h := wire.Header{Op: wire.OpConnect, SrcPort: 50000, DstPort: 80, SrcConn: 7, Token: 0xfeed}
	const epoch = int64(1) << cookieEpochShift
	now := 5*epoch + 17
	h.Seq = m.cookie(peer, &h, now)
	if h.Seq == 0 || h.Seq&1 == 0 {
		t.Fatalf("cookie %#x: want odd, never 0", h.Seq)
	}
	for _, c := range []struct {
		at   int64
		want bool
	}{{now, true}, {6*epoch - 1, true}, {6 * epoch, true}, {7*epoch - 1, true}, {7 * epoch, false}, {5*epoch - 1, false}} {
		if got := m.check(peer, &h, c.at); got != c.want {
			t.Errorf("made at %d, checked at %d epochs + %d: %v, want %v", now>>cookieEpochShift, c.at>>cookieEpochShift, c.at%epoch, got, c.want)
		}
	}
	// Every field the cookie covers changes it.
	for name, change := range map[string]func(*wire.Header, *netip.Addr){
		"peer":     func(_ *wire.Header, p *netip.Addr) { *p = netip.AddrFrom4([4]byte{198, 18, 0, 2}) },
		"src port": func(h *wire.Header, _ *netip.Addr) { h.SrcPort++ },
		"dst port": func(h *wire.Header, _ *netip.Addr) { h.DstPort++ },
		"src conn": func(h *wire.Header, _ *netip.Addr) { h.SrcConn++ },
		"token":    func(h *wire.Header, _ *netip.Addr) { h.Token ^= 1 << 40 },
	} {
		h2, p2 := h, peer
		change(&h2, &p2)
		if m.check(p2, &h2, now) {
			t.Errorf("cookie still checks with another %s", name)
		}
	}
	// Another key, another cookie.
	if newCookieMAC([16]byte{1, 2, 4}).check(peer, &h, now) {
		t.Error("cookie checks under another key")
	}
	if n := testing.AllocsPerRun(100, func() { m.check(peer, &h, now) }); n != 0 {
		t.Errorf("check allocates %v times", n)
	}
}

// TestEngineConnectFlood floods a listener with connect requests from a
// host that never answers: it keeps at most backlog half-open connections,
// answers the rest with a stateless retry, drops the half-open ones after
// maxAcceptTries accepts, and never puts one in the backlog. A legitimate
// connect meanwhile goes through at the first attempt, by the cookie, in
// two round trips; a forged cookie counts and earns only another retry.
func TestEngineConnectFlood(t *testing.T) {
	cfg := testEngineConfig()
	v := newVNet(t, 3, memnet.Faults{Delay: 50 * time.Microsecond}, cfg, 2)
	e := v.hosts[1]
	const backlog = 4
	l := v.listen(1, 80, backlog)
	raw, err := v.net.NewLink()
	if err != nil {
		t.Fatal(err)
	}
	var replies [wire.NumOpcodes]int
	var retry wire.Header
	// run runs the network until cond, taking the raw host's replies as
	// they arrive (a datagram left queued would hold the clock back).
	run := func(limit time.Duration, cond func() bool) {
		v.run(limit, func() bool {
			raw.Receive(1<<20, func(_ netip.Addr, b []byte, _ [][]byte) {
				var h wire.Header
				if _, err := h.Decode(b); err != nil {
					t.Fatal(err)
				}
				replies[h.Op]++
				if h.Op == wire.OpRetry {
					retry = h
				}
			})
			return cond()
		})
	}
	drain := func() { run(time.Second, func() bool { return v.net.Queued() == 0 }) }
	buf := make([]byte, 256)
	connect := func(id uint32, cookie uint64) {
		h := wire.Header{Op: wire.OpConnect, SrcPort: 40000, DstPort: 80, SrcConn: id, Token: uint64(id) * 0x9e3779b97f4a7c15, Window: 1 << 16, Seq: cookie}
		n := h.Put(buf, 0)
		if err := raw.Send(v.addr(1), buf[:n]); err != nil {
			t.Fatal(err)
		}
		if err := raw.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	const flood = 50
	for id := range uint32(flood) {
		connect(id+1, 0)
	}
	drain()
	if len(l.ln.half) != backlog || len(l.ln.backlog) != 0 || e.nEps != 1+backlog {
		t.Fatalf("after %d connects: %d half-open, %d in the backlog, %d endpoints; want %d, 0, %d", flood, len(l.ln.half), len(l.ln.backlog), e.nEps, backlog, 1+backlog)
	}
	// Each half-open connection's window is one buffer.
	if e.recvCommitted != backlog {
		t.Errorf("%d receive buffers committed to %d half-open connections; want one each", e.recvCommitted, backlog)
	}
	if replies[wire.OpRetry] != flood-backlog || replies[wire.OpAccept] != backlog {
		t.Fatalf("the flooder got %d retries and %d accepts; want %d and %d", replies[wire.OpRetry], replies[wire.OpAccept], flood-backlog, backlog)
	}

	// A legitimate connect: retry, connect with the cookie, accept.
	start := v.now
	c := v.connect(0, 1, 80)
	run(time.Second, func() bool { return c.state != stateConnecting })
	if c.state != stateEstablished {
		t.Fatalf("legitimate connect under the flood: %v %v", c.state, c.err)
	}
	if d := time.Duration(v.now - start); d > 250*time.Microsecond {
		t.Errorf("connect took %v of virtual time; want two round trips of 100µs", d)
	}
	// The listener took one connect as proven by its cookie: the
	// connector echoed the retry's.
	if len(l.ln.backlog) != 1 || e.st.cookiesIn.Load() != 1 {
		t.Fatalf("backlog %d, cookies in %d", len(l.ln.backlog), e.st.cookiesIn.Load())
	}

	// A forged cookie is counted and answered with a retry.
	connect(1000, 12345)
	run(time.Second, func() bool { return e.st.dropBadCookie.Load() == 1 })
	// The flooder's own cookie works, once it answers.
	connect(retry.DstConn, retry.Seq)
	run(time.Second, func() bool { return e.st.cookiesIn.Load() == 2 })
	if len(l.ln.backlog) != 2 {
		t.Fatalf("backlog %d after a valid cookie", len(l.ln.backlog))
	}

	// The half-open connections go after their accepts, unanswered.
	run(10*time.Second, func() bool { return len(l.ln.half) == 0 })
	drain()
	if got := e.st.halfOpenExpired.Load(); got != backlog {
		t.Errorf("%d half-open connections expired; want %d", got, backlog)
	}
	if want := backlog*maxAcceptTries + 1; replies[wire.OpAccept] != want {
		t.Errorf("the flooder got %d accepts; want %d (each half-open connection's %d, and its cookie's)", replies[wire.OpAccept], want, maxAcceptTries)
	}
	if len(e.quiet) != 0 {
		t.Errorf("%d quiet keys: a half-open connection never confirmed needs none", len(e.quiet))
	}
	// Room again: a connect without a cookie is half-open, not retried.
	retries := e.st.retriesOut.Load()
	connect(2000, 0)
	run(time.Second, func() bool { return len(l.ln.half) == 1 })
	if e.st.retriesOut.Load() != retries {
		t.Error("retry sent with room for half-open connections")
	}
	// Closing the listener releases everything it held.
	if err := e.abort(l); err != nil {
		t.Fatal(err)
	}
	if e.nEps != 0 || e.st.halfOpen.Load() != 0 {
		t.Errorf("after the listener's close: %d endpoints, %d half-open", e.nEps, e.st.halfOpen.Load())
	}
}

// TestEngineConfirmationRepeated loses the connector's answer to the
// accept and every repeated accept after it. A connector with nothing to
// send still gets its connection to the acceptor's backlog: it repeats
// its confirmation as a probe on the retransmission timer until the
// acceptor answers, instead of leaving the half-open connection to expire.
func TestEngineConfirmationRepeated(t *testing.T) {
	v := newVNet(t, 7, memnet.Faults{Delay: 50 * time.Microsecond}, testEngineConfig(), 2)
	accepts, acks := 0, 0
	v.net.SetFaults(memnet.Faults{Delay: 50 * time.Microsecond, Drop: func(from, _ netip.Addr, d []byte) bool {
		switch {
		case from == v.addr(1) && wire.Opcode(d[1]) == wire.OpAccept:
			accepts++
			return accepts > 1
		case from == v.addr(0) && wire.Opcode(d[1]) == wire.OpAck:
			acks++
			return acks == 1
		}
		return false
	}})
	e := v.hosts[1]
	l := v.listen(1, 80, 4)
	c := v.dial(0, 1, 80)
	if c.state != stateEstablished {
		t.Fatalf("connect: %v %v", c.state, c.err)
	}
	v.run(10*time.Second, func() bool { return len(l.ln.backlog) == 1 || len(l.ln.half) == 0 })
	if len(l.ln.backlog) != 1 || e.st.halfOpenExpired.Load() != 0 {
		t.Fatalf("backlog %d, half-open %d, expired %d: the connection never reached the backlog", len(l.ln.backlog), len(l.ln.half), e.st.halfOpenExpired.Load())
	}
	// Once the acceptor has answered, the connector stops repeating.
	v.run(time.Second, func() bool { return !c.confirming() })
	probes := v.hosts[0].st.probesOut.Load()
	v.run(time.Second, func() bool { return v.net.Queued() == 0 })
	end := v.now + int64(time.Second)
	v.run(2*time.Second, func() bool { return v.now >= end })
	if n := v.hosts[0].st.probesOut.Load(); n != probes || c.snd.rtoAt != 0 {
		t.Errorf("the connector went on probing (%d probes, then %d; timer %d) after the acceptor answered", probes, n, c.snd.rtoAt)
	}
}
