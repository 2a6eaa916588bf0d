package provider

import (
	"errors"
	"net/netip"

	"github.com/sdx-project/sdx/internal/wire"
)

// Output framing: headers for a connection's frames, control frames, and
// the hand-over of datagrams to the link, in place from lent buffers
// where the link lends them (see link.go).

func (e *engine) queueOutput(ep *endpoint) {
	if !ep.outQ {
		ep.outQ = true
		e.output = append(e.output, ep)
	}
}

// transmit sends what the endpoints in the output list have to send and
// flushes the link. It reports whether it sent anything.
func (e *engine) transmit() bool {
	n := len(e.output)
	for i := range n {
		ep := e.output[i]
		ep.outQ = false
		if ep.state.synchronized() {
			e.sendData(ep)
		}
	}
	// Endpoints queued again (out of transmit slots) wait for the next step.
	k := copy(e.output, e.output[n:])
	clear(e.output[k:])
	e.output = e.output[:k]
	sent := e.unflushed > 0
	if sent {
		e.flush()
	}
	return sent
}

func (e *engine) flush() error {
	e.unflushed = 0
	err := e.link.Flush()
	e.linkErr = err
	e.wakeLent()
	return err
}

// sendRegion is the pool region ep's send data belongs in (see
// Lender.Region); -1 without a lender.
func (e *engine) sendRegion(ep *endpoint) int {
	if e.lender == nil {
		return -1
	}
	return e.lender.Region(ep.raddr, ep.lport, ep.rport)
}

// lentDone is the lender's call: the link no longer sends from lent
// buffer i.
func (e *engine) lentDone(i uint32) {
	if e.pool.unlink(i) {
		e.lentFreed = true
	}
}

// unlinkAll takes back every lent buffer from a link that is closed: it
// sends from none any more.
func (e *engine) unlinkAll() {
	for i := range e.pool.nLent {
		if e.pool.nLinked == 0 {
			break
		}
		if e.pool.linked[i] {
			e.pool.unlink(uint32(i))
		}
	}
}

// wakeLent wakes writers and receivers waiting for a buffer when the link
// gave one back.
func (e *engine) wakeLent() {
	if !e.lentFreed {
		return
	}
	e.lentFreed = false
	if len(e.starved) > 0 {
		e.wakeWriters(0)
	}
	if len(e.rwait) > 0 {
		e.wakeReceivers()
	}
}

// reply sends a control frame back to the sender of h; seq is a retry's
// cookie.
func (e *engine) reply(to netip.Addr, h *wire.Header, op wire.Opcode, reason wire.Reason, seq uint64) {
	r := &e.hdr
	*r = wire.Header{
		Op: op, Reason: reason,
		SrcPort: h.DstPort, DstPort: h.SrcPort,
		SrcConn: h.DstConn, DstConn: h.SrcConn,
		Token: h.Token,
		Seq:   seq,
	}
	n := r.Put(e.ctl, 0)
	e.sendRaw(nil, to, e.ctl[:n])
}

// fillHeader fills e.hdr for a frame on ep's connection.
func (e *engine) fillHeader(ep *endpoint, op wire.Opcode, reason wire.Reason) {
	h := &e.hdr
	*h = wire.Header{
		Op:      op,
		Reason:  reason,
		SrcPort: ep.lport,
		DstPort: ep.rport,
		SrcConn: ep.id,
		DstConn: ep.peerID,
		Token:   ep.token,
		Seq:     ep.snd.sndNxt,
	}
	if op != wire.OpReset {
		h.Window = e.window(ep)
		e.grant(ep, h.Window)
	}
	if ep.state.synchronized() && op != wire.OpReset {
		h.Flags = wire.FlagAck
		h.Ack = ep.rcv.rcvNxt
		if ep.ecnOK {
			h.Flags |= wire.FlagECN
			h.CE = ep.ceIn
		}
	}
}

// opAnswer is sendCtl's name for a probe that answers a probe (OpProbe
// with FlagAnswer); it never goes on the wire as an opcode.
const opAnswer wire.Opcode = 0x80 | wire.OpProbe

