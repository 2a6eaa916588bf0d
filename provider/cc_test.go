package provider

import (
	"math"
	"testing"
	"time"
)

// The congestion window alone: each rule of cc.go with the numbers an
// RFC gives.

const ccMSS = 1000

func TestCongestionSlowStart(t *testing.T) {
	var c congestion
	c.start(ccMSS, false, true)
	if c.cwnd != 10*ccMSS || !c.inSlowStart() {
		t.Fatalf("initial window %d, slow start %v; want %d", c.cwnd, c.inSlowStart(), 10*ccMSS)
	}
	// Each round trip acknowledges a whole window: it doubles.
	una := uint64(0)
	for range 3 {
		w := c.cwnd
		una += uint64(w)
		c.onAck(w, una, true, 0, 0)
		if c.cwnd != 2*w {
			t.Fatalf("after a window of acks: %d, want %d", c.cwnd, 2*w)
		}
	}
	// A sender that did not fill its window does not grow it (RFC 7661).
	w := c.cwnd
	c.onAck(ccMSS, una+ccMSS, false, 0, 0)
	if c.cwnd != w {
		t.Fatalf("grew to %d while not limited by the window", c.cwnd)
	}
}

func TestCongestionAvoidanceAndHalving(t *testing.T) {
	var c congestion
	c.start(ccMSS, false, true)
	c.cwnd = 40 * ccMSS
	// A loss with 40 segments out halves the window, once for the
	// episode.
	if !c.onLoss(0, 40*ccMSS, 40*ccMSS) {
		t.Fatal("first loss did not reduce")
	}
	if c.cwnd != 20*ccMSS || c.ssthresh != 20*ccMSS {
		t.Fatalf("after a loss: cwnd %d ssthresh %d, want both %d", c.cwnd, c.ssthresh, 20*ccMSS)
	}
	if c.onLoss(5*ccMSS, 40*ccMSS, 35*ccMSS) || c.cwnd != 20*ccMSS {
		t.Fatalf("a second loss in the same episode reduced again: %d", c.cwnd)
	}
	// Partial acks keep the window; the ack past the recovery point
	// ends the episode.
	c.onAck(10*ccMSS, 15*ccMSS, true, 0, 0)
	if c.cwnd != 20*ccMSS || !c.recovering {
		t.Fatalf("partial ack: cwnd %d recovering %v", c.cwnd, c.recovering)
	}
	c.onAck(25*ccMSS, 40*ccMSS, true, 0, 0)
	if c.recovering {
		t.Fatal("still recovering after the recovery point was acknowledged")
	}
	// Congestion avoidance: one segment per window acknowledged.
	start := c.cwnd
	una := uint64(40 * ccMSS)
	for range 4 {
		w := c.cwnd
		for range w / ccMSS {
			una += ccMSS
			c.onAck(ccMSS, una, true, 0, 0)
		}
	}
	if c.cwnd != start+4*ccMSS {
		t.Fatalf("four windows of congestion avoidance: %d, want %d", c.cwnd, start+4*ccMSS)
	}
	// A loss in a new episode halves again.
	if !c.onLoss(una, una+uint64(c.cwnd), c.cwnd) {
		t.Fatal("a loss in a new episode did not reduce")
	}
	if c.cwnd != (start+4*ccMSS)/2 {
		t.Fatalf("second halving: %d", c.cwnd)
	}
	// The floor is two segments.
	c.onAck(c.cwnd, una+uint64(2*c.cwnd), true, 0, 0)
	c.onLoss(una+uint64(4*c.cwnd), una+uint64(4*c.cwnd)+1, ccMSS)
	if c.cwnd != 2*ccMSS {
		t.Fatalf("floor: %d, want %d", c.cwnd, 2*ccMSS)
	}
}

