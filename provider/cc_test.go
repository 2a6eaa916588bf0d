package provider

import "testing"

// The congestion window alone: each rule of cc.go with the numbers an
// RFC gives.

const ccMSS = 1000

func TestCongestionSlowStart(t *testing.T) {
	var c congestion
	c.start(ccMSS, false)
	if c.cwnd != 10*ccMSS || !c.inSlowStart() {
		t.Fatalf("initial window %d, slow start %v; want %d", c.cwnd, c.inSlowStart(), 10*ccMSS)
	}
	// Each round trip acknowledges a whole window: it doubles.
	una := uint64(0)
	for range 3 {
		w := c.cwnd
		una += uint64(w)
		c.onAck(w, una, true)
		if c.cwnd != 2*w {
			t.Fatalf("after a window of acks: %d, want %d", c.cwnd, 2*w)
		}
	}
	// A sender that did not fill its window does not grow it (RFC 7661).
	w := c.cwnd
	c.onAck(ccMSS, una+ccMSS, false)
	if c.cwnd != w {
		t.Fatalf("grew to %d while not limited by the window", c.cwnd)
	}
}

func TestCongestionAvoidanceAndHalving(t *testing.T) {
	var c congestion
	c.start(ccMSS, false)
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
	c.onAck(10*ccMSS, 15*ccMSS, true)
	if c.cwnd != 20*ccMSS || !c.recovering {
		t.Fatalf("partial ack: cwnd %d recovering %v", c.cwnd, c.recovering)
	}
	c.onAck(25*ccMSS, 40*ccMSS, true)
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
			c.onAck(ccMSS, una, true)
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
	c.onAck(c.cwnd, una+uint64(2*c.cwnd), true)
	c.onLoss(una+uint64(4*c.cwnd), una+uint64(4*c.cwnd)+1, ccMSS)
	if c.cwnd != 2*ccMSS {
		t.Fatalf("floor: %d, want %d", c.cwnd, 2*ccMSS)
	}
}

func TestCongestionRTO(t *testing.T) {
	var c congestion
	c.start(ccMSS, false)
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
		c.onAck(c.cwnd, una, true)
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
	c.start(ccMSS, true)
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
	n.start(ccMSS, false)
	if n.onECN(9, ccMSS, 0, 0) || n.cwnd != 10*ccMSS {
		t.Fatal("a connection without ECN reacted to a count")
	}
}