// sendCtl sends a frame without data on ep's connection: connect, accept,
// ack (with SACK blocks), probe, answer (with SACK blocks) or reset. It
// returns the link's error.
func (e *engine) sendCtl(ep *endpoint, op wire.Opcode, reason wire.Reason) error {
	e.fillHeader(ep, op, reason)
	h := &e.hdr
	switch op {
	case wire.OpConnect:
		h.DstConn = 0
		h.Seq = ep.hs.cookie
	case wire.OpAccept:
		h.Flags = wire.FlagAck
	case wire.OpAck:
		e.sackAll = ep.rcv.fillSACK(h, e.sackAll)
		e.st.acksOut.Add(1)
	case opAnswer:
		h.Op = wire.OpProbe
		h.Flags |= wire.FlagAnswer
		e.sackAll = ep.rcv.fillSACK(h, e.sackAll)
		e.st.probesOut.Add(1) // on the wire it is a probe
	case wire.OpProbe:
		e.st.probesOut.Add(1)
	case wire.OpReset:
		e.st.resetsOut.Add(1)
	}
	plen := 0
	if op == wire.OpConnect || op == wire.OpAccept {
		plen = wire.PutAnnounce(e.ctl[h.Len():], e.mtu)
		if e.heartbeatsOn() {
			plen += wire.PutIncarnation(e.ctl[h.Len():], e.inc)
		}
		if e.ecn != nil {
			// We take part in ECN (see ECNLink); an acceptor answers for
			// itself, whatever the connector said.
			h.Flags |= wire.FlagECN
		}
	}
	n := h.Put(e.ctl, plen)
	e.lastSendErr = nil
	if !e.sendRaw(ep, ep.raddr, e.ctl[:n]) {
		// Out of transmit slots even after a flush: the frame is not
		// sent, and an ack stays owed.
		return ErrNoBufs
	}
	e.acked(ep)
	return e.lastSendErr
}

// sendRaw hands a datagram to the link, flushing once if the link is out
// of transmit slots. It reports false only in that case.
func (e *engine) sendRaw(ep *endpoint, to netip.Addr, b []byte) bool {
	return e.sendBuf(ep, to, b, noBuf, false)
}

// sendBuf is sendRaw for a datagram b in pool buffer buf: one the link
// lent is sent in place, where the link can (see Lender), and the link
// then holds it until its transmission completes.
func (e *engine) sendBuf(ep *endpoint, to netip.Addr, b []byte, buf uint32, ect bool) bool {
	err := e.linkSend(to, b, buf, ect)
	if errors.Is(err, ErrNoBufs) {
		e.flush()
		err = e.linkSend(to, b, buf, ect)
		if errors.Is(err, ErrNoBufs) {
			return false
		}
	}
	e.st.datagramsOut.Add(1)
	e.unflushed++
	if ep != nil && ep.peer != nil {
		ep.peer.lastSent = e.now
	}
	if err != nil {
		e.st.sendErrors.Add(1)
		e.lastSendErr = err
		if ep != nil {
			ep.lastErr = err
		}
	}
	return true
}

// linkSend sends b, in place from lent buffer buf where it can, marked
// ECT(0) when ect (only on an ECNLink).
func (e *engine) linkSend(to netip.Addr, b []byte, buf uint32, ect bool) error {
	if buf == noBuf || !e.pool.inLent(buf) {
		return e.send(to, b, ect)
	}
	held, err := e.lender.SendLent(to, buf, len(b), ect)
	if held {
		e.pool.link(buf)
		e.st.inPlace.Add(1)
	}
	return err
}

// send is the link's Send, or SendECT when ect.
func (e *engine) send(to netip.Addr, b []byte, ect bool) error {
	if ect {
		return e.ecn.SendECT(to, b)
	}
	return e.link.Send(to, b)
}

// write copies as much of b as fits into ep's send buffer (see
// sender.write) and returns how many bytes it took.
func (e *engine) write(ep *endpoint, b []byte) (int, error) {
	switch {
	case ep.state == stateFailed:
		return 0, ep.err
	case ep.state != stateEstablished:
		return 0, ErrNotConn
	case ep.snd.finQd:
		return 0, ErrShutdown
	}
	ep.host.region = regionUnknown
	return ep.snd.write(b), nil
}

// shutdown ends ep's send direction: a disconnect marker follows the data.
func (e *engine) shutdown(ep *endpoint) error {
	switch {
	case ep.state == stateFailed:
		return ep.err
	case ep.state != stateEstablished:
		return ErrNotConn
	}
	ep.snd.shutdown()
	return nil
}

