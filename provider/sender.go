package provider

import (
	"math"

	"github.com/sdx-project/sdx/internal/wire"
)

// The send side of a connection: the send queue of segments, what is in
// flight, the SACK scoreboard and the retransmission state.

// sender is a connection's send side. Its segments sit in a ring: the
// first sent from shead are in flight (transmitted, not yet
// acknowledged), the rest queued. It is part of its endpoint, owned by
// the poller. The send path (write, sendData, onAck, expiredRetransmit)
// is its methods, which reach the pool, the link and the clock only
// through its sendHost; the ring and scoreboard methods touch none of them.
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

	// Pacing (see paceGap): the next segment may go at paceNext, less the
	// slack of a burst; paceWait, a timer is set for it.
	paceNext int64
	paceWait bool

	// What the send path works through (see sendHost and attach).
	host sendHost
	opts sendOpts
	st   *engineStats
	stat *connCounters
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

// sendHost is what a connection's sender needs of the rest of the
// engine, as quic-go's sendStream works through its streamSender: the
// sender keeps its segments, scoreboard, windows and timers, and runs the
// send path (write, sendData, onAck, expiredRetransmit); through this it
// takes and frees buffers, puts segments on the wire, reads the clock and
// says when it has something to send. The endpoint is the one
// implementation (output.go).
type sendHost interface {
	now() int64
	// takeBuf takes a pool buffer for new data within the send half's
	// credit; false: none now (the writer waits, and is woken when one
	// is freed).
	takeBuf() (uint32, bool)
	buf(i uint32) []byte
	freeBuf(i uint32)
	inFlight(i uint32, yes bool) // the buffer's place in the pool: in flight, or queued again
	// transmit frames segment g (data, or the disconnect) and hands it
	// to the link, with FlagAckReq when req. It reports false when the
	// link has no transmit slot even after a flush.
	transmit(g *seg, req bool) bool
	probe()           // a probe asks the peer for an answer at once
	outputDue()       // the sender has something to send
	timerDue(t int64) // the sender's timers run at t or earlier
	spaceFreed()      // send space was freed, or the disconnect acknowledged
	queued()          // the bytes queued beyond the peer's window changed
	tooBig(size int)  // frames of size bytes never reach the peer: the connection is over
}

// sendOpts are a sender's settings, from the engine's configuration.
type sendOpts struct {
	buffer int // bytes of unacknowledged plus unsent data (SendBuffer)
	pacing bool
	bounds rtoBounds
}

// attach gives the sender its host, settings and counters; the engine
// calls it when the connection starts.
func (s *sender) attach(h sendHost, o sendOpts, st *engineStats, stat *connCounters) {
	s.host, s.opts, s.st, s.stat = h, o, st, stat
}

// write copies as much of b into the send buffer as fits and returns how
// many bytes it took. The caller has checked that the connection is
// established and not shut down.
func (s *sender) write(b []byte) int {
	h := s.host
	mss := s.cc.mss
	n := 0
	for n < len(b) && int(s.sndEnd-s.sndUna) < s.opts.buffer {
		room := s.opts.buffer - int(s.sndEnd-s.sndUna)
		if s.slen > s.sent {
			// The newest segment is not yet transmitted: fill it up.
			g := s.at(s.slen - 1)
			if int(g.n) < mss {
				k := copy(h.buf(g.buf)[wire.HeaderLen+int(g.n):wire.HeaderLen+mss], b[n:min(len(b), n+room)])
				g.n += uint16(k)
				n += k
				s.sndEnd += uint64(k)
				continue
			}
		}
		if s.full() {
			break
		}
		buf, ok := h.takeBuf()
		if !ok {
			break
		}
		k := copy(h.buf(buf)[wire.HeaderLen:wire.HeaderLen+mss], b[n:min(len(b), n+room)])
		s.push(seg{seq: s.sndEnd, buf: buf, n: uint16(k)})
		n += k
		s.sndEnd += uint64(k)
		h.queued()
	}
	if n > 0 {
		h.queued()
		h.outputDue()
	}
	return n
}

