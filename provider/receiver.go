package provider

import (
	"github.com/sdx-project/sdx/internal/wire"
)

// The receive side of a connection: the queue of in-order data, the data
// beyond holes, the end of stream, and when to acknowledge.

// receiver is a connection's receive side. In-order data waits for the
// reader in the ring rq; data beyond a hole waits in ooo, sorted by
// offset, until the hole is filled. It is part of its endpoint, owned by
// the poller; the engine's receive path (read, onData, onFin, below)
// drives it, and its own methods keep the queues and the SACK report
// without touching the pool, the link or the clock.
type receiver struct {
	rcvNxt     uint64
	rq         []rseg // ring of in-order data
	rqHead     int
	rqLen      int
	rqBytes    int    // bytes in rq not yet read
	ooo        []oseg // sorted by seq
	oooMax     int
	lastOOO    uint64 // offset of the newest segment put in ooo
	finPending bool
	finSeq     uint64
	eof        bool
	// rd is the buffer of the receive waiting at the head of the
	// socket's queue, while nothing is queued for it; in-order data goes
	// straight into it (rdN bytes so far) instead of into buffers. The
	// SPI sets it and takes it back before the receive completes.
	rd  []byte
	rdN int
	// held counts the entries of rq whose data the link holds; extra,
	// those of them that are not the last piece of their datagram.
	held, extra int

	// Acks owed.
	ackNow   bool
	ackAt    int64 // delayed ack due; 0: none
	dupIn    int   // duplicates received since new data: our acks may be getting lost
	probeAck bool  // send the owed ack as a probe (see onData)
	answer   bool  // the owed ack answers a probe: it goes out as an answer (see onProbe)
	unacked  int   // in-order segments not yet acknowledged

	// The window granted, and its credit (see credit.go).
	lastEdge uint64 // right edge of the window we granted: it never moves left
	need     int    // receive buffers the granted window would still take (see recommit)
	counted  int    // the part of need counted in recvCommitted: at most the fair share
	rwaiting bool   // in engine.rwait: its window was held back for want of buffers
}

// rseg is received in-order data: bytes [off, end) of buffer buf of the
// pool, or, held, of the piece the link holds with handle buf (see
// Holder). A held datagram counts as one buffer of the receive half, and
// its last piece (last) carries that count.
type rseg struct {
	buf      uint32
	off, end uint16
	held     bool
	last     bool
}

// oseg is received data beyond a hole.
type oseg struct {
	seq uint64
	buf uint32
	n   uint16
}

// rqAt is the i-th entry of the receive queue from its head.
func (r *receiver) rqAt(i int) *rseg {
	return &r.rq[(r.rqHead+i)&(len(r.rq)-1)]
}

// bufs is how many buffers of the receive half the receive queue's data
// counts as: a held datagram in several pieces counts as one.
func (r *receiver) bufs() int { return r.rqLen - r.extra }

// rqFull reports whether the receive queue has no room for another entry.
func (r *receiver) rqFull() bool {
	return r.rqLen == len(r.rq)
}

// pushRQ appends x to the receive queue, which must have room.
func (r *receiver) pushRQ(x rseg) {
	*r.rqAt(r.rqLen) = x
	r.rqLen++
	r.rqBytes += int(x.end - x.off)
}

// popRQ drops the head of the receive queue, which was read.
func (r *receiver) popRQ() {
	*r.rqAt(0) = rseg{}
	r.rqHead = (r.rqHead + 1) & (len(r.rq) - 1)
	r.rqLen--
}

// oooPlace finds where data [seq, seq+n) goes among the out-of-order
// segments, and reports whether they hold all of it already.
func (r *receiver) oooPlace(seq uint64, n int) (int, bool) {
	i := 0
	for i < len(r.ooo) && r.ooo[i].seq < seq {
		i++
	}
	dup := i > 0 && r.ooo[i-1].seq+uint64(r.ooo[i-1].n) >= seq+uint64(n) ||
		i < len(r.ooo) && r.ooo[i].seq == seq && uint64(r.ooo[i].n) >= uint64(n)
	return i, dup
}

// oooInsert puts o at index i of the out-of-order segments (see
// oooPlace) and remembers it as the newest.
func (r *receiver) oooInsert(i int, o oseg) {
	r.ooo = append(r.ooo, oseg{})
	copy(r.ooo[i+1:], r.ooo[i:])
	r.ooo[i] = o
	r.lastOOO = o.seq
}

