package provider

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/sdx-project/sdx/internal/wire"
	"github.com/sdx-project/sdx/provider/memnet"
)

// At 20% loss in both directions the sender retransmits about what was
// lost, not twice that. Before, a timer expiry resent every un-SACKed
// segment older than an RTO, and much of that had arrived: the receiver
// listed only its lowest blocks, so the sender never heard of the middle
// ones; a second expiry cleared every SACK mark; and late SACK reports
// taken as RTT samples inflated the RTO. The bound is on retransmissions
// per data frame lost (originals and retransmissions alike), over a
// seeded 16 MiB stream on the in-memory link with a one-way delay.
func TestEngineLossRetransmitsWhatWasLost(t *testing.T) {
	for _, delay := range []time.Duration{0, 20 * time.Microsecond, 200 * time.Microsecond} {
		cfg := testEngineConfig()
		v := newVNet(t, 61, memnet.Faults{}, cfg, 2)
		a, b := v.pair()
		v.run(time.Second, func() bool { return v.net.Queued() == 0 })
		rng := rand.New(rand.NewPCG(61, uint64(delay)))
		from := v.addr(0)
		dataLost := 0
		v.net.SetFaults(memnet.Faults{Delay: delay, Drop: func(src, _ netip.Addr, d []byte) bool {
			if rng.Float64() >= 0.2 {
				return false
			}
			if src == from && wire.Opcode(d[1]) == wire.OpData {
				dataLost++
			}
			return true
		}})
		ea, eb := v.hosts[0], v.hosts[1]
		r0, d0 := ea.st.retransmits.Load(), eb.st.dropDuplicate.Load()
		took := transfer(t, v, a, b, 16<<20, uint64(delay), false)
		rtx := ea.st.retransmits.Load() - r0
		ratio := float64(rtx) / float64(dataLost)
		t.Logf("delay %v: 16 MiB in %v of virtual time; %d data frames lost, %d retransmitted (%.2fx), %d duplicates at the receiver, %d timer expiries",
			delay, took.Round(time.Millisecond), dataLost, rtx, ratio, eb.st.dropDuplicate.Load()-d0, ea.st.rtoExpiries.Load())
		if ratio > 1.3 {
			t.Errorf("delay %v: %.2fx as many retransmissions as data frames lost, want at most 1.3x", delay, ratio)
		}
		checkPool(t, ea)
		checkPool(t, eb)
	}
}
