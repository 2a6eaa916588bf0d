package provider

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
)

// TestSpoofedSourcesDoNotStallPoller sends connect requests from made-up
// addresses on the subnet, which nobody answers ARP for, at a port nobody
// listens on. B answers each with a reject it cannot deliver; resolving
// those addresses must not hold its poller, so a live connection's round
// trip stays short. (Before the resolver's wait budget, each such frame
// held the poller 2 ms and the round trip grew from ~20 µs to ~100 ms.)
func TestSpoofedSourcesDoNotStallPoller(t *testing.T) {
	hp, raw := newForger(t, 91, Config{}, false)
	s, r := hp.connectPair(t, hp.listen(t, 4))
	rtt := func(n int) time.Duration {
		buf := make([]byte, 1)
		start := time.Now()
		for range n {
			if _, err := hp.a.Send(s, buf); err != nil {
				t.Fatal(err)
			}
			if _, err := hp.b.Recv(r, buf); err != nil {
				t.Fatal(err)
			}
			if _, err := hp.b.Send(r, buf); err != nil {
				t.Fatal(err)
			}
			if _, err := hp.a.Recv(s, buf); err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(start) / time.Duration(n)
	}
	before := rtt(200)
	cEnd, bEnd := endpointOf(&hp.hop.C), endpointOf(&hp.hop.B)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h := wire.Header{Op: wire.OpConnect, DstPort: 9999}
		for i := range 2000 {
			src := cEnd
			src.IP = netip.AddrFrom4([4]byte{198, 18, 91, byte(100 + i%100)})
			h.SrcConn, h.Token = uint32(i+1), uint64(i)|1
			raw.queue(src, bEnd, &h, nil, nil)
			raw.flush()
			time.Sleep(500 * time.Microsecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	during := rtt(50)
	<-done
	t.Logf("round trip %v before, %v during 2000 connects/s from unresolvable sources", before, during)
	if during > 10*time.Millisecond {
		t.Fatalf("round trip %v during the spoofed flood: the poller stalls", during)
	}
}