// oooDrop forgets the first k out-of-order segments, whose buffers have
// been freed or moved.
func (r *receiver) oooDrop(k int) {
	n := copy(r.ooo, r.ooo[k:])
	clear(r.ooo[n:])
	r.ooo = r.ooo[:n]
}

// takeFin ends the stream once everything before the disconnect marker
// has arrived; the marker takes one offset. It reports whether it did.
func (r *receiver) takeFin() bool {
	if r.finPending && !r.eof && r.rcvNxt == r.finSeq {
		r.eof = true
		r.rcvNxt++
		return true
	}
	return false
}

// ackSent records that a frame carrying our ack and window went out:
// no ack is owed.
func (r *receiver) ackSent() {
	r.ackNow = false
	r.probeAck = false
	r.answer = false
	r.ackAt = 0
	r.unacked = 0
}

// fillSACK describes the out-of-order data in up to MaxSACK blocks of h,
// whose Ack is set: the block holding the newest segment first (RFC
// 2018), then the others in order from the lowest. A receiver with more
// blocks than fit (20% loss makes dozens in a window) so reports every
// block below the highest it lists, and the sender can tell where its
// knowledge ends: see sender.sackKnown. scratch is room for every block;
// fillSACK returns it, grown, for the next call.
func (r *receiver) fillSACK(h *wire.Header, scratch []wire.SACKBlock) []wire.SACKBlock {
	h.NSACK = 0
	if len(r.ooo) == 0 {
		return scratch
	}
	all := scratch[:0]
	newest := -1
	for i := 0; i < len(r.ooo); {
		start := r.ooo[i].seq
		end := start + uint64(r.ooo[i].n)
		for i++; i < len(r.ooo) && r.ooo[i].seq <= end; i++ {
			end = max(end, r.ooo[i].seq+uint64(r.ooo[i].n))
		}
		if r.lastOOO >= start && r.lastOOO < end {
			newest = len(all)
		}
		all = append(all, wire.SACKBlock{Start: start, End: end})
	}
	add := func(b wire.SACKBlock) {
		b.Start = max(b.Start, h.Ack)
		if b.End <= b.Start || b.End-h.Ack > 1<<32-1 {
			return
		}
		h.SACK[h.NSACK] = b
		h.NSACK++
	}
	if newest >= 0 {
		add(all[newest])
	}
	for k := range all {
		if int(h.NSACK) >= wire.MaxSACK {
			break
		}
		if k != newest {
			add(all[k])
		}
	}
	return all[:0]
}

// ---- the engine's receive path ------------------------------------------

// read copies received in-order data into b. It returns 0, nil at the end
// of the stream and 0, err when the connection failed; 0, nil with
// readable false means nothing is there yet.
func (e *engine) read(ep *endpoint, b []byte) (int, error) {
	if ep.state == stateFailed {
		return 0, ep.err
	}
	if ep.state != stateEstablished {
		return 0, ErrNotConn
	}
	n := 0
	for n < len(b) && ep.rcv.rqLen > 0 {
		r := ep.rcv.rqAt(0)
		k := copy(b[n:], e.rsegData(r))
		r.off += uint16(k)
		n += k
		ep.rcv.rqBytes -= k
		if r.off == r.end {
			e.freeRseg(ep, r)
			ep.rcv.popRQ()
		}
	}
	if len(ep.rcv.ooo) > 0 && ep.rcv.ooo[0].seq <= ep.rcv.rcvNxt {
		e.pullOOO(ep)
		e.checkFin(ep)
	}
	e.recommit(ep)
	if n > 0 {
		// Window update: the edge we advertised was less than an MSS
		// away, or would move by at least half the new window.
		edge := ep.rcv.rcvNxt + uint64(e.window(ep))
		if grow := edge - ep.rcv.lastEdge; edge > ep.rcv.lastEdge && grow >= uint64(ep.mss) &&
			(ep.rcv.lastEdge-ep.rcv.rcvNxt < uint64(ep.mss) || grow >= (edge-ep.rcv.rcvNxt)/2) {
			e.ackSoon(ep, true)
		}
	}
	return n, nil
}

// readable reports whether read would return data, end of stream or an
// error.
func (e *engine) readable(ep *endpoint) bool {
	return ep.rcv.rqLen > 0 || ep.rcv.eof || ep.state == stateFailed
}

