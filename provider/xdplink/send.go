package xdplink

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/internal/neigh"
	"github.com/sdx-project/sdx/internal/wire"
)

// noLent is the lent buffer of a send from the caller's memory.
const noLent = ^uint32(0)

// Send builds one frame for peer in a UMEM frame and queues it for Flush.
func (l *Link) Send(peer netip.Addr, payload []byte) error {
	_, err := l.send(peer, payload, noLent, frame.NotECT)
	return err
}

// SendECT is Send with the frame marked ECT(0) (see provider.ECNLink).
func (l *Link) SendECT(peer netip.Addr, payload []byte) error {
	_, err := l.send(peer, payload, noLent, frame.ECT0)
	return err
}

// send queues the frame of payload to peer with ECN codepoint ecn. It
// picks the queue the frame goes out on once: when payload is lent
// buffer i (not noLent) and the queue is that buffer's, the frame goes
// from there in place and send reports it held; else payload is copied
// into a frame of that queue.
func (l *Link) send(peer netip.Addr, payload []byte, i uint32, ecn uint8) (held bool, err error) {
	if len(payload) > l.mtu {
		return false, syscall.EMSGSIZE
	}
	mac, err := l.neigh.Lookup(peer, time.Since(l.born))
	resolving := false
	if err != nil {
		if err != neigh.ErrResolving {
			return false, l.lookupErr(err)
		}
		resolving = true
	}
	k, h := flowOf(peer, payload, false)
	lq := l.txQueue(k, h)
	if resolving {
		// A copy waits for the answer, the buffer does not.
		if i != noLent {
			l.ctr.copied.bump()
		}
		return false, l.queuePending(peer, lq, h, payload)
	}
	if i != noLent {
		if l.lentQueue(i) == lq {
			err := l.sendInPlace(lq, peer, mac, h, i, len(payload), ecn)
			return err == nil, err
		}
		l.ctr.copied.bump()
	}
	// A frame longer than a UMEM frame is a multi-buffer packet, queued
	// whole or not at all; most are a chain of one.
	q := lq.q
	n := frame.HeaderLen + len(payload)
	if nf := (n + q.FrameSize() - 1) / q.FrameSize(); lq.ntx+nf > len(lq.txq) {
		if err := l.txRoom(lq, nf); err != nil {
			return false, err
		}
	}
	chain, ok := q.AllocPacket(lq.txq[lq.ntx:lq.ntx], n)
	if !ok {
		q.Complete()
		if chain, ok = q.AllocPacket(lq.txq[lq.ntx:lq.ntx], n); !ok {
			l.ctr.noFrames.bump()
			return false, syscall.ENOBUFS
		}
	}
	l.encode(q.Data(chain[0]), peer, mac, h, len(payload), ecn)
	q.WritePacket(chain, frame.HeaderLen, payload)
	if t := l.tap.Load(); t != nil {
		t.record(true, q.Data(chain[0])[:frame.HeaderLen], payload)
	}
	lq.ntx += len(chain)
	lq.tx.add(uint64(len(chain)))
	l.ctr.sent.bump()
	return false, nil
}

// lookupErr is a send's error for a peer the neighbour cache did not
// give an address for, counted.
func (l *Link) lookupErr(err error) error {
	switch {
	case errors.Is(err, neigh.ErrUnresolved):
		l.ctr.unresolved.bump()
		return syscall.EHOSTUNREACH
	case errors.Is(err, neigh.ErrRefused):
		l.ctr.refused.bump()
		return syscall.EHOSTUNREACH
	case errors.Is(err, neigh.ErrNoRoute):
		return syscall.EHOSTUNREACH
	}
	return fmt.Errorf("xdplink: %w", err)
}

// txRoom makes room for nf descriptors on lq's queue of frames to go
// out, which has too few: it flushes once.
func (l *Link) txRoom(lq *linkQueue, nf int) error {
	if err := l.Flush(); err != nil {
		return err
	}
	if lq.ntx+nf > len(lq.txq) {
		l.ctr.noFrames.bump()
		return syscall.ENOBUFS
	}
	return nil
}

// encode writes the headers of a frame to peer at mac, flow hash h, with
// payloadLen bytes of payload and ECN codepoint ecn into b[:frame.HeaderLen].
func (l *Link) encode(b []byte, peer netip.Addr, mac [6]byte, h uint32, payloadLen int, ecn uint8) {
	flow := frame.Flow{Src: l.local, Dst: frame.Endpoint{MAC: mac, IP: peer, Port: l.cfg.Port}, ECN: ecn}
	flow.Src.Port = wire.SrcPortMin + uint16(h%wire.SrcPorts)
	l.ipID++
	flow.Encode(b, payloadLen, l.ipID)
}

// txQueue picks the queue flow k (hash h) goes out on: the one its frames
// last arrived on, else the one its hash picks.
func (l *Link) txQueue(k flowKey, h uint32) *linkQueue {
	if len(l.qs) == 1 {
		return l.qs[0]
	}
	if i, ok := l.flows.get(k, h); ok {
		return l.qs[i]
	}
	return l.qs[h%uint32(len(l.qs))]
}

// Flush puts the queued frames on the tx ring and kicks the kernel. A
// downed or vanished interface returns an error matching ENETDOWN (an
// *xdp.LinkError, which says whether the interface was down or gone);
// frames that did not fit on the ring stay queued for the next Flush.
func (l *Link) Flush() error {
	if l.neigh.Resolving() > 0 {
		l.resolvePending()
	}
	var errs []error
	for _, lq := range l.qs {
		if len(l.qs) > 1 && lq.ntx == 0 && lq.q.TxPending() == 0 {
			continue
		}
		if err := lq.flush(); err != nil {
			if errors.Is(err, syscall.ENETDOWN) {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// flush puts lq's queued frames on its tx ring and kicks the kernel.
func (lq *linkQueue) flush() error {
	q := lq.q
	q.Complete()
	if lq.ntx > 0 {
		n := q.Transmit(lq.txq[:lq.ntx])
		copy(lq.txq[:], lq.txq[n:lq.ntx])
		lq.ntx -= n
	}
	if err := q.Kick(); err != nil {
		return err
	}
	q.Complete()
	return nil
}
