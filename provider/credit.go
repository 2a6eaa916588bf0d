package provider

// Credit: how the buffer pool is shared between sending and receiving,
// and between connections.
//
// The pool is split in halves. Send data (queued and in flight) may hold
// up to sendCap buffers; received data plus the buffers committed to the
// windows granted, up to recvCap; and sendCap+recvCap is the pool. So a
// window once granted can always be filled, and received data waiting for
// a reader that is itself waiting to send can never starve that send.
//
// Receive half. A window granted to a peer is a promise: recommit counts
// the buffers it would still take (the endpoint's need) and commits them
// (counted, summed in recvCommitted), at most the fair share of the half
// (recvCap over the endpoints). In-order data takes buffers from what its
// window counted, or from what the half has uncommitted; out-of-order
// data takes only what no window counts on. A receiver whose window is
// held back for want of buffers waits in rwait and is sent a window
// update when one is freed.
//
// Send half. Data within the peer's window always may take a buffer: the
// peer committed one for it, so it leaves again. Data beyond the window
// may wait for the peer's reader indefinitely, so all connections
// together hold at most beyondCap bytes of it (sendBeyond), each its
// share. A writer refused waits for its window (winWait) or in starved
// for buffers.

// credit is the engine's account of the pool's halves and of who waits
// for them. It is owned by the poller, with the engine.
type credit struct {
	pool          *bufPool
	sendCap       int         // buffers send data may hold
	recvCap       int         // buffers received data plus commitments may hold
	recvCommitted int         // sum of endpoints' counted
	trimmedAt     int         // nEps when commitments were last held to the fair share
	sendBeyond    int         // sum of endpoints' beyond, at most beyondCap
	beyondCap     int         // bytes: half the send half
	heldBufs      int         // datagrams the link holds for received data (see Holder), a buffer each
	holding       int         // the link's buffers they are in
	holdCap       int         // the most it holds: the Holder's HoldCap
	rwait         []*endpoint // receivers whose window waits for buffers
	starved       []*endpoint // writers waiting for the send half
}

// newCredit splits pool in halves for segments of mss bytes.
func newCredit(pool *bufPool, mss int) credit {
	n := pool.total()
	c := credit{pool: pool, sendCap: n / 2, recvCap: n - n/2}
	c.beyondCap = c.sendCap / 2 * mss
	return c
}

// sendHeld and recvHeld count the buffers of each half of the pool.
func (c *credit) sendHeld() int {
	return int(c.pool.count(placeSendQueued) + c.pool.count(placeInFlight) + c.pool.count(placeSending))
}

// Buffers the link holds for received data count as the receive half's.
func (c *credit) recvHeld() int {
	return int(c.pool.count(placeRecvQueued)+c.pool.count(placeOutOfOrder)) + c.heldBufs
}

// uncommitted is what the receive half has neither held nor committed to
// a window; it is negative when windows granted before more endpoints
// shared the pool are counted beyond it.
func (c *credit) uncommitted() int {
	return c.recvCap - c.recvHeld() - c.recvCommitted
}

// share is an endpoint's fair share of the receive half, in buffers,
// among nEps endpoints.
func (c *credit) share(nEps int) int {
	return c.recvCap / max(nEps, 1)
}

// beyondShare is how many bytes one of nEps endpoints may queue beyond its
// peer's window: its share of beyondCap, and at least one segment.
func (c *credit) beyondShare(nEps, mss int) int {
	return max(mss, c.beyondCap/max(nEps, 1))
}

// buffersFor is how many buffers n bytes take.
func (c *credit) buffersFor(n int) int {
	if n <= 0 {
		return 0
	}
	return (n + c.pool.size - 1) / c.pool.size
}

// commit moves an endpoint's commitment from counted buffers to what its
// window needs, held to the fair share among nEps endpoints, and growing
// only into what the receive half has uncommitted; it returns the new
// count and keeps recvCommitted.
func (c *credit) commit(counted, need, nEps int) int {
	n := min(need, max(c.share(nEps), 1))
	if n > counted {
		n = min(n, counted+max(c.uncommitted(), 0))
	}
	c.recvCommitted += n - counted
	return n
}

