package provider

import (
	"testing"
	"time"

	"github.com/sdx-project/sdx/provider/memnet"
)

// TestEngineEarlyWindowsDoNotPinPool: a connection made while it was
// alone is granted a window of up to half the pool; once many connections
// share the pool, each still gets a working window, and data flows on
// every one of them while the first stays quiet. Before the commitment of
// a window was held to the fair share, the first connection's quiet
// window kept the receive half, the later ones got windows of a few
// bytes, and request-response traffic over 64 connections stalled.
func TestEngineEarlyWindowsDoNotPinPool(t *testing.T) {
	cfg := testEngineConfig()
	cfg.Buffers = 256 // a receive half of 128 buffers
	v := newVNet(t, 7, memnet.Faults{Delay: 20 * time.Microsecond}, cfg, 2)
	// Early connections, each granted its window while few endpoints
	// shared the pool; together they are promised all of host 1's half.
	l := v.listen(1, 81, 64)
	early := 0
	for v.hosts[1].recvCommitted < v.hosts[1].recvCap-2 && early < 8 {
		v.dial(0, 1, 81)
		v.run(time.Second, func() bool { return len(l.ln.backlog) > 0 })
		v.hosts[1].accept(l)
		early++
	}
	t.Logf("%d early connections are promised %d of %d buffers", early, v.hosts[1].recvCommitted, v.hosts[1].recvCap)
	const later = 15
	var as, bs []*endpoint
	for range later {
		a := v.dial(0, 1, 81)
		v.run(time.Second, func() bool { return len(l.ln.backlog) > 0 })
		as, bs = append(as, a), append(bs, v.hosts[1].accept(l))
	}
	// Every later connection sends 32 KiB to its peer, which reads as it
	// comes: with windows of a few bytes this takes far longer than the
	// limit.
	const size = 32 << 10
	buf := make([]byte, size)
	rbuf := make([]byte, size)
	sent, got := make([]int, later), make([]int, later)
	e0, e1 := v.hosts[0], v.hosts[1]
	start := v.now
	v.run(2*time.Second, func() bool {
		done := true
		for i := range later {
			if sent[i] < size {
				n, err := e0.write(as[i], buf[sent[i]:])
				if err != nil {
					t.Fatal(err)
				}
				sent[i] += n
			}
			n, err := e1.read(bs[i], rbuf)
			if err != nil {
				t.Fatal(err)
			}
			got[i] += n
			done = done && got[i] == size
		}
		return done
	})
	t.Logf("%d connections moved %d KiB each in %v of virtual time beside %d quiet ones",
		later, size>>10, time.Duration(v.now-start), early)
	for _, e := range []*engine{e0, e1} {
		if e.recvHeld()+e.recvCommitted > e.recvCap {
			t.Errorf("receive half: %d held + %d committed > %d", e.recvHeld(), e.recvCommitted, e.recvCap)
		}
		checkPool(t, e)
	}
}