func TestCongestionRTO(t *testing.T) {
	var c congestion
	c.start(ccMSS, false, true)
	c.cwnd = 30 * ccMSS
	c.onRTO(30*ccMSS, 30*ccMSS)
	if c.cwnd != ccMSS || c.ssthresh != 15*ccMSS {
		t.Fatalf("after a timeout: cwnd %d ssthresh %d, want %d and %d", c.cwnd, c.ssthresh, ccMSS, 15*ccMSS)
	}
	// A second expiry before any ack does not lower ssthresh again
	// (RFC 5681 section 3.1, equation 4 is for the first).
	c.onRTO(30*ccMSS, 30*ccMSS)
	if c.ssthresh != 15*ccMSS {
		t.Fatalf("second expiry lowered ssthresh to %d", c.ssthresh)
	}
	// Slow start from one segment up to ssthresh, then avoidance.
	una := uint64(0)
	for c.cwnd < c.ssthresh {
		una += uint64(c.cwnd)
		c.onAck(c.cwnd, una, true, 0, 0)
	}
	if c.cwnd != 15*ccMSS {
		t.Fatalf("slow start overshot ssthresh: %d", c.cwnd)
	}
	// Undo is only for the timeout's own reduction, and not after a
	// loss was found.
	if c.onSpurious(); c.cwnd != 30*ccMSS {
		t.Fatalf("undo gave %d, want the window before the timeout, %d", c.cwnd, 30*ccMSS)
	}
	if c.onSpurious() {
		t.Fatal("undone twice")
	}
	c.onRTO(una+30*ccMSS, 30*ccMSS)
	c.onLoss(una, una+30*ccMSS, 10*ccMSS)
	if c.onSpurious() {
		t.Fatal("undid a timeout after a real loss")
	}
}

// DCTCP's α follows the fraction of marked bytes, window by window, with
// gain 1/16, and the window shrinks by α/2 once per window that saw marks.
func TestCongestionDCTCPAlpha(t *testing.T) {
	var c congestion
	c.start(ccMSS, true, true)
	c.cwnd = 100 * ccMSS
	una := uint64(0)
	ce := uint8(0)
	// Windows of 100 segments, each acknowledged one by one while the
	// sender keeps 100 in flight, so that an observation window ends
	// every 100 acks; with 0 marks α decays from 1 by 15/16 a window.
	window := func(marked int) {
		for i := range 100 {
			una += ccMSS
			if i < marked {
				ce++
			}
			c.onECN(ce, ccMSS, una, una+100*ccMSS)
		}
	}
	window(0) // the first observation ends at the first ack
	want := float64(15) / 16
	for range 10 {
		window(0)
		want *= 15.0 / 16
	}
	if got := float64(c.alpha) / alphaOne; got < want-0.01 || got > want+0.01 {
		t.Fatalf("α after 10 clean windows: %.3f, want %.3f", got, want)
	}
	if c.cwnd != 100*ccMSS {
		t.Fatalf("window changed without marks: %d", c.cwnd)
	}
	// Now 25 of every 100 segments marked: α converges to 0.25.
	for range 60 {
		window(25)
		want = want*15/16 + 0.25/16
	}
	if got := float64(c.alpha) / alphaOne; got < want-0.03 || got > want+0.03 || got < 0.2 || got > 0.3 {
		t.Fatalf("α with a quarter marked: %.3f, want %.3f", got, want)
	}
	// One reduction per window: by α/2 of it.
	c.cwnd = 100 * ccMSS
	c.cwrEnd = 0
	before := c.cwnd
	ce++
	una += ccMSS
	if !c.onECN(ce, ccMSS, una, una+100*ccMSS) {
		t.Fatal("a mark did not reduce the window")
	}
	alpha := float64(c.alpha) / alphaOne
	if w := float64(before) * (1 - alpha/2); float64(c.cwnd) < w-ccMSS || float64(c.cwnd) > w+ccMSS {
		t.Fatalf("reduced to %d, want about %.0f", c.cwnd, w)
	}
	ce++
	if c.onECN(ce, ccMSS, una+ccMSS, una+100*ccMSS) {
		t.Fatal("reduced twice in one window")
	}
	// The count wraps at 256.
	c.ceSeen = 250
	c.onECN(4, ccMSS, una, una)
	if c.ceSeen != 4 || c.ceEchoed < 10 {
		t.Fatalf("count across the wrap: seen %d echoed %d", c.ceSeen, c.ceEchoed)
	}
	// Without ECN nothing happens.
	var n congestion
	n.start(ccMSS, false, true)
	if n.onECN(9, ccMSS, 0, 0) || n.cwnd != 10*ccMSS {
		t.Fatal("a connection without ECN reacted to a count")
	}
}