// mayTake reports whether in-order data may take n more buffers for an
// endpoint whose window counted counted: from its commitment, or from
// what the receive half has uncommitted. Data filling the uncounted part
// of an old window (see recommit) so never takes the send half's.
func (c *credit) mayTake(n, counted int) bool {
	return n <= counted+max(c.uncommitted(), 0)
}

// mayQueue reports whether a write may take a new buffer for ep. Data
// within the peer's window always may: the peer committed buffers for it,
// so it leaves the pool again. Data beyond the window may wait for the
// peer's reader indefinitely, so all connections together hold at most
// beyondCap bytes of it, each at most its share: otherwise connections
// without a window could hold the whole send half while those with one
// find no buffer (a deadlock across the two hosts). A write refused here
// waits for its window (winWait) or for the total to fall (starved).
func (e *engine) mayQueue(ep *endpoint) bool {
	edge := max(ep.snd.sndRight, ep.snd.sndUna)
	if ep.snd.sndEnd+uint64(ep.mss) <= edge {
		return true
	}
	add := ep.mss
	if ep.snd.sndEnd < edge {
		add -= int(edge - ep.snd.sndEnd)
	}
	if ep.snd.beyond+add > e.beyondShare(e.nEps, ep.mss) {
		ep.snd.winWait = true
		return false
	}
	if e.sendBeyond+add > e.beyondCap {
		e.starve(ep)
		return false
	}
	return true
}

// rebeyond recounts the bytes ep queues beyond its peer's window edge;
// when that falls, writers waiting for it are woken.
func (e *engine) rebeyond(ep *endpoint) {
	b := 0
	if ep.state.synchronized() {
		if edge := max(ep.snd.sndRight, ep.snd.sndUna); ep.snd.sndEnd > edge {
			b = int(ep.snd.sndEnd - edge)
		}
	}
	d := b - ep.snd.beyond
	e.sendBeyond += d
	ep.snd.beyond = b
	if d < 0 {
		if ep.snd.winWait {
			ep.snd.winWait = false
			e.notify(ep, evWritable)
		}
		e.wakeWriters(-d)
	}
}

// wakeWriters wakes starved writers: all of them when the send half has
// room, else (the total beyond windows fell by freed bytes) about as many
// as that room takes.
func (e *engine) wakeWriters(freed int) {
	if len(e.starved) == 0 || e.sendHeld() >= e.sendCap {
		return
	}
	k := len(e.starved)
	if freed > 0 {
		k = min(k, freed/e.mss+1)
	}
	for _, s := range e.starved[:k] {
		s.snd.starved = false
		e.notify(s, evWritable)
	}
	n := copy(e.starved, e.starved[k:])
	clear(e.starved[n:])
	e.starved = e.starved[:n]
}

func (e *engine) starve(ep *endpoint) {
	if !ep.snd.starved {
		ep.snd.starved = true
		e.starved = append(e.starved, ep)
		e.st.poolLimited.Add(1)
	}
	ep.snd.limit = limitPool
}

// window is the window to grant ep now: the room left in its receive
// buffer, as far as the receive half of the pool can back it. A
// connection takes at most its fair share of that half (the half over the
// endpoints), so many connections each get a window rather than a few
// taking all. It never shrinks what was granted.
func (e *engine) window(ep *endpoint) uint32 {
	granted := 0
	if ep.rcv.lastEdge > ep.rcv.rcvNxt {
		granted = int(ep.rcv.lastEdge - ep.rcv.rcvNxt)
	}
	room := max(e.cfg.RecvBuffer-ep.rcv.rqBytes, 0)
	if room <= granted {
		return uint32(granted)
	}
	extra := e.uncommitted()
	if extra <= 0 && e.trimmedAt != e.nEps {
		e.trimCommitments()
		extra = e.uncommitted()
	}
	if share := e.share(e.nEps) - ep.rcv.bufs() - len(ep.rcv.ooo) - ep.rcv.need; share < extra {
		extra = share
	}
	if ep.state == stateHalfOpen {
		// Until its connector answers, a connection's window is one
		// buffer, enough for a first request: a flood of connects
		// commits at most one buffer per half-open connection.
		extra = min(extra, 1-ep.rcv.bufs()-len(ep.rcv.ooo)-ep.rcv.need)
	}
	if extra <= 0 {
		return uint32(granted)
	}
	w := e.tailRoom(ep) + (ep.rcv.need+extra)*e.pool.size
	return uint32(max(granted, min(room, w)))
}

