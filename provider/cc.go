package provider

import "math"

// congestion is a connection's congestion window: how many bytes its
// sender may have in the network (the pipe of RFC 6675: sent, not yet
// acknowledged or SACKed, and not presumed lost), whatever the peer's
// window allows. The sender sends while both allow it.
//
// It is CUBIC's window (RFC 9438), or NewReno's (RFC 5681, RFC 6582)
// where Config.Congestion asks for it, on sdx's SACK loss recovery (RFC
// 6675), with DCTCP's response to ECN marks (RFC 8257) on connections
// where both ends take part in ECN:
//
//   - it starts at initialWindow (RFC 6928's ten segments) and grows by
//     the bytes each ack covers in slow start (RFC 3465, without the L
//     limit: sdx acknowledges every ackEvery segments), and only while
//     the sender was limited by it (RFC 7661);
//   - in congestion avoidance NewReno adds one segment per window;
//     CUBIC follows its cubic curve back toward, and then past, the
//     window before the last reduction, but never grows slower than the
//     Reno-friendly estimate of RFC 9438 section 4.3 (on sub-millisecond
//     round trips that estimate is what it follows, as Linux's cubic
//     does: kernel TCP flows on the same port are its peers);
//   - a loss (fast retransmission) reduces it to β of the flight (β is
//     1/2 for NewReno, 0.7 for CUBIC), once per recovery episode: until
//     everything sent before the loss was found is acknowledged;
//   - a retransmission timeout takes it to one segment and slow start
//     from there (RFC 5681 section 3.1), keeping the window before so
//     that a spurious timeout can be undone (RFC 5682's response);
//   - ECN marks echoed by the peer shrink it by α/2 at most once a
//     round trip, where α is the moving average (gain 1/16) of the
//     fraction of bytes marked per window of data.
//
// It is a plain value, owned by the connection's sender; it reads no
// clock and touches nothing else, so it is tested alone (cc_test.go).
type congestion struct {
	mss      int
	cwnd     int // bytes
	ssthresh int
	acc      int // bytes acknowledged toward the next segment of growth in congestion avoidance

	// Loss recovery: one reduction per episode.
	recovering bool
	recover    uint64 // the episode ends when everything below is acknowledged

	// The last retransmission timeout's reduction: undone when the
	// timeout proves spurious (see onSpurious). rtoEpisode: the timer
	// has expired since the last ack that moved; later expiries do not
	// reduce again.
	undoCwnd, undoSsthresh int
	undoable               bool
	rtoEpisode             bool

	// CUBIC (RFC 9438), in segments and seconds: wMax is the window
	// before the last reduction (lastMax the one before that, for fast
	// convergence), k how long the curve takes back to it from the
	// epoch's start at epoch (ns; 0: the next ack in avoidance starts
	// one), wEst the Reno-friendly estimate and prior the window the
	// reduction started from.
	cubic             bool
	wMax, lastMax, k  float64
	epoch             int64
	wEst, prior       float64
	undoMax, undoLast float64 // wMax and lastMax before a timeout, for its undo

	// DCTCP (RFC 8257). alpha is in units of 1/alphaOne.
	ecn      bool
	alpha    int64
	obsEnd   uint64 // the observation window ends when snd.una reaches it
	ackedB   int64  // bytes acknowledged in the observation window
	markedB  int64  // of which the peer reported marked
	ceSeen   uint8  // the peer's latest CE count
	cwrEnd   uint64 // no reduction for marks until snd.una reaches it
	ceEchoed uint64 // marks the peer reported, in all
}

// CUBIC's constants (RFC 9438 section 5): β, C in segments per second
// cubed, and the Reno-friendly increase per round trip.
const (
	cubicBeta  = 0.7
	cubicC     = 0.4
	cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)
)

const (
	initialSegments = 10 // RFC 6928
	alphaOne        = 1 << 16
	dctcpShift      = 4 // g = 1/16 (RFC 8257 section 4.2)
	maxCwnd         = math.MaxInt32
)

// start sets the window of a new connection with segments of mss bytes:
// CUBIC's unless reno.
func (c *congestion) start(mss int, ecn, reno bool) {
	*c = congestion{
		mss:      mss,
		cwnd:     initialSegments * mss,
		ssthresh: maxCwnd,
		ecn:      ecn,
		alpha:    alphaOne, // RFC 8257: start at 1, the safe side
		cubic:    !reno,
	}
}

// beta is the multiplicative decrease on a loss.
func (c *congestion) beta() float64 {
	if c.cubic {
		return cubicBeta
	}
	return 0.5
}