// cubicRound acknowledges one window of c, 16 segments an ack as sdx's
// receivers do, over one round trip of rtt ns that starts at *now.
func cubicRound(c *congestion, una *uint64, now *int64, rtt int64) {
	w := c.cwnd
	acks := max(w/(16*ccMSS), 1)
	for i := range acks {
		n := w / acks
		if i == acks-1 {
			n = w - n*(acks-1)
		}
		*una += uint64(n)
		c.onAck(n, *una, true, *now+rtt*int64(i+1)/int64(acks), rtt)
	}
	*now += rtt
}

// cubicAfterLoss is a CUBIC window in congestion avoidance at 100
// segments that took a loss with all of them in flight, the episode over.
func cubicAfterLoss(t *testing.T, rtt int64) (c *congestion, una uint64, now int64) {
	t.Helper()
	c = new(congestion)
	c.start(ccMSS, false, false)
	c.cwnd, c.ssthresh = 100*ccMSS, 100*ccMSS
	now = 1
	if !c.onLoss(una, una+100*ccMSS, 100*ccMSS) || c.cwnd != 70*ccMSS {
		t.Fatalf("after a loss with 100 segments out: %d, want %d", c.cwnd, 70*ccMSS)
	}
	una += 100 * ccMSS // the recovery point: the episode ends
	c.onAck(0, una, true, now, rtt)
	return c, una, now
}

// CUBIC on a long round trip, where its curve rules: β = 0.7 on a loss,
// back to the window before the loss after K = ∛(W_max(1-β)/C) seconds,
// concave on the way there and convex past it (RFC 9438, figure 1 and
// section 4).
func TestCongestionCubicCurve(t *testing.T) {
	const rtt = int64(100 * time.Millisecond)
	c, una, now := cubicAfterLoss(t, rtt)
	k := math.Cbrt(100 * (1 - cubicBeta) / cubicC) // 4.2 s
	var grew []int
	for now < int64(k*1e9)-rtt/2 {
		before := c.cwnd
		cubicRound(c, &una, &now, rtt)
		grew = append(grew, c.cwnd-before)
	}
	if w := float64(c.cwnd) / ccMSS; w < 97 || w > 101 {
		t.Fatalf("after K = %.2f s: %.1f segments, want about the 100 before the loss", k, w)
	}
	if len(grew) < 20 || grew[0] <= grew[len(grew)-1] || grew[len(grew)-1] > 2*ccMSS {
		t.Fatalf("not concave toward W_max: growth per round trip %v", grew)
	}
	// Past K the curve turns up again, ever faster.
	var past []int
	for range 20 {
		before := c.cwnd
		cubicRound(c, &una, &now, rtt)
		past = append(past, c.cwnd-before)
	}
	if c.cwnd <= 105*ccMSS || past[len(past)-1] <= past[0] {
		t.Fatalf("not convex past W_max: %d segments, growth %v", c.cwnd/ccMSS, past)
	}
	// A loss below the previous W_max lowers the plateau further: fast
	// convergence (section 4.7).
	w := c.cwnd
	c.onLoss(una, una+uint64(w), w)
	before := float64(w) / ccMSS
	c.onLoss(una+uint64(w), una+uint64(2*w), c.cwnd) // a new episode, smaller
	if want := float64(int(before*cubicBeta)) * (1 + cubicBeta) / 2; c.wMax < want-1 || c.wMax > want+1 {
		t.Fatalf("fast convergence: W_max %.1f, want about %.1f", c.wMax, want)
	}
}

