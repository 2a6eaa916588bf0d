package provider

import "math"

// congestion is a connection's congestion window: how many bytes its
// sender may have in the network (the pipe of RFC 6675: sent, not yet
// acknowledged or SACKed, and not presumed lost), whatever the peer's
// window allows. The sender sends while both allow it.
//
// It is NewReno's window (RFC 5681, RFC 6582) on sdx's SACK loss
// recovery (RFC 6675), with DCTCP's response to ECN marks (RFC 8257)
// on connections where both ends take part in ECN:
//
//   - it starts at initialWindow (RFC 6928's ten segments) and grows by
//     the bytes each ack covers in slow start (RFC 3465, without the L
//     limit: sdx acknowledges every ackEvery segments), by one segment
//     per window in congestion avoidance, and only while the sender was
//     limited by it (RFC 7661);
//   - a loss (fast retransmission) halves it, once per recovery episode:
//     until everything sent before the loss was found is acknowledged;
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

const (
	initialSegments = 10 // RFC 6928
	alphaOne        = 1 << 16
	dctcpShift      = 4 // g = 1/16 (RFC 8257 section 4.2)
	maxCwnd         = math.MaxInt32
)

// start sets the window of a new connection with segments of mss bytes.
func (c *congestion) start(mss int, ecn bool) {
	*c = congestion{
		mss:      mss,
		cwnd:     initialSegments * mss,
		ssthresh: maxCwnd,
		ecn:      ecn,
		alpha:    alphaOne, // RFC 8257: start at 1, the safe side
	}
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

// onAck takes an ack that moved snd.una to una by acked bytes; limited
// says the sender had filled the window when it last sent. nxt is
// snd.nxt.
func (c *congestion) onAck(acked int, una uint64, limited bool) {
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
	c.ssthresh = max(flight/2, 2*c.mss)
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
func (c *congestion) onRTO(nxt uint64, flight int) {
	if !c.rtoEpisode {
		c.undoCwnd, c.undoSsthresh = c.cwnd, c.ssthresh
		c.undoable = true
		c.ssthresh = max(flight/2, 2*c.mss)
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
	c.cwnd = max(c.cwnd-int(int64(c.cwnd)*c.alpha/(2*alphaOne)), 2*c.mss)
	c.ssthresh = c.cwnd
	c.acc = 0
	c.cwrEnd = nxt
	return true
}