// reduced notes a reduction from the window before, in bytes, for
// CUBIC: the curve's plateau moves there, a little lower when the
// window keeps falling (fast convergence, RFC 9438 section 4.7), and a
// new epoch starts at the next ack in congestion avoidance.
func (c *congestion) reduced(before int) {
	if !c.cubic {
		return
	}
	w := float64(before) / float64(c.mss)
	c.wMax = w
	if w < c.lastMax {
		c.wMax = w * (1 + cubicBeta) / 2
	}
	c.lastMax = w
	c.prior = w
	c.epoch = 0
}

// cubicGrow is CUBIC's congestion avoidance for an ack of acked bytes at
// now, with the smoothed round trip srtt (ns): RFC 9438 sections 4.2 to
// 4.5, per ack rather than per segment (the segments it covers count).
func (c *congestion) cubicGrow(acked int, now, srtt int64) {
	mss := float64(c.mss)
	cw := float64(c.cwnd) / mss
	segs := float64(acked) / mss
	if c.epoch == 0 {
		c.epoch = now
		if c.wMax <= cw {
			c.wMax, c.k = cw, 0
		} else {
			c.k = math.Cbrt((c.wMax - cw) / cubicC)
		}
		c.wEst = cw
	}
	curve := func(t float64) float64 { d := t - c.k; return cubicC*d*d*d + c.wMax }
	t := float64(now-c.epoch) / 1e9
	alpha := cubicAlpha
	if c.wEst >= c.prior {
		alpha = 1 // as fast as Reno once past where the reduction began
	}
	c.wEst += alpha * segs / cw
	next := cw
	if curve(t) < c.wEst {
		next = c.wEst // the Reno-friendly region
	} else {
		target := min(max(curve(t+float64(srtt)/1e9), cw), 1.5*cw)
		next = cw + (target-cw)*segs/cw
	}
	c.cwnd = max(c.cwnd, min(int(next*mss), maxCwnd))
}

// setMSS takes a segment size that changed before any data went out.
func (c *congestion) setMSS(mss int) {
	if c.cwnd == initialSegments*c.mss {
		c.cwnd = initialSegments * mss
	}
	c.mss = mss
}

// inSlowStart reports whether the window grows by what each ack covers.
func (c *congestion) inSlowStart() bool { return c.cwnd < c.ssthresh }

// onAck takes an ack at now that moved snd.una to una by acked bytes;
// limited says the sender had filled the window when it last sent, srtt
// is the smoothed round trip (ns).
func (c *congestion) onAck(acked int, una uint64, limited bool, now, srtt int64) {
	c.rtoEpisode = false
	if c.recovering {
		if una < c.recover {
			return // a partial ack: the window stays (RFC 6675)
		}
		c.recovering = false
	}
	if !limited || acked <= 0 {
		return
	}
	if c.cwnd < c.ssthresh {
		grow := min(acked, c.ssthresh-c.cwnd)
		c.cwnd += grow
		acked -= grow
	}
	if acked > 0 && c.cwnd >= c.ssthresh {
		if c.cubic {
			c.cubicGrow(acked, now, srtt)
			return
		}
		c.acc += acked
		for c.acc >= c.cwnd {
			c.acc -= c.cwnd
			c.cwnd += c.mss
		}
	}
	c.cwnd = min(c.cwnd, maxCwnd)
}

// onLoss takes a loss the SACK scoreboard found (a fast retransmission)
// while flight bytes were outstanding from una to nxt. It reports
// whether the window was reduced: once per recovery episode.
func (c *congestion) onLoss(una, nxt uint64, flight int) bool {
	if c.recovering && una < c.recover {
		return false
	}
	beta := c.beta()
	if c.cwnd < c.ssthresh {
		// The loss ends slow start: the window doubled in the round trip
		// the loss was in, so the flight is up to twice what the path
		// holds, and β = 0.7 of it would keep the queue overflowing for
		// another episode. Halve, as NewReno does, and let CUBIC's curve
		// start from there, with no plateau at the overshoot.
		beta = 0.5
		c.reduced(int(float64(flight) * beta))
	} else {
		c.reduced(c.cwnd)
	}
	c.ssthresh = max(int(float64(flight)*beta), 2*c.mss)
	c.cwnd = c.ssthresh
	c.acc = 0
	c.recovering, c.recover = true, nxt
	c.cwrEnd = max(c.cwrEnd, nxt) // no ECN reduction on top of this one
	c.undoable = false
	return true
}

