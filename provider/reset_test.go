package provider

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// A reset is taken only at the sequence number the receiver expects next
// (RFC 5961 style, docs/PROTOCOL.md): one further inside the window draws
// a challenge ack and is not taken; one outside the window, below or
// above, is dropped. Each with the connection's token, ids and ports, as
// a reader of the wire could forge it.
func TestEngineResetWindow(t *testing.T) {
	v := newVNet(t, 41, memnet.Faults{}, testEngineConfig(), 2)
	a, b := v.pair()
	ea, eb := v.hosts[0], v.hosts[1]
	ea.now = v.now
	if n, err := ea.write(a, make([]byte, 5000)); n != 5000 || err != nil {
		t.Fatal(n, err)
	}
	v.run(time.Second, func() bool { return b.rcv.rcvNxt == 5000 && v.net.Queued() == 0 })
	v.run(time.Second, func() bool { return v.net.Queued() == 0 })
	// forge sends b a reset of a's connection at seq.
	forge := func(seq uint64) {
		ea.fillHeader(a, wire.OpReset, wire.ReasonClosed)
		h := ea.hdr
		h.Seq = seq
		buf := make([]byte, wire.HeaderLen+64)
		n := h.Put(buf, 0)
		eb.now = v.now
		eb.input(v.addr(0), buf[:n])
		v.step() // what b answers goes out
		v.run(time.Second, func() bool { return v.net.Queued() == 0 })
	}
	window := b.rcv.lastEdge - b.rcv.rcvNxt
	if window == 0 {
		t.Fatal("b granted no window")
	}
	for _, c := range []struct {
		name string
		seq  uint64
	}{
		{"below the window", b.rcv.rcvNxt - 1},
		{"far below", 0},
		{"past the window", b.rcv.lastEdge + 2},
		{"far past", 1 << 62},
	} {
		oow, ch := eb.st.dropOutOfWindow.Load(), eb.st.resetsChallenged.Load()
		forge(c.seq)
		if b.state != stateEstablished || eb.st.dropOutOfWindow.Load() != oow+1 || eb.st.resetsChallenged.Load() != ch {
			t.Fatalf("reset %s (seq %d, window [%d, %d]): state %v, dropped %d, challenged %d", c.name, c.seq, b.rcv.rcvNxt, b.rcv.lastEdge, b.state,
				eb.st.dropOutOfWindow.Load()-oow, eb.st.resetsChallenged.Load()-ch)
		}
	}
	for _, seq := range []uint64{b.rcv.rcvNxt + 1, b.rcv.rcvNxt + window/2, b.rcv.lastEdge} {
		ch, acks := eb.st.resetsChallenged.Load(), eb.st.acksOut.Load()+eb.st.probesOut.Load()
		forge(seq)
		if b.state != stateEstablished || eb.st.resetsChallenged.Load() != ch+1 || eb.st.acksOut.Load()+eb.st.probesOut.Load() == acks {
			t.Fatalf("reset in the window at %d (window [%d, %d]): state %v, challenged %d, acks sent %d", seq, b.rcv.rcvNxt, b.rcv.lastEdge, b.state,
				eb.st.resetsChallenged.Load()-ch, eb.st.acksOut.Load()+eb.st.probesOut.Load()-acks)
		}
		if a.state != stateEstablished {
			t.Fatalf("the challenge ack hurt the real peer: %v %v", a.state, a.err)
		}
	}
	forge(b.rcv.rcvNxt)
	if b.state != stateFailed || !errors.Is(b.err, ErrConnReset) {
		t.Fatalf("reset at the expected offset: %v %v", b.state, b.err)
	}
}

// A hard close with data in flight resets at its send offset, inside the
// peer's window but past what the peer has: the peer challenges, and the
// closed end answers the challenge with a reset at the offset the ack
// names, which the peer takes. The peer fails with ECONNRESET within a
// round trip or two, as when the reset is exact.
func TestEngineResetWithDataInFlight(t *testing.T) {
	v := newVNet(t, 42, memnet.Faults{}, testEngineConfig(), 2)
	a, b := v.pair()
	v.run(time.Second, func() bool { return v.net.Queued() == 0 })
	ea, eb := v.hosts[0], v.hosts[1]
	// a's data is lost on the way: the reset that follows is past b's
	// receive offset.
	lose := true
	v.net.SetFaults(memnet.Faults{Drop: func(_, _ netip.Addr, d []byte) bool { return lose && wire.Opcode(d[1]) == wire.OpData }})
	ea.now = v.now
	ea.write(a, make([]byte, 3000))
	v.step()
	lose = false
	if b.rcv.rcvNxt != 0 || a.snd.sndNxt != 3000 {
		t.Fatalf("data sent to %d, arrived to %d; want 3000 sent, all lost", a.snd.sndNxt, b.rcv.rcvNxt)
	}
	start := v.now
	ea.now = v.now
	if err := ea.abort(a); err != nil {
		t.Fatal(err)
	}
	v.run(time.Second, func() bool { return b.state == stateFailed })
	if !errors.Is(b.err, ErrConnReset) || eb.st.resetsChallenged.Load() != 1 {
		t.Fatalf("b: %v, %d challenges", b.err, eb.st.resetsChallenged.Load())
	}
	t.Logf("reset taken %v of virtual time after the close, after one challenge", time.Duration(v.now-start))
	checkPool(t, eb)
}