// onData stores a data segment and decides when to ack it: at once when
// the sender asked (req), after a hole, or every ackEvery segments; else
// within AckDelay, or on the next frame we send.
func (e *engine) onData(ep *endpoint, seq uint64, p pieces, req bool) {
	n := p.len()
	if n == 0 {
		return
	}
	ep.stat.segsIn++
	end := seq + uint64(n)
	if end <= ep.rcv.rcvNxt {
		e.st.dropDuplicate.Add(1)
		e.dupAck(ep) // our ack may have been lost
		return
	}
	ep.rcv.dupIn = 0
	whole := true // p as the link handed it over (see hold)
	if seq < ep.rcv.rcvNxt {
		p.skip(int(ep.rcv.rcvNxt - seq))
		seq = ep.rcv.rcvNxt
		n = p.len()
		whole = false
	}
	if end > max(ep.rcv.lastEdge, ep.rcv.rcvNxt) || (ep.rcv.finPending && end > ep.rcv.finSeq) || ep.rcv.eof {
		e.st.dropOutOfWindow.Add(1)
		e.ackSoon(ep, true)
		return
	}
	if seq == ep.rcv.rcvNxt {
		took := e.deliver(ep, &p)
		if took < n && !(took == 0 && whole && e.hold(ep, p)) &&
			!e.appendInOrder(ep, p) && (!e.renege(ep) || !e.appendInOrder(ep, p)) {
			e.st.dropNoBuffer.Add(1)
			if took > 0 {
				// The reader has the head of the segment; the
				// sender repeats the rest.
				ep.rcv.rcvNxt += uint64(took)
				e.notify(ep, evReadable)
				e.ackSoon(ep, true)
			}
			return
		}
		ep.rcv.rcvNxt = end
		hadHole := len(ep.rcv.ooo) > 0
		e.pullOOO(ep)
		e.checkFin(ep)
		e.notify(ep, evReadable)
		ep.rcv.unacked++
		e.ackSoon(ep, hadHole || req || ep.rcv.unacked >= ackEvery)
		return
	}
	// Beyond a hole.
	e.st.oooIn.Add(1)
	i, dup := ep.rcv.oooPlace(seq, n)
	if dup {
		e.st.dropDuplicate.Add(1)
		e.ackSoon(ep, true)
		return
	}
	if len(ep.rcv.ooo) >= ep.rcv.oooMax || e.uncommitted() <= 0 {
		// Out-of-order data takes only buffers no window is counting on.
		e.st.dropNoBuffer.Add(1)
		e.ackSoon(ep, true)
		return
	}
	buf, ok := e.pool.get(placeOutOfOrder)
	if !ok {
		e.st.dropNoBuffer.Add(1)
		e.ackSoon(ep, true)
		return
	}
	p.copyTo(e.pool.buf(buf))
	ep.rcv.oooInsert(i, oseg{seq: seq, buf: buf, n: uint16(n)})
	e.ackSoon(ep, true)
}

// pieces is received data as the link holds it: p, then the pieces of
// more (a multi-buffer frame; nil otherwise). copyTo and skip consume it
// from the front.
type pieces struct {
	p    []byte
	more [][]byte
}

func (d *pieces) len() int {
	n := len(d.p)
	for _, m := range d.more {
		n += len(m)
	}
	return n
}

// copyTo copies as much of d into b as fits, consumes it and returns how
// much that was.
func (d *pieces) copyTo(b []byte) int {
	n := 0
	for {
		k := copy(b[n:], d.p)
		n += k
		d.p = d.p[k:]
		if len(d.p) > 0 || len(d.more) == 0 {
			return n
		}
		d.p, d.more = d.more[0], d.more[1:]
	}
}

// skip consumes the first n bytes of d.
func (d *pieces) skip(n int) {
	for n > 0 {
		k := min(n, len(d.p))
		d.p, n = d.p[k:], n-k
		if len(d.p) == 0 && len(d.more) > 0 {
			d.p, d.more = d.more[0], d.more[1:]
		} else if k == 0 {
			return
		}
	}
}