// onRTO takes a retransmission timeout with flight bytes outstanding up
// to nxt: the window restarts from one segment. Only the first expiry
// of a run (no ack moved in between) lowers ssthresh and may be undone.
// CUBIC forgets its curve, as Linux's does: slow start leads to a new one.
func (c *congestion) onRTO(nxt uint64, flight int) {
	if !c.rtoEpisode {
		c.undoCwnd, c.undoSsthresh = c.cwnd, c.ssthresh
		c.undoMax, c.undoLast = c.wMax, c.lastMax
		c.undoable = true
		c.ssthresh = max(int(float64(flight)*c.beta()), 2*c.mss)
		c.wMax, c.lastMax, c.epoch = 0, 0, 0
	}
	c.rtoEpisode = true
	c.cwnd = c.mss
	c.acc = 0
	c.recovering, c.recover = false, nxt
	c.cwrEnd = max(c.cwrEnd, nxt)
}

// onSpurious undoes the last timeout's reduction: the data it presumed
// lost had arrived. It reports whether there was one to undo.
func (c *congestion) onSpurious() bool {
	if !c.undoable {
		return false
	}
	c.undoable = false
	c.cwnd = max(c.cwnd, c.undoCwnd)
	c.ssthresh = max(c.ssthresh, c.undoSsthresh)
	c.wMax, c.lastMax, c.epoch = c.undoMax, c.undoLast, 0
	c.recovering = false
	return true
}

// onECN takes the CE count ce of a frame from the peer that acknowledged
// newly bytes (cumulatively or by SACK) with snd.una at una and snd.nxt
// at nxt. It reports whether it reduced the window.
func (c *congestion) onECN(ce uint8, newly int, una, nxt uint64) bool {
	if !c.ecn {
		return false
	}
	marks := int(ce - c.ceSeen) // mod 256
	c.ceSeen = ce
	c.ceEchoed += uint64(marks)
	c.ackedB += int64(newly)
	c.markedB += int64(marks * c.mss)
	if una >= c.obsEnd && c.ackedB > 0 {
		// A window of data observed: fold its fraction of marks into α.
		f := min(c.markedB, c.ackedB) * alphaOne / c.ackedB
		c.alpha += (f - c.alpha) >> dctcpShift
		c.ackedB, c.markedB = 0, 0
		c.obsEnd = nxt
	}
	if marks == 0 || una < c.cwrEnd || c.recovering {
		return false
	}
	c.reduced(c.cwnd)
	c.cwnd = max(c.cwnd-int(int64(c.cwnd)*c.alpha/(2*alphaOne)), 2*c.mss)
	c.ssthresh = c.cwnd
	c.acc = 0
	c.cwrEnd = nxt
	return true
}

// What stopped a sender with data queued: nothing, the peer's window
// (credit), the congestion window, or the buffer pool.
const (
	limitNone uint8 = iota
	limitCredit
	limitCwnd
	limitPool
	limitPace
)

// Pacing. A window sent at once arrives at a shallow buffer as one burst
// and overflows it; spread over the round trip it arrives as the acks
// come back. A connection sends at most paceBurst segments back to back
// and the rest of its window at paceRate times cwnd per SRTT (twice that
// in slow start, as Linux does), so the window can still grow.
const (
	paceBurst       = 16
	paceRateSlow    = 2  // times cwnd per SRTT, in slow start
	paceRatePer10   = 12 // tenths of cwnd per SRTT, in congestion avoidance
	numBurstBuckets = 7  // 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+ segments
)

// paceGap is how long n bytes take at the pacing rate; 0 before an RTT
// sample.
func (s *sender) paceGap(n int) int64 {
	if s.rtt.srtt == 0 || s.cc.cwnd <= 0 {
		return 0
	}
	if s.cc.inSlowStart() {
		return int64(n) * s.rtt.srtt / (paceRateSlow * int64(s.cc.cwnd))
	}
	return int64(n) * s.rtt.srtt * 10 / (paceRatePer10 * int64(s.cc.cwnd))
}

// paceSlack is how far ahead of paceNext a segment may go: a burst of
// paceBurst segments.
func (s *sender) paceSlack() int64 { return s.paceGap(paceBurst * s.mssOrOne()) }

func (s *sender) mssOrOne() int { return max(s.cc.mss, 1) }

// burstBucket is the histogram bucket of a burst of n segments.
func burstBucket(n int) int {
	b := 0
	for n > 1 && b < numBurstBuckets-1 {
		n >>= 1
		b++
	}
	return b
}