// shutdown ends the send direction: a disconnect marker follows the data.
func (s *sender) shutdown() {
	if s.finQd {
		return
	}
	s.finQd = true
	if s.full() {
		// Many small segments in flight: the disconnect follows them as
		// soon as an ack frees a slot. The caller is not told to try
		// again for a resource the engine frees by itself.
		s.finOwed = true
		return
	}
	s.queueFin()
}

// queueFin puts the disconnect marker after the data; the ring has room.
func (s *sender) queueFin() {
	s.finOwed = false
	s.push(seg{seq: s.sndEnd, buf: noBuf, fin: true})
	s.sndEnd++
	s.host.outputDue()
}

// onAck processes the ack, window and SACK blocks of a frame; ecn says
// that the connection runs ECN.
func (s *sender) onAck(hd *wire.Header, ecn bool) {
	h := s.host
	now := h.now()
	ack, una := hd.Ack, s.sndUna
	if ack > s.sndNxt {
		s.st.dropBadAck.Add(1)
		return
	}
	grew := false
	if edge := ack + uint64(hd.Window); edge > s.sndRight {
		s.sndRight = edge
		grew = true
	}
	s.sackNew = 0
	if ack > s.sndUna {
		var sample int64 = -1
		freed, repaired, spurious := false, false, false
		acked := int(ack - s.sndUna)
		for s.sent > 0 {
			g := s.at(0)
			if g.end() > ack {
				break
			}
			if g.rtx && !g.resent && !g.sacked {
				// The timer presumed it lost, and it was never sent
				// again: this ack is its first transmission's.
				spurious = true
			}
			if g.resent {
				// The ack moved because a hole was repaired: it came
				// when the retransmission arrived, late for every
				// segment above it, SACKed or not (a SACK report may
				// leave blocks out). No sample from this ack.
				repaired = true
			} else if !g.sacked {
				// A SACKed segment's cumulative ack comes late, when
				// the hole before it is filled: no sample from it.
				sample = now - g.sentAt
			}
			if g.fin {
				s.finAcked = true
				h.spaceFreed() // a graceful close waits for it
			}
			if g.buf != noBuf {
				h.freeBuf(g.buf)
				freed = true
			}
			s.pop()
		}
		s.sndUna = ack
		s.stat.lastAck = now
		s.dupAcks = 0
		s.bigLost, s.bigAt = 0, 0
		if spurious && s.cc.onSpurious() {
			s.st.spuriousRTOs.Add(1)
			s.undoRTO()
		}
		s.cc.onAck(acked, ack, s.cwndLimited, now, s.rtt.srtt)
		if sample >= 0 && !repaired {
			s.rtt.sample(sample)
		}
		s.rtt.settle(s.opts.bounds)
		if s.sent > 0 {
			s.rtoAt = later(now, s.rtt.rto)
			h.timerDue(s.rtoAt)
		} else {
			s.rtoAt = 0
		}
		if s.finOwed && !s.full() {
			s.queueFin()
		}
		if freed {
			h.spaceFreed()
		}
	} else if ack == s.sndUna && s.sent > 0 && hd.Op == wire.OpAck && !grew {
		if s.countDupAck() {
			s.st.fastRetransmits.Add(1)
			s.stat.fastRetransmits++
			s.onLoss()
			h.outputDue()
		}
	}
	if hd.Op == wire.OpAck || hd.Op == wire.OpProbe && hd.Flags&wire.FlagAnswer != 0 {
		s.sackReport(hd.SACK[:hd.NSACK])
	}
	if hd.NSACK > 0 && s.sent > 0 {
		s.onSACK(hd, now)
	}
	if ecn && hd.Flags&wire.FlagECN != 0 {
		newly := s.sackNew
		if ack > una {
			newly += int(ack - una)
		}
		if marks := hd.CE - s.cc.ceSeen; marks > 0 {
			s.st.ceEchoed.Add(uint64(marks))
		}
		if s.cc.onECN(hd.CE, newly, s.sndUna, s.sndNxt) {
			s.st.ecnReductions.Add(1)
		}
	}
	if s.slen > s.sent {
		h.outputDue() // new credit, or a persist timer to arm
	}
	if s.beyond > 0 || s.winWait {
		h.queued()
	}
}