// tailRoom is the free space of the last buffer of ep's receive queue,
// which in-order data fills before it takes a new buffer.
func (e *engine) tailRoom(ep *endpoint) int {
	if ep.rcv.rqLen == 0 {
		return 0
	}
	t := ep.rcv.rqAt(ep.rcv.rqLen - 1)
	if t.held {
		return 0 // held where the link received it
	}
	return e.pool.size - int(t.end)
}

// recommit sets ep.need to the buffers that in-order data up to the
// granted edge would still take, and keeps the total. Received data moves
// the commitment into held buffers; reading frees both.
//
// Only the fair share of need is counted against the receive half. A
// window granted while few connections shared the pool can be far larger
// than the share of each once many do, and a window never shrinks: if all
// of it stayed committed, a few early connections whose senders are quiet
// would hold the half, and every later connection would be left a window
// too small to move its data (with request-response traffic on both
// hosts, a deadlock). The part beyond the share is a promise without a
// reservation: data filling it takes a buffer if the pool has one, and is
// otherwise dropped and retransmitted, as TCP does under memory pressure.
func (e *engine) recommit(ep *endpoint) {
	need := 0
	if ep.state.isConnection() && !ep.rcv.eof && ep.rcv.lastEdge > ep.rcv.rcvNxt {
		need = e.buffersFor(int(ep.rcv.lastEdge-ep.rcv.rcvNxt) - e.tailRoom(ep))
	}
	ep.rcv.need, ep.rcv.counted = need, e.commit(ep.rcv.counted, need, e.nEps)
}

// trimCommitments holds every endpoint's counted commitment to the fair
// share of the endpoints there are now, once the receive half is fully
// committed; windows waiting for buffers are then granted again.
func (e *engine) trimCommitments() {
	e.trimmedAt = e.nEps
	before := e.recvCommitted
	for _, ep := range e.eps {
		if ep != nil && ep.rcv.counted > 0 {
			e.recommit(ep)
		}
	}
	if e.recvCommitted < before {
		e.wakeReceivers()
	}
}

// grant records the window of a frame going out: its edge is promised,
// and the buffers to fill it are committed. A receiver whose window was
// held back for want of buffers waits for them in rwait.
func (e *engine) grant(ep *endpoint, w uint32) {
	if edge := ep.rcv.rcvNxt + uint64(w); edge > ep.rcv.lastEdge {
		ep.rcv.lastEdge = edge
		e.recommit(ep)
	}
	// Held back by the pool, not by its own unread data or fair share.
	if int(w) < ep.mss && int(w) < e.cfg.RecvBuffer-ep.rcv.rqBytes && !ep.rcv.rwaiting && !ep.rcv.eof &&
		ep.rcv.bufs()+len(ep.rcv.ooo)+ep.rcv.need < e.share(e.nEps) {
		ep.rcv.rwaiting = true
		e.rwait = append(e.rwait, ep)
	}
}

// wakeReceivers sends window updates to waiting receivers, as many as
// the receive half has a buffer to spare for.
func (e *engine) wakeReceivers() {
	spare := e.uncommitted()
	k := 0
	for k < len(e.rwait) && k < spare {
		ep := e.rwait[k]
		ep.rcv.rwaiting = false
		if ep.state.synchronized() {
			e.ackSoon(ep, true)
		}
		k++
	}
	if k > 0 {
		n := copy(e.rwait, e.rwait[k:])
		clear(e.rwait[n:])
		e.rwait = e.rwait[:n]
	}
}

// freeBuf returns a buffer and wakes writers and receivers waiting for
// one.
func (e *engine) freeBuf(i uint32) {
	e.pool.put(i)
	if len(e.starved) > 0 {
		e.wakeWriters(0)
	}
	if len(e.rwait) > 0 {
		e.wakeReceivers()
	}
}
