package provider

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// dropPureAcks is a fault that loses every pure ack (opcode ack); probes,
// answers and data get through.
var dropPureAcks = memnet.Faults{Drop: func(_, _ netip.Addr, d []byte) bool { return wire.Opcode(d[1]) == wire.OpAck }}

// With every pure ack lost, a side that only receives still gets its
// window updates to the sender. The stall this guards against: the
// receiver's window is full and all its data acknowledged (the sender has
// nothing to retransmit, so no duplicate draws an ack in a probe); the
// application reads, and the window update, a pure ack, is lost; the
// sender's zero-window probes were answered with pure acks, lost too, so
// the sender heard nothing until the dead-peer bound reset the connection.
// Probes are now answered with a probe marked FlagAnswer.
func TestEngineAllPureAcksLostZeroWindow(t *testing.T) {
	cfg := testEngineConfig()
	cfg.Timeout = 10 * time.Second
	v := newVNet(t, 52, memnet.Faults{}, cfg, 2)
	a, b := v.pair()
	v.run(time.Second, func() bool { return v.net.Queued() == 0 })
	ea, eb := v.hosts[0], v.hosts[1]
	// Fill b's window while acks get through: a then knows the window is
	// zero and has nothing unacknowledged, and more data waits to go.
	data := make([]byte, 1<<20)
	sent := 0
	write := func() {
		ea.now = v.now
		n, err := ea.write(a, data[sent:])
		if err != nil {
			t.Fatal(err)
		}
		sent += n
	}
	v.run(time.Second, func() bool {
		write()
		// The window is full, or what is left of it is less than a
		// segment, which the sender does not split: zero to it.
		return b.rcv.lastEdge > 0 && b.rcv.rcvNxt+uint64(a.mss) > b.rcv.lastEdge && a.snd.sndUna == b.rcv.rcvNxt && a.snd.slen > 0 && v.net.Queued() == 0
	})
	v.net.SetFaults(dropPureAcks)
	start := v.now
	got := 0
	rb := make([]byte, 1<<16)
	const want = 600 << 10
	v.run(2*time.Second, func() bool {
		for {
			n, err := eb.read(b, rb)
			if err != nil {
				t.Fatalf("read %v after the window opened: %v", time.Duration(v.now-start), err)
			}
			if n == 0 {
				break
			}
			got += n
		}
		write()
		return got >= want
	})
	took := time.Duration(v.now - start)
	t.Logf("%d KiB read with every pure ack lost in %v of virtual time (dead-peer bound %v); b sent %d probes and answers",
		got>>10, took, cfg.Timeout, eb.st.probesOut.Load())
	if took > 2*cfg.MaxRTO || a.state != stateEstablished || b.state != stateEstablished {
		t.Fatalf("took %v (want within 2×MaxRTO), states %v %v", took, a.state, b.state)
	}
}

// The same fault on a plain receive-only stream: the acks that matter go
// out as probes (on duplicate data) or answers, and 4 MiB arrive
// byte-exact well inside the dead-peer bound.
func TestEngineAllPureAcksLostStream(t *testing.T) {
	cfg := testEngineConfig()
	v := newVNet(t, 51, memnet.Faults{}, cfg, 2)
	a, b := v.pair()
	v.run(time.Second, func() bool { return v.net.Queued() == 0 })
	v.net.SetFaults(dropPureAcks)
	d := transfer(t, v, a, b, 4<<20, 1, false)
	t.Logf("4 MiB with every pure ack lost: %v of virtual time; %d retransmissions, %d timer expiries",
		d, v.hosts[0].st.retransmits.Load(), v.hosts[0].st.rtoExpiries.Load())
	if d > cfg.Timeout/4 {
		t.Fatalf("4 MiB took %v of virtual time", d)
	}
}