// onSACK marks SACKed segments and retransmits, once, each unSACKed
// segment with three SACKed segments above it.
func (s *sender) onSACK(hd *wire.Header, now int64) {
	if sample := s.markSACKed(hd.SACK[:hd.NSACK], now); sample >= 0 {
		s.rtt.sample(sample)
	}
	if n := s.markFastLost(); n > 0 {
		s.st.fastRetransmits.Add(uint64(n))
		s.stat.fastRetransmits += uint64(n)
		s.onLoss()
		s.host.outputDue()
	}
}

// onLoss tells the congestion window of a loss the scoreboard found.
func (s *sender) onLoss() {
	if s.cc.onLoss(s.sndUna, s.sndNxt, int(s.sndNxt-s.sndUna)) {
		s.st.lossReductions.Add(1)
	}
}

// undoRTO takes back what a spurious retransmission timeout did beside
// the window: the segments it presumed lost and that were not sent again
// are in flight after all, so they lose their marks.
func (s *sender) undoRTO() {
	for i := range s.sent {
		if g := s.at(i); g.rtx && !g.resent && !g.fast {
			s.clearRtx(g)
		}
	}
	s.rtt.settle(s.opts.bounds)
}

// sendData transmits retransmissions, then new segments within the peer's
// window. It reports whether it sent anything, and stop when the link ran
// out of transmit slots (the sender is then due for output again).
func (s *sender) sendData() (sent, stop bool) {
	h := s.host
	now := h.now()
	s.limit = limitNone
	byCwnd := false
	burst := 0 // new segments sent back to back
	for i := range s.sent {
		g := s.at(i)
		if !g.rtx || g.sacked {
			s.clearRtx(g)
			continue
		}
		// The congestion window holds retransmissions back too, but for
		// the oldest segment's: the repair everything waits for.
		if i > 0 && s.pipe()+g.segLen() > s.cc.cwnd {
			s.limit, byCwnd = limitCwnd, true
			break
		}
		// A retransmission asks for its ack at once: the sender is
		// recovering, and it may be the last segment of a burst.
		if !s.transmit(g, true, now) {
			h.outputDue()
			return sent, true
		}
		s.clearRtx(g)
		g.resent = true
		s.st.retransmits.Add(1)
		s.stat.retransmits++
		sent = true
	}
	// The sender asks for an ack at once (FlagAckReq) on the segment
	// that takes what it has in flight past half of what it may have
	// (its send buffer, the peer's window or the congestion window):
	// the ack then comes back while the other half is still going out.
	var half uint64
	if s.sndRight > s.sndUna {
		half = min(uint64(s.opts.buffer), s.sndRight-s.sndUna, uint64(s.cc.cwnd)) / 2
	}
	for s.sent < s.slen {
		g := s.at(s.sent)
		if !g.fin && g.seq+uint64(g.n) > s.sndRight {
			s.limit = limitCredit
			break
		}
		if pipe := s.pipe(); pipe > 0 && pipe+g.segLen() > s.cc.cwnd {
			s.limit, byCwnd = limitCwnd, true
			break
		}
		if s.opts.pacing && burst > 0 && now < s.paceNext-s.paceSlack() {
			// Paced: the rest goes when the timer says.
			s.limit = limitPace
			if !s.paceWait {
				s.paceWait = true
				s.st.paceWaits.Add(1)
				h.timerDue(s.paceNext - s.paceSlack())
			}
			break
		}
		req := g.seq-s.sndUna < half && g.end()-s.sndUna >= half
		if !g.fin && int(g.n) < s.cc.mss && s.sent+1 == s.slen {
			// The newest segment, not full: the tail of what was
			// written. It goes at once, unless a small segment sent
			// with FlagAckReq is unacknowledged: then it waits for that
			// ack, which the peer sends at once, and gathers the writes
			// made meanwhile (Nagle's rule as Minshall refined it, with
			// the ack asked for). A lone message never waits; the
			// second of two in a row goes at once too, asking for its
			// ack, and the third waits at most for that.
			if s.holdEnd > s.sndUna {
				s.held = true
				break
			}
			if s.smallEnd > s.sndUna || s.held {
				req = true
				s.holdEnd = g.end()
			}
			s.held = false
			s.smallEnd = g.end()
		}
		if g.buf != noBuf {
			h.inFlight(g.buf, true)
		}
		if !s.transmit(g, req, now) {
			if g.buf != noBuf {
				h.inFlight(g.buf, false)
			}
			h.outputDue()
			return sent, true
		}
		s.sent++
		s.sndNxt = max(s.sndNxt, g.end())
		sent = true
		burst++
		if s.opts.pacing {
			s.paceNext = max(s.paceNext, now) + s.paceGap(g.segLen())
		}
	}
	if burst > 0 {
		s.st.bursts[burstBucket(burst)].Add(1)
	}
	// The window was what held the sender back, or nearly: an ack may
	// open it further (RFC 7661's test, with Linux's slack of half a
	// window in slow start).
	s.cwndLimited = byCwnd || 2*s.pipe() >= s.cc.cwnd
	if byCwnd {
		s.st.cwndLimited.Add(1)
	}
	if s.slen > 0 && s.rtoAt == 0 {
		// Data in flight, or the window closed with data waiting: the
		// timer retransmits, or probes with the RTO's backoff.
		s.rtoAt = later(now, s.rtt.rto)
		h.timerDue(s.rtoAt)
	}
	return sent, false
}