// sendData sends what ep's sender has to send, then a pure ack if one is
// still owed and no frame carried it.
func (e *engine) sendData(ep *endpoint) {
	sent, stop := ep.snd.sendData()
	if stop || sent || !ep.rcv.ackNow {
		return
	}
	op := wire.OpAck
	switch {
	case ep.rcv.probeAck:
		op = wire.OpProbe // asks for an answer, which answers a probe too
	case ep.rcv.answer:
		op = opAnswer
	}
	if errors.Is(e.sendCtl(ep, op, wire.ReasonNone), ErrNoBufs) {
		e.queueOutput(ep)
	}
}

// connSendHost is the engine as a connection's sender sees it: the
// sendHost of ep.snd.
type connSendHost struct {
	e  *engine
	ep *endpoint
	// region is the pool region the writes of one write call take their
	// buffers from (see Lender.region), looked up once per call.
	region int
}

// regionUnknown: the region is not yet looked up for this write.
const regionUnknown = -2

func (h *connSendHost) now() int64          { return h.e.now }
func (h *connSendHost) buf(i uint32) []byte { return h.e.pool.buf(i) }
func (h *connSendHost) freeBuf(i uint32)    { h.e.freeBuf(i) }
func (h *connSendHost) outputDue()          { h.e.queueOutput(h.ep) }
func (h *connSendHost) timerDue(t int64)    { h.e.schedule(h.ep, t) }
func (h *connSendHost) spaceFreed()         { h.e.notify(h.ep, evWritable) }
func (h *connSendHost) queued()             { h.e.rebeyond(h.ep) }
func (h *connSendHost) probe()              { h.e.sendCtl(h.ep, wire.OpProbe, wire.ReasonNone) }
func (h *connSendHost) inFlight(i uint32, yes bool) {
	if yes {
		h.e.pool.move(i, placeInFlight)
	} else {
		h.e.pool.move(i, placeSendQueued)
	}
}

// takeBuf takes a buffer for new send data, within the send half's
// credit and ep's share beyond the peer's window; a writer that finds
// none is starved, and woken when one is freed.
func (h *connSendHost) takeBuf() (uint32, bool) {
	e, ep := h.e, h.ep
	if e.sendHeld() >= e.sendCap {
		e.starve(ep)
		return 0, false
	}
	if !e.mayQueue(ep) {
		return 0, false
	}
	if h.region == regionUnknown {
		h.region = e.sendRegion(ep)
	}
	buf, ok := e.pool.getIn(placeSendQueued, h.region)
	if !ok {
		// The halves bound what each holds, so the pool is never
		// empty here; should the receive half overrun its bound, the
		// writer waits for a buffer instead of failing.
		e.starve(ep)
		return 0, false
	}
	return buf, true
}

// tooBig ends a connection whose frames of size bytes never reach the
// peer (see sender.lostForSize): we give up on it, and say so.
func (h *connSendHost) tooBig(size int) {
	h.e.sendCtl(h.ep, wire.OpReset, wire.ReasonTimedOut)
	h.e.fail(h.ep, &FrameSizeError{Size: size, Peer: h.ep.raddr})
}

// transmit frames segment g of the connection and hands it to the link:
// from its buffer in place, or, while the link still sends the previous
// transmission from there, as a copy with the new header.
func (h *connSendHost) transmit(g *seg, req bool) bool {
	e, ep := h.e, h.ep
	if g.fin {
		e.fillHeader(ep, wire.OpDisconnect, wire.ReasonNone)
		e.hdr.Seq = g.seq
		n := e.hdr.Put(e.ctl, 0)
		if !e.sendRaw(ep, ep.raddr, e.ctl[:n]) {
			return false
		}
	} else {
		e.fillHeader(ep, wire.OpData, wire.ReasonNone)
		e.hdr.Seq = g.seq
		if req {
			e.hdr.Flags |= wire.FlagAckReq
		}
		b := e.pool.buf(g.buf)
		buf := g.buf
		if e.pool.linking(buf) {
			copy(e.rtx[wire.HeaderLen:], b[wire.HeaderLen:wire.HeaderLen+int(g.n)])
			b, buf = e.rtx, noBuf
		}
		n := e.hdr.Put(b, int(g.n))
		if !e.sendBuf(ep, ep.raddr, b[:n], buf, ep.ecnOK) {
			return false
		}
		e.st.dataOut.Add(1)
	}
	e.txCount++
	g.tx = e.txCount
	e.acked(ep)
	return true
}
