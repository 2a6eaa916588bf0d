package xdplink

import (
	"net/netip"
	"syscall"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/xdp"
)

// Frames to a peer whose Ethernet address the kernel is still resolving
// wait here, built and ready but for the destination address, instead of
// the poller sleeping until the answer comes: the event loop blocks on
// nothing but its link. The neighbour cache (internal/neigh) says when
// to look at the kernel's table again; a peer's frames are sent once its
// entry is there and dropped if it does not come within neigh.Wait (the
// protocol retransmits; later sends fail fast). A peer holds at most
// maxPendingFrames frames, and at most neigh.MaxResolving peers wait at
// once, so that frames to addresses nobody answers for (a flood of
// spoofed sources) take few UMEM frames.
const maxPendingFrames = 64

// pendingFrame is one frame waiting for its peer's address; the poller's.
type pendingFrame struct {
	lq    *linkQueue
	chain []xdp.Desc
}

// queuePending builds the frame of payload to peer, flow hash h, on lq
// and queues it until peer resolves. A full queue drops it (the protocol
// retransmits); an empty frame pool refuses it with ENOBUFS, as Send does.
func (l *Link) queuePending(peer netip.Addr, lq *linkQueue, h uint32, payload []byte) error {
	pf := l.pending[peer]
	if len(pf) >= maxPendingFrames {
		l.ctr.unresolved.bump()
		return nil
	}
	q := lq.q
	n := frame.HeaderLen + len(payload)
	chain, ok := q.AllocPacket(make([]xdp.Desc, 0, (n+q.FrameSize()-1)/q.FrameSize()), n)
	if !ok {
		q.Complete()
		if chain, ok = q.AllocPacket(chain[:0], n); !ok {
			l.ctr.noFrames.bump()
			return syscall.ENOBUFS
		}
	}
	l.encode(q.Data(chain[0]), peer, [6]byte{}, h, len(payload), frame.NotECT)
	q.WritePacket(chain, frame.HeaderLen, payload)
	l.pending[peer] = append(pf, pendingFrame{lq: lq, chain: chain})
	l.ctr.pending.bump()
	return nil
}

// resolvePending sends the frames of peers the kernel has resolved and
// drops those of peers it did not resolve in time.
func (l *Link) resolvePending() {
	l.neigh.Poll(time.Since(l.born), func(peer netip.Addr, mac [6]byte, ok bool) {
		pf := l.pending[peer]
		delete(l.pending, peer)
		if !ok {
			l.ctr.unresolved.add(uint64(len(pf)))
			for _, f := range pf {
				f.lq.q.ReleasePacket(f.chain)
			}
			return
		}
		for _, f := range pf {
			copy(f.lq.q.Data(f.chain[0])[:6], mac[:]) // the Ethernet destination
			l.sendPending(f)
		}
	})
}

// sendPending puts a resolved frame on its queue's way out; with no room
// even after a flush, it is dropped (the protocol retransmits).
func (l *Link) sendPending(f pendingFrame) {
	lq := f.lq
	if lq.ntx+len(f.chain) > len(lq.txq) {
		lq.flush()
	}
	if lq.ntx+len(f.chain) > len(lq.txq) {
		l.ctr.noFrames.bump()
		lq.q.ReleasePacket(f.chain)
		return
	}
	if t := l.tap.Load(); t != nil {
		l.captureChain(t, true, lq.q, f.chain)
	}
	lq.ntx += copy(lq.txq[lq.ntx:], f.chain)
	lq.tx.add(uint64(len(f.chain)))
	l.ctr.sent.bump()
}

// dropPending gives every waiting frame back to its pool.
func (l *Link) dropPending() {
	for peer, pf := range l.pending {
		for _, f := range pf {
			f.lq.q.ReleasePacket(f.chain)
		}
		delete(l.pending, peer)
	}
}