// transmit sends segment g through the host and notes when it went.
func (s *sender) transmit(g *seg, req bool, now int64) bool {
	if !s.host.transmit(g, req) {
		return false
	}
	if !g.fin {
		s.stat.segsOut++
		s.stat.bytesOut += uint64(g.n)
	}
	g.sentAt = now
	s.stat.lastSend = now
	return true
}

// expiredRetransmit is the retransmission timer: everything sent more
// than one RTO ago and not SACKed is presumed lost; the RTO backs off.
// With nothing in flight it is the persist timer: a closed window, or a
// confirming connector (confirm) not yet answered, gets a probe.
// lastHeard is when the peer was last heard from.
func (s *sender) expiredRetransmit(confirm bool, lastHeard int64) {
	h := s.host
	now := h.now()
	s.st.rtoExpiries.Add(1)
	s.stat.rtoExpiries++
	if s.sent == 0 {
		if confirm || s.slen > 0 && s.at(0).seq+uint64(s.at(0).n) > s.sndRight {
			// Zero window, or a confirmation not yet answered: probe.
			h.probe()
			s.rtt.backoff(s.opts.bounds)
			s.rtoAt = later(now, s.rtt.rto)
			return
		}
		s.rtoAt = 0
		h.outputDue()
		return
	}
	if s.lostForSize(lastHeard, now) {
		return
	}
	s.cc.onRTO(s.sndNxt, int(s.sndNxt-s.sndUna))
	s.markLost(now - s.rtt.rto)
	s.rtt.backoff(s.opts.bounds)
	s.rtoAt = later(now, s.rtt.rto)
	h.outputDue()
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
// keepalives would keep it alive for ever. It reports whether it failed.
func (s *sender) lostForSize(lastHeard, now int64) bool {
	g := s.at(0)
	size := wire.HeaderLen + int(g.n)
	if g.fin || g.sacked || size <= wire.MinPeerDatagram {
		s.bigLost, s.bigAt = 0, 0
		return false
	}
	for i := 1; i < s.sent; i++ {
		if o := s.at(i); o.sacked && wire.HeaderLen+int(o.n) >= size {
			s.bigLost, s.bigAt = 0, 0
			return false
		}
	}
	if s.bigAt != 0 && lastHeard > s.bigAt {
		s.bigLost++
	}
	if s.bigLost >= maxBigLost {
		s.st.tooBig.Add(1)
		s.host.tooBig(size)
		return true
	}
	s.bigAt = now
	s.host.probe()
	return false
}