// onProbe answers a probe at once, unless it is itself an answer. The
// answer is a probe marked FlagAnswer, not a pure ack: the prober is
// waiting for it (a window that opened, a sign of life), and where every
// pure ack is lost an ack would never come, while the peer probes on
// until the dead-peer bound. An answer is never answered, so two ends
// cannot probe each other for ever.
func (e *engine) onProbe(ep *endpoint, h *wire.Header) {
	if h.Flags&wire.FlagAnswer != 0 {
		return // its ack and window were taken in onAck
	}
	ep.rcv.answer = true
	e.ackSoon(ep, true)
}

// dupAck answers data the sender repeats. The first repeat gets an ack;
// from the second on, the sender evidently does not hear our acks, so the
// ack goes out as a probe, a frame that also carries ack and window and
// that the peer answers: an ack path that has lost every pure ack still
// delivers acks.
func (e *engine) dupAck(ep *endpoint) {
	ep.rcv.dupIn++
	if ep.rcv.dupIn >= 2 {
		ep.rcv.probeAck = true
	}
	e.ackSoon(ep, true)
}

// renege drops the endpoint's out-of-order data to make room for the
// in-order segment that the pool had no buffer for: otherwise data beyond
// holes could hold every buffer while the segments that fill the holes
// find none. The sender clears its SACK marks after a second timer expiry
// (RFC 2018 section 8) and so retransmits what was dropped. It reports
// whether it freed anything.
func (e *engine) renege(ep *endpoint) bool {
	if len(ep.rcv.ooo) == 0 {
		return false
	}
	for i := range ep.rcv.ooo {
		e.freeBuf(ep.rcv.ooo[i].buf)
	}
	clear(ep.rcv.ooo)
	ep.rcv.ooo = ep.rcv.ooo[:0]
	e.st.reneged.Add(1)
	return true
}

// deliver copies the start of in-order data p straight into the buffer of
// a receive waiting for it, when nothing is queued before it, consumes it
// and returns how much it took.
func (e *engine) deliver(ep *endpoint, p *pieces) int {
	if ep.rcv.rd == nil || ep.rcv.rqLen > 0 {
		return 0
	}
	k := p.copyTo(ep.rcv.rd[ep.rcv.rdN:])
	ep.rcv.rdN += k
	e.st.recvDirect.Add(uint64(k))
	return k
}

// appendInOrder copies in-order data into the receive queue, filling the
// last buffer's free space first.
func (e *engine) appendInOrder(ep *endpoint, p pieces) bool {
	n := p.len()
	need := 0
	tail := ep.rcv.rqLen > 0 && !ep.rcv.rqAt(ep.rcv.rqLen-1).held
	if tail {
		t := ep.rcv.rqAt(ep.rcv.rqLen - 1)
		need = max(n-(e.pool.size-int(t.end)), 0)
	} else {
		need = n
	}
	nbufs := e.buffersFor(need)
	if nbufs > e.pool.nfree() || ep.rcv.rqLen+nbufs > len(ep.rcv.rq) {
		return false
	}
	// Buffers come from what the window has counted, or from what the
	// receive half has uncommitted: data filling the uncounted part of
	// an old window (see recommit) never takes the send half's.
	if !e.mayTake(nbufs, ep.rcv.counted) {
		return false
	}
	if tail {
		t := ep.rcv.rqAt(ep.rcv.rqLen - 1)
		k := p.copyTo(e.pool.buf(t.buf)[t.end:])
		t.end += uint16(k)
		n -= k
		ep.rcv.rqBytes += k
	}
	for n > 0 {
		buf, _ := e.pool.get(placeRecvQueued)
		k := p.copyTo(e.pool.buf(buf))
		ep.rcv.pushRQ(rseg{buf: buf, end: uint16(k)})
		n -= k
	}
	// What the buffers were committed for is now held: the commitment
	// shrinks by as much, so that the segments after this one, before
	// the next recommit, take only what is left of it.
	used := min(nbufs, ep.rcv.counted)
	ep.rcv.counted -= used
	e.recvCommitted -= used
	return true
}