// On a short round trip the curve is slower than Reno: CUBIC follows
// its Reno-friendly estimate, α = 3(1-β)/(1+β) segments a round trip
// until it passes the window the reduction began at, then one.
func TestCongestionCubicRenoFriendly(t *testing.T) {
	const rtt = int64(400 * time.Microsecond)
	c, una, now := cubicAfterLoss(t, rtt)
	for range 20 {
		cubicRound(c, &una, &now, rtt)
	}
	if w, want := float64(c.cwnd)/ccMSS, 70+20*cubicAlpha; w < want-1.5 || w > want+1.5 {
		t.Fatalf("20 round trips after the loss: %.1f segments, want about %.1f", w, want)
	}
	for c.cwnd < 100*ccMSS {
		cubicRound(c, &una, &now, rtt)
	}
	w := c.cwnd
	for range 10 {
		cubicRound(c, &una, &now, rtt)
	}
	if g := float64(c.cwnd-w) / ccMSS; g < 9 || g > 12 {
		t.Fatalf("past the prior window: %.1f segments in 10 round trips, want about 10", g)
	}
}

// A timeout forgets the curve and its undo brings it back; NewReno and
// CUBIC differ only in β there.
func TestCongestionCubicRTO(t *testing.T) {
	var c congestion
	c.start(ccMSS, false, false)
	c.cwnd, c.ssthresh = 50*ccMSS, 50*ccMSS
	c.onLoss(0, 50*ccMSS, 50*ccMSS)
	wMax := c.wMax
	c.onAck(50*ccMSS, 50*ccMSS, true, 1, 1000)
	cw := c.cwnd
	c.onRTO(80*ccMSS, 30*ccMSS)
	if c.cwnd != ccMSS || c.ssthresh != 21*ccMSS || c.wMax != 0 {
		t.Fatalf("after a timeout: cwnd %d ssthresh %d W_max %.1f", c.cwnd, c.ssthresh, c.wMax)
	}
	if !c.onSpurious() || c.cwnd != cw || c.wMax != wMax {
		t.Fatalf("undo: cwnd %d (want %d), W_max %.1f (want %.1f)", c.cwnd, cw, c.wMax, wMax)
	}
	var r congestion
	r.start(ccMSS, false, true)
	r.cwnd = 50 * ccMSS
	r.onRTO(80*ccMSS, 30*ccMSS)
	if r.ssthresh != 15*ccMSS {
		t.Fatalf("NewReno after a timeout: ssthresh %d", r.ssthresh)
	}
}

// A loss that ends slow start halves, even for CUBIC: the flight is up
// to twice what the path holds, and the curve starts there, with no
// plateau at the overshoot.
func TestCongestionCubicSlowStartLoss(t *testing.T) {
	var c congestion
	c.start(ccMSS, false, false)
	c.cwnd = 80 * ccMSS // still in slow start: ssthresh is unbounded
	c.onLoss(0, 80*ccMSS, 80*ccMSS)
	if c.cwnd != 40*ccMSS || c.wMax != 40 {
		t.Fatalf("a loss in slow start: cwnd %d, W_max %.1f; want %d and 40", c.cwnd, c.wMax, 40*ccMSS)
	}
	// Past slow start, β is 0.7.
	c.onAck(80*ccMSS, 80*ccMSS, true, 1, 1000)
	w := c.cwnd
	c.onLoss(80*ccMSS, 80*ccMSS+uint64(w), w)
	if c.cwnd != int(float64(w)*cubicBeta) {
		t.Fatalf("a loss in congestion avoidance: %d, want %d", c.cwnd, int(float64(w)*cubicBeta))
	}
}
