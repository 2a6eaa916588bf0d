package provider

import (
	"errors"
	"math"

	"github.com/sdx-project/sdx/internal/wire"
)

// The send side of a connection: the send queue of segments, what is in
// flight, the SACK scoreboard and the retransmission state.

// sender is a connection's send side. Its segments sit in a ring: the
// first sent from shead are in flight (transmitted, not yet
// acknowledged), the rest queued. It is part of its endpoint, owned by
// the poller; the engine's send path (write, sendData, onAck, onSACK,
// onRTO, below) drives it, and its own methods keep the ring and the
// scoreboard without touching the pool, the link or the clock.
type sender struct {
	segs     []seg
	shead    int
	sent     int // segments transmitted and not yet acknowledged
	slen     int // segments in the ring
	sndUna   uint64
	sndNxt   uint64 // highest offset transmitted + 1
	sndEnd   uint64 // end of queued data
	sndRight uint64 // the peer's window edge: we may send below it
	dupAcks  int
	finQd    bool // Shutdown called: no more data
	finOwed  bool // the disconnect waits for a free slot in the ring
	finAcked bool

	// Credit (see credit.go).
	starved bool // a write found no buffer; retry when one is freed
	winWait bool // a write stopped at its share beyond the peer's window
	beyond  int  // bytes queued beyond the peer's window edge (in engine.sendBeyond)

	// Small segments (below the MSS): smallEnd is the end of the latest
	// one sent, holdEnd of the latest one sent with FlagAckReq. While
	// that one is unacknowledged, a further small segment waits and
	// gathers the writes that follow (held) until its ack or a full
	// segment. See sendData.
	smallEnd, holdEnd uint64
	held              bool

	// sackKnown: below this offset the peer's latest SACK report listed
	// every block it holds, so a segment there that no block covers is
	// missing; above it the report may have left blocks out (see
	// fillSACK), and no loss is inferred there.
	sackKnown uint64

	// Retransmission timer, RFC 6298.
	rtt   rttStats
	rtoAt int64 // 0: stopped

	// Frames that vanish for their size: bigLost counts timer expiries
	// that found the same large segment unacknowledged although the peer
	// answered the probe sent at the previous one (bigAt). See
	// lostForSize.
	bigLost int
	bigAt   int64

	// Congestion control (cc.go). The pipe is sndNxt - sndUna less
	// sackedB (bytes in flight SACKed) and lostB (bytes marked for
	// retransmission and not yet retransmitted); sackNew counts the
	// bytes SACKed since the last ack was taken. cwndLimited: the window, not the data or the credit,
	// held the sender back when it last sent, so an ack may open it
	// further. limit is what stopped the sender last (limitNone, ...).
	cc             congestion
	sackedB, lostB int
	sackNew        int
	cwndLimited    bool
	limit          uint8

	// Pacing (see pace): the next segment may go at paceNext, less the
	// slack of a burst; paceWait, a timer is set for it.
	paceNext int64
	paceWait bool
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

// segLen is the sequence space a segment takes.
func (s *seg) segLen() int { return int(s.end() - s.seq) }

// pipe is RFC 6675's estimate of the bytes in the network.
func (s *sender) pipe() int {
	return max(int(s.sndNxt-s.sndUna)-s.sackedB-s.lostB, 0)
}

// markRtx marks g for retransmission.
func (s *sender) markRtx(g *seg) {
	if !g.rtx {
		g.rtx = true
		s.lostB += g.segLen()
	}
}

// clearRtx takes g's retransmission mark away: it was retransmitted, or
// SACKed, or acknowledged.
func (s *sender) clearRtx(g *seg) {
	if g.rtx {
		g.rtx = false
		s.lostB -= g.segLen()
	}
}

// seg is a segment of send data in its buffer: the payload sits at
// HeaderLen in the buffer, so the header is encoded in place.
type seg struct {
	seq    uint64
	sentAt int64 // last transmission; 0 before the first
	buf    uint32
	n      uint16
	fin    bool // a disconnect marker: no data, one offset of sequence space
	sacked bool
	rtx    bool   // marked lost: retransmit at the next output
	resent bool   // retransmitted at least once (no RTT sample: Karn)
	fast   bool   // already fast-retransmitted in this loss episode
	tx     uint64 // engine.txCount at its latest transmission: orders them, ties of the clock included
}

func (s *seg) end() uint64 {
	if s.fin {
		return s.seq + 1
	}
	return s.seq + uint64(s.n)
}

// at is the i-th segment of the ring from its head: in flight for
// i < sent, queued after.
func (s *sender) at(i int) *seg {
	return &s.segs[(s.shead+i)&(len(s.segs)-1)]
}

// full reports whether the ring has no room for another segment.
func (s *sender) full() bool {
	return s.slen == len(s.segs)
}

// push queues g after the ring's last segment, which must have room.
func (s *sender) push(g seg) {
	*s.at(s.slen) = g
	s.slen++
}

// pop drops the oldest segment in flight: it was acknowledged.
func (s *sender) pop() {
	g := s.at(0)
	if g.sacked {
		s.sackedB -= g.segLen()
	}
	s.clearRtx(g)
	*g = seg{}
	s.shead = (s.shead + 1) & (len(s.segs) - 1)
	s.sent--
	s.slen--
}

// sackReport takes the blocks of a SACK report (an ack or an answer; data
// frames carry none). A full report may have left out blocks above the
// highest of its ascending part, and sackKnown says where the report's
// knowledge ends; a segment marked SACKed below it that the report does
// not list was dropped by the receiver (renege) and loses its mark.
func (s *sender) sackReport(blocks []wire.SACKBlock) {
	s.sackKnown = math.MaxUint64
	if len(blocks) == wire.MaxSACK {
		s.sackKnown = 0
		for _, b := range blocks[1:] {
			s.sackKnown = max(s.sackKnown, b.End)
		}
	}
	for i := range s.sent {
		g := s.at(i)
		if !g.sacked || g.end() > s.sackKnown {
			continue
		}
		listed := false
		for _, b := range blocks {
			if g.seq >= b.Start && g.end() <= b.End {
				listed = true
				break
			}
		}
		if !listed {
			g.sacked = false
			s.sackedB -= g.segLen()
		}
	}
}

// markSACKed marks the segments in flight that blocks cover, and returns
// the round trip of the newest one the first block newly covers, or -1:
// only the first block holds the segment whose arrival sent this ack;
// the others may be reported long after theirs (fillSACK), which is no
// round trip.
func (s *sender) markSACKed(blocks []wire.SACKBlock, now int64) int64 {
	var sample int64 = -1
	for b, blk := range blocks {
		for i := range s.sent {
			g := s.at(i)
			if !g.sacked && g.seq >= blk.Start && g.end() <= blk.End {
				g.sacked = true
				s.sackedB += g.segLen()
				s.sackNew += g.segLen()
				s.clearRtx(g)
				if r := now - g.sentAt; b == 0 && !g.resent && (sample < 0 || r < sample) {
					sample = r // the newest segment: the freshest round trip
				}
			}
		}
	}
	return sample
}

// markFastLost marks for fast retransmission, once, each segment in
// flight that is not SACKed and has three SACKed segments above it, and
// again a fast-retransmitted one when something sent after it has been
// SACKed (its retransmission was lost too). Only segments below sackKnown
// count. It returns how many it marked.
func (s *sender) markFastLost() int {
	var newest uint64 // the latest transmission the receiver has SACKed
	for i := range s.sent {
		if g := s.at(i); g.sacked {
			newest = max(newest, g.tx)
		}
	}
	above, marked := 0, 0
	for i := s.sent - 1; i >= 0; i-- {
		g := s.at(i)
		if g.sacked {
			above++
			continue
		}
		if g.fast && !g.rtx && g.tx < newest && g.end() <= s.sackKnown {
			// Its fast retransmission was lost: something sent after
			// it has arrived. Again now, not at the next timer expiry,
			// which at 20% loss is most of the recovery time.
			s.markRtx(g)
			marked++
			continue
		}
		if above >= 3 && !g.fast && !g.rtx && g.end() <= s.sackKnown {
			s.markRtx(g)
			g.fast = true
			marked++
		}
	}
	return marked
}

// countDupAck counts a duplicate ack; the third marks the oldest segment in
// flight that is not SACKed for fast retransmission, unless it already
// was. It reports whether it marked one.
func (s *sender) countDupAck() bool {
	s.dupAcks++
	if s.dupAcks != 3 {
		return false
	}
	for i := range s.sent {
		g := s.at(i)
		if !g.sacked {
			if !g.fast && !g.rtx {
				s.markRtx(g)
				g.fast = true
				return true
			}
			return false
		}
	}
	return false
}

// markLost is the retransmission timer's verdict: the oldest segment in
// flight that is not SACKed, and every other one sent at or before cutoff
// below sackKnown, are marked for retransmission, and a new loss episode
// begins (fast retransmissions may happen again).
func (s *sender) markLost(cutoff int64) {
	marked := false
	for i := range s.sent {
		g := s.at(i)
		g.fast = false
		// What the receiver SACKed and then dropped (renege) lost its
		// mark when a SACK report left it out (sackReport).
		if g.sacked {
			continue
		}
		if !marked || g.sentAt <= cutoff && g.end() <= s.sackKnown {
			s.markRtx(g)
			marked = true
		}
	}
	s.dupAcks = 0
}

// ---- the engine's send path ---------------------------------------------

// write copies as much of b into the send buffer as fits and returns how
// many bytes it took.
func (e *engine) write(ep *endpoint, b []byte) (int, error) {
	switch {
	case ep.state == StateFailed:
		return 0, ep.err
	case ep.state != StateEstablished:
		return 0, ErrNotConn
	case ep.snd.finQd:
		return 0, ErrShutdown
	}
	n := 0
	region := -2 // not yet asked
	for n < len(b) && int(ep.snd.sndEnd-ep.snd.sndUna) < e.cfg.SendBuffer {
		room := e.cfg.SendBuffer - int(ep.snd.sndEnd-ep.snd.sndUna)
		if ep.snd.slen > ep.snd.sent {
			// The newest segment is not yet transmitted: fill it up.
			s := ep.snd.at(ep.snd.slen - 1)
			if int(s.n) < ep.mss {
				k := copy(e.pool.buf(s.buf)[wire.HeaderLen+int(s.n):wire.HeaderLen+ep.mss], b[n:min(len(b), n+room)])
				s.n += uint16(k)
				n += k
				ep.snd.sndEnd += uint64(k)
				continue
			}
		}
		if ep.snd.full() {
			break
		}
		if e.sendHeld() >= e.sendCap {
			e.starve(ep)
			break
		}
		if !e.mayQueue(ep) {
			break
		}
		if region == -2 {
			region = e.sendRegion(ep)
		}
		buf, ok := e.pool.getIn(placeSendQueued, region)
		if !ok {
			// The halves bound what each holds, so the pool is never
			// empty here; should the receive half overrun its bound,
			// the writer waits for a buffer instead of failing.
			e.starve(ep)
			break
		}
		k := copy(e.pool.buf(buf)[wire.HeaderLen:wire.HeaderLen+ep.mss], b[n:min(len(b), n+room)])
		ep.snd.push(seg{seq: ep.snd.sndEnd, buf: buf, n: uint16(k)})
		n += k
		ep.snd.sndEnd += uint64(k)
		e.rebeyond(ep)
	}
	if n > 0 {
		e.rebeyond(ep)
		e.queueOutput(ep)
	}
	return n, nil
}

// shutdown ends the send direction: a disconnect marker follows the data.
func (e *engine) shutdown(ep *endpoint) error {
	switch {
	case ep.state == StateFailed:
		return ep.err
	case ep.state != StateEstablished:
		return ErrNotConn
	case ep.snd.finQd:
		return nil
	}
	ep.snd.finQd = true
	if ep.snd.full() {
		// Many small segments in flight: the disconnect follows them as
		// soon as an ack frees a slot. The caller is not told to try
		// again for a resource the engine frees by itself.
		ep.snd.finOwed = true
		return nil
	}
	e.queueFin(ep)
	return nil
}

// queueFin puts the disconnect marker after the data; the ring has room.
func (e *engine) queueFin(ep *endpoint) {
	ep.snd.finOwed = false
	ep.snd.push(seg{seq: ep.snd.sndEnd, buf: noBuf, fin: true})
	ep.snd.sndEnd++
	e.queueOutput(ep)
}

// writable reports whether write would take at least one byte, or fail.
func (e *engine) writable(ep *endpoint) bool {
	if ep.state != StateEstablished || ep.snd.finQd {
		return true
	}
	return int(ep.snd.sndEnd-ep.snd.sndUna) < e.cfg.SendBuffer && (ep.snd.slen < len(ep.snd.segs) || ep.snd.slen > ep.snd.sent) &&
		e.sendHeld() < e.sendCap
}

// onAck processes the ack, window and SACK blocks of a frame.
func (e *engine) onAck(ep *endpoint, h *wire.Header) {
	ack, una := h.Ack, ep.snd.sndUna
	if ack > ep.snd.sndNxt {
		e.st.dropBadAck.Add(1)
		return
	}
	grew := false
	if edge := ack + uint64(h.Window); edge > ep.snd.sndRight {
		ep.snd.sndRight = edge
		grew = true
	}
	ep.snd.sackNew = 0
	if ack > ep.snd.sndUna {
		var sample int64 = -1
		freed, repaired, spurious := false, false, false
		acked := int(ack - ep.snd.sndUna)
		for ep.snd.sent > 0 {
			s := ep.snd.at(0)
			if s.end() > ack {
				break
			}
			if s.rtx && !s.resent && !s.sacked {
				// The timer presumed it lost, and it was never sent
				// again: this ack is its first transmission's.
				spurious = true
			}
			if s.resent {
				// The ack moved because a hole was repaired: it came
				// when the retransmission arrived, late for every
				// segment above it, SACKed or not (a SACK report may
				// leave blocks out). No sample from this ack.
				repaired = true
			} else if !s.sacked {
				// A SACKed segment's cumulative ack comes late, when
				// the hole before it is filled: no sample from it.
				sample = e.now - s.sentAt
			}
			if s.fin {
				ep.snd.finAcked = true
				e.notify(ep, evWritable) // a graceful close waits for it
			}
			if s.buf != noBuf {
				e.freeBuf(s.buf)
				freed = true
			}
			ep.snd.pop()
		}
		ep.snd.sndUna = ack
		ep.stat.lastAck = e.now
		ep.snd.dupAcks = 0
		ep.snd.bigLost, ep.snd.bigAt = 0, 0
		if spurious && ep.snd.cc.onSpurious() {
			e.st.spuriousRTOs.Add(1)
			e.undoRTO(ep)
		}
		ep.snd.cc.onAck(acked, ack, ep.snd.cwndLimited)
		if sample >= 0 && !repaired {
			ep.snd.rtt.sample(sample)
		}
		ep.snd.rtt.settle(e.rtoBounds())
		if ep.snd.sent > 0 {
			ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
			e.schedule(ep, ep.snd.rtoAt)
		} else {
			ep.snd.rtoAt = 0
		}
		if ep.snd.finOwed && !ep.snd.full() {
			e.queueFin(ep)
		}
		if freed {
			e.notify(ep, evWritable)
		}
	} else if ack == ep.snd.sndUna && ep.snd.sent > 0 && h.Op == wire.OpAck && !grew {
		if ep.snd.countDupAck() {
			e.st.fastRetransmits.Add(1)
			ep.stat.fastRetransmits++
			e.onLoss(ep)
			e.queueOutput(ep)
		}
	}
	if h.Op == wire.OpAck || h.Op == wire.OpProbe && h.Flags&wire.FlagAnswer != 0 {
		ep.snd.sackReport(h.SACK[:h.NSACK])
	}
	if h.NSACK > 0 && ep.snd.sent > 0 {
		e.onSACK(ep, h)
	}
	if ep.ecnOK && h.Flags&wire.FlagECN != 0 {
		newly := ep.snd.sackNew
		if ack > una {
			newly += int(ack - una)
		}
		if marks := h.CE - ep.snd.cc.ceSeen; marks > 0 {
			e.st.ceEchoed.Add(uint64(marks))
		}
		if ep.snd.cc.onECN(h.CE, newly, ep.snd.sndUna, ep.snd.sndNxt) {
			e.st.ecnReductions.Add(1)
		}
	}
	if ep.snd.slen > ep.snd.sent {
		e.queueOutput(ep) // new credit, or a persist timer to arm
	}
	if ep.snd.beyond > 0 || ep.snd.winWait {
		e.rebeyond(ep)
	}
}

// onSACK marks SACKed segments and retransmits, once, each unSACKed
// segment with three SACKed segments above it.
func (e *engine) onSACK(ep *endpoint, h *wire.Header) {
	if sample := ep.snd.markSACKed(h.SACK[:h.NSACK], e.now); sample >= 0 {
		ep.snd.rtt.sample(sample)
	}
	if n := ep.snd.markFastLost(); n > 0 {
		e.st.fastRetransmits.Add(uint64(n))
		ep.stat.fastRetransmits += uint64(n)
		e.onLoss(ep)
		e.queueOutput(ep)
	}
}

// onLoss tells the congestion window of a loss the scoreboard found.
func (e *engine) onLoss(ep *endpoint) {
	if ep.snd.cc.onLoss(ep.snd.sndUna, ep.snd.sndNxt, int(ep.snd.sndNxt-ep.snd.sndUna)) {
		e.st.lossReductions.Add(1)
	}
}

// undoRTO takes back what a spurious retransmission timeout did beside
// the window: the segments it presumed lost and that were not sent again
// are in flight after all, so they lose their marks.
func (e *engine) undoRTO(ep *endpoint) {
	for i := range ep.snd.sent {
		if g := ep.snd.at(i); g.rtx && !g.resent && !g.fast {
			ep.snd.clearRtx(g)
		}
	}
	ep.snd.rtt.settle(e.rtoBounds())
}

// sendData transmits retransmissions, then new segments within the peer's
// window, then a pure ack if one is still owed. It reports whether it sent
// anything.
func (e *engine) sendData(ep *endpoint) bool {
	sent := false
	acked := false
	ep.snd.limit = limitNone
	byCwnd := false
	burst := 0 // new segments sent back to back
	for i := range ep.snd.sent {
		s := ep.snd.at(i)
		if !s.rtx || s.sacked {
			ep.snd.clearRtx(s)
			continue
		}
		// The congestion window holds retransmissions back too, but for
		// the oldest segment's: the repair everything waits for.
		if i > 0 && ep.snd.pipe()+s.segLen() > ep.snd.cc.cwnd {
			ep.snd.limit, byCwnd = limitCwnd, true
			break
		}
		// A retransmission asks for its ack at once: the sender is
		// recovering, and it may be the last segment of a burst.
		if !e.sendSeg(ep, s, true) {
			e.queueOutput(ep)
			return sent
		}
		ep.snd.clearRtx(s)
		s.resent = true
		e.st.retransmits.Add(1)
		ep.stat.retransmits++
		sent, acked = true, true
	}
	// The sender asks for an ack at once (FlagAckReq) on the segment
	// that takes what it has in flight past half of what it may have
	// (its send buffer, the peer's window or the congestion window):
	// the ack then comes back while the other half is still going out.
	var half uint64
	if ep.snd.sndRight > ep.snd.sndUna {
		half = min(uint64(e.cfg.SendBuffer), ep.snd.sndRight-ep.snd.sndUna, uint64(ep.snd.cc.cwnd)) / 2
	}
	for ep.snd.sent < ep.snd.slen {
		s := ep.snd.at(ep.snd.sent)
		if !s.fin && s.seq+uint64(s.n) > ep.snd.sndRight {
			ep.snd.limit = limitCredit
			break
		}
		if pipe := ep.snd.pipe(); pipe > 0 && pipe+s.segLen() > ep.snd.cc.cwnd {
			ep.snd.limit, byCwnd = limitCwnd, true
			break
		}
		if e.cfg.Pacing && burst > 0 && e.now < ep.snd.paceNext-ep.snd.paceSlack() {
			// Paced: the rest goes when the timer says.
			ep.snd.limit = limitPace
			if !ep.snd.paceWait {
				ep.snd.paceWait = true
				e.st.paceWaits.Add(1)
				e.schedule(ep, ep.snd.paceNext-ep.snd.paceSlack())
			}
			break
		}
		req := s.seq-ep.snd.sndUna < half && s.end()-ep.snd.sndUna >= half
		if !s.fin && int(s.n) < ep.mss && ep.snd.sent+1 == ep.snd.slen {
			// The newest segment, not full: the tail of what was
			// written. It goes at once, unless a small segment sent
			// with FlagAckReq is unacknowledged: then it waits for that
			// ack, which the peer sends at once, and gathers the writes
			// made meanwhile (Nagle's rule as Minshall refined it, with
			// the ack asked for). A lone message never waits; the
			// second of two in a row goes at once too, asking for its
			// ack, and the third waits at most for that.
			if ep.snd.holdEnd > ep.snd.sndUna {
				ep.snd.held = true
				break
			}
			if ep.snd.smallEnd > ep.snd.sndUna || ep.snd.held {
				req = true
				ep.snd.holdEnd = s.end()
			}
			ep.snd.held = false
			ep.snd.smallEnd = s.end()
		}
		if s.buf != noBuf {
			e.pool.move(s.buf, placeInFlight)
		}
		if !e.sendSeg(ep, s, req) {
			if s.buf != noBuf {
				e.pool.move(s.buf, placeSendQueued)
			}
			e.queueOutput(ep)
			return sent
		}
		ep.snd.sent++
		ep.snd.sndNxt = max(ep.snd.sndNxt, s.end())
		sent, acked = true, true
		burst++
		if e.cfg.Pacing {
			ep.snd.paceNext = max(ep.snd.paceNext, e.now) + ep.snd.paceGap(s.segLen())
		}
	}
	if burst > 0 {
		e.st.bursts[burstBucket(burst)].Add(1)
	}
	// The window was what held the sender back, or nearly: an ack may
	// open it further (RFC 7661's test, with Linux's slack of half a
	// window in slow start).
	ep.snd.cwndLimited = byCwnd || 2*ep.snd.pipe() >= ep.snd.cc.cwnd
	if byCwnd {
		e.st.cwndLimited.Add(1)
	}
	if ep.snd.sent > 0 && ep.snd.rtoAt == 0 {
		ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
		e.schedule(ep, ep.snd.rtoAt)
	}
	if ep.snd.sent == 0 && ep.snd.slen > 0 && ep.snd.rtoAt == 0 {
		// Window closed with data waiting: probe with the RTO's backoff.
		ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
		e.schedule(ep, ep.snd.rtoAt)
	}
	if ep.rcv.ackNow && !acked {
		op := wire.OpAck
		switch {
		case ep.rcv.probeAck:
			op = wire.OpProbe // asks for an answer, which answers a probe too
		case ep.rcv.answer:
			op = opAnswer
		}
		if errors.Is(e.sendCtl(ep, op, wire.ReasonNone), ErrNoBufs) {
			e.queueOutput(ep)
			return sent
		}
		sent = true
	}
	return sent
}

// sendSeg encodes a segment's header in place and sends it, with
// FlagAckReq when req. It reports false when the link is out of transmit
// slots even after a flush.
func (e *engine) sendSeg(ep *endpoint, s *seg, req bool) bool {
	if s.fin {
		e.fillHeader(ep, wire.OpDisconnect, wire.ReasonNone)
		e.hdr.Seq = s.seq
		n := e.hdr.Put(e.ctl, 0)
		if !e.sendRaw(ep, ep.raddr, e.ctl[:n]) {
			return false
		}
	} else {
		e.fillHeader(ep, wire.OpData, wire.ReasonNone)
		e.hdr.Seq = s.seq
		if req {
			e.hdr.Flags |= wire.FlagAckReq
		}
		b := e.pool.buf(s.buf)
		buf := s.buf
		if e.pool.linking(buf) {
			// The link still sends the previous transmission from b,
			// so the new header goes on a copy.
			copy(e.rtx[wire.HeaderLen:], b[wire.HeaderLen:wire.HeaderLen+int(s.n)])
			b, buf = e.rtx, noBuf
		}
		n := e.hdr.Put(b, int(s.n))
		if !e.sendBuf(ep, ep.raddr, b[:n], buf, ep.ecnOK) {
			return false
		}
		e.st.dataOut.Add(1)
		ep.stat.segsOut++
		ep.stat.bytesOut += uint64(s.n)
	}
	s.sentAt = e.now
	ep.stat.lastSend = e.now
	e.txCount++
	s.tx = e.txCount
	e.acked(ep)
	return true
}

// onRTO handles the retransmission timer: everything sent more than one
// RTO ago and not SACKed is presumed lost; the RTO backs off.
func (e *engine) onRTO(ep *endpoint) {
	e.st.rtoExpiries.Add(1)
	ep.stat.rtoExpiries++
	if ep.snd.sent == 0 {
		if ep.confirming || ep.snd.slen > 0 && ep.snd.at(0).seq+uint64(ep.snd.at(0).n) > ep.snd.sndRight {
			// Zero window, or a confirmation not yet answered: probe.
			e.sendCtl(ep, wire.OpProbe, wire.ReasonNone)
			ep.snd.rtt.backoff(e.rtoBounds())
			ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
			return
		}
		ep.snd.rtoAt = 0
		e.queueOutput(ep)
		return
	}
	if e.lostForSize(ep) {
		return
	}
	ep.snd.cc.onRTO(ep.snd.sndNxt, int(ep.snd.sndNxt-ep.snd.sndUna))
	ep.snd.markLost(e.now - ep.snd.rtt.rto)
	ep.snd.rtt.backoff(e.rtoBounds())
	ep.snd.rtoAt = later(e.now, ep.snd.rtt.rto)
	e.queueOutput(ep)
}

// maxBigLost is how many timer expiries in a row may find a large segment
// unacknowledged while the peer answers the probes sent beside it, before
// the connection fails with EMSGSIZE. With the backoff from the 5 ms floor
// that is about 3 s; random loss of 20% of frames fakes it with a
// probability of about 2 in a million per stuck segment.
const maxBigLost = 10

// lostForSize is the retransmission timer's check for frames that vanish
// for their size: the kernel drops a received frame longer than its UMEM
// frame holds, a hop drops one above its MTU, and nobody tells the sender.
// When the oldest unacknowledged segment is larger than every link carries
// (wire.MinPeerDatagram), a probe goes out beside its retransmission; the peer
// answers it at once. If expiry after expiry finds the segment still
// unacknowledged although the peer answered in between, and no segment of
// its size or larger was SACKed (which random loss would show), the
// connection fails with a FrameSizeError instead of stalling for good:
// keepalives would keep it alive for ever. It reports whether it failed ep.
func (e *engine) lostForSize(ep *endpoint) bool {
	s := ep.snd.at(0)
	size := wire.HeaderLen + int(s.n)
	if s.fin || s.sacked || size <= wire.MinPeerDatagram {
		ep.snd.bigLost, ep.snd.bigAt = 0, 0
		return false
	}
	for i := 1; i < ep.snd.sent; i++ {
		if o := ep.snd.at(i); o.sacked && wire.HeaderLen+int(o.n) >= size {
			ep.snd.bigLost, ep.snd.bigAt = 0, 0
			return false
		}
	}
	if ep.snd.bigAt != 0 && ep.lastHeard > ep.snd.bigAt {
		ep.snd.bigLost++
	}
	if ep.snd.bigLost >= maxBigLost {
		e.st.tooBig.Add(1)
		e.sendCtl(ep, wire.OpReset, wire.ReasonTimedOut) // we give up on it
		e.fail(ep, &FrameSizeError{Size: size, Peer: ep.raddr})
		return true
	}
	ep.snd.bigAt = e.now
	e.sendCtl(ep, wire.OpProbe, wire.ReasonNone)
	return false
}