// hold keeps in-order data p where the link received it, one entry of
// the receive queue per piece, the datagram counted as one buffer of the
// receive half, and reports whether it did. It needs p whole, as the
// link handed it over, and a link with room (see Holder), and is kept
// for data worth it: data under half a buffer is copied, so that small
// segments share buffers, as appendInOrder packs them. A connection
// holds at most its share of what the link may hold.
func (e *engine) hold(ep *endpoint, p pieces) bool {
	if e.holder == nil || p.len() < e.pool.size/2 || ep.rcv.held >= e.holdShare() {
		return false
	}
	nb := 1 + len(p.more)
	if ep.rcv.rqLen+nb > len(ep.rcv.rq) || !e.mayTake(1, ep.rcv.counted) {
		return false
	}
	hs := e.holder.Hold(e.hs[:0])
	if len(hs) != nb {
		for _, h := range hs {
			e.holder.Release(h) // not the pieces we were handed
		}
		return false
	}
	e.hs = hs
	n := 0
	for i, h := range hs {
		d := p.p
		if i > 0 {
			d = p.more[i-1]
		}
		// d is the end of the piece: the sdx header comes before it.
		all := len(e.holder.Data(h))
		ep.rcv.pushRQ(rseg{buf: h, off: uint16(all - len(d)), end: uint16(all), held: true, last: i == nb-1})
		n += len(d)
	}
	e.holding += nb
	e.heldBufs++
	ep.rcv.held += nb
	ep.rcv.extra += nb - 1
	e.st.heldNow.Set(uint64(e.holding))
	used := min(1, ep.rcv.counted)
	ep.rcv.counted -= used
	e.recvCommitted -= used
	e.st.recvHeld.Add(uint64(n))
	return true
}

// holdShare is how many buffers one endpoint may have the link hold.
func (e *engine) holdShare() int {
	return max(e.holdCap/max(e.nEps, 1), 1)
}

// rsegData is the unread data of r.
func (e *engine) rsegData(r *rseg) []byte {
	if r.held {
		return e.holder.Data(r.buf)[r.off:r.end]
	}
	return e.pool.buf(r.buf)[r.off:r.end]
}

// freeRseg gives back what r's data was in: a buffer of the pool, or one
// the link held, which counted as a buffer of the receive half.
func (e *engine) freeRseg(ep *endpoint, r *rseg) {
	if !r.held {
		e.freeBuf(r.buf)
		return
	}
	e.holder.Release(r.buf)
	e.holding--
	ep.rcv.held--
	e.st.heldNow.Set(uint64(e.holding))
	if !r.last {
		ep.rcv.extra--
		return
	}
	e.heldBufs--
	if len(e.rwait) > 0 {
		e.wakeReceivers()
	}
}

// pullOOO moves out-of-order segments that the cumulative ack has reached
// into the receive queue.
func (e *engine) pullOOO(ep *endpoint) {
	k := 0
	for k < len(ep.rcv.ooo) && ep.rcv.ooo[k].seq <= ep.rcv.rcvNxt {
		o := ep.rcv.ooo[k]
		end := o.seq + uint64(o.n)
		if end <= ep.rcv.rcvNxt {
			e.freeBuf(o.buf)
			k++
			continue
		}
		if ep.rcv.rqFull() {
			break // the reader frees room; SACKed data is never dropped
		}
		k++
		off := uint16(ep.rcv.rcvNxt - o.seq)
		e.pool.move(o.buf, placeRecvQueued)
		ep.rcv.pushRQ(rseg{buf: o.buf, off: off, end: o.n})
		ep.rcv.rcvNxt = end
	}
	if k > 0 {
		ep.rcv.oooDrop(k)
	}
}

func (e *engine) onFin(ep *endpoint, seq uint64) {
	if ep.rcv.eof || seq < ep.rcv.rcvNxt {
		e.dupAck(ep)
		return
	}
	ep.rcv.finPending, ep.rcv.finSeq = true, seq
	e.checkFin(ep)
	e.ackSoon(ep, true)
}

func (e *engine) checkFin(ep *endpoint) {
	if ep.rcv.takeFin() {
		e.notify(ep, evReadable)
	}
}

// ackSoon asks for an ack: at once (now true) or within AckDelay.
func (e *engine) ackSoon(ep *endpoint, now bool) {
	if now {
		ep.rcv.ackNow = true
		e.queueOutput(ep)
		return
	}
	if ep.rcv.ackAt == 0 {
		ep.rcv.ackAt = later(e.now, int64(e.cfg.AckDelay))
		e.schedule(ep, ep.rcv.ackAt)
	}
}

// acked records that a frame carrying our ack and window went out.
func (e *engine) acked(ep *endpoint) {
	if e.hdr.Flags&wire.FlagAck == 0 {
		return
	}
	ep.rcv.ackSent()
}
