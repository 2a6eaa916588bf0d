package provider

import (
	"net/netip"
	"time"

	"github.com/sdx-project/sdx/internal/frame"
	"github.com/sdx-project/sdx/xdp"
)

// Frames to a peer whose Ethernet address the kernel is still resolving
// wait here, built and ready but for the destination address, instead of
// the poller sleeping until the answer comes: the event loop blocks on
// nothing but its link. The poller looks at the kernel's neighbour table
// at most every resolvePoll while frames wait, sends them once the entry
// is there, and drops them after resolveWait (the protocol retransmits;
// later sends fail fast, see XDPLink.failed). A queue holds at most
// maxPendingFrames frames and at most maxPendingPeers peers wait at once,
// so that frames to addresses nobody answers for (a flood of spoofed
// sources) take few UMEM frames.
const (
	resolvePoll      = 50 * time.Microsecond
	maxPendingFrames = 64
	maxPendingPeers  = 16
)

// pendingPeer is the queue of one resolving peer; the poller's.
type pendingPeer struct {
	hop     netip.Addr    // the neighbour asked for: the peer, or its route's gateway
	since   time.Duration // when the first frame was queued, on the link's clock
	checked time.Duration // the last look at the kernel's table
	frames  []pendingFrame
}

type pendingFrame struct {
	lq    *linkQueue
	chain []xdp.Desc
}

// queuePending builds the frame of payload to peer, flow hash h, on lq
// and queues it until peer resolves. A full queue drops it (the protocol
// retransmits); an empty frame pool refuses it with ENOBUFS, as Send does.
func (l *XDPLink) queuePending(peer netip.Addr, lq *linkQueue, h uint32, payload []byte) error {
	pp := l.pending[peer]
	if len(pp.frames) >= maxPendingFrames {
		l.stats.Unresolved++
		return nil
	}
	q := lq.q
	n := frame.HeaderLen + len(payload)
	chain, ok := q.AllocPacket(make([]xdp.Desc, 0, (n+q.FrameSize()-1)/q.FrameSize()), n)
	if !ok {
		q.Complete()
		if chain, ok = q.AllocPacket(chain[:0], n); !ok {
			l.stats.NoFrames++
			return ErrNoBufs
		}
	}
	l.encode(q.Data(chain[0]), peer, [6]byte{}, h, len(payload), frame.NotECT)
	q.WritePacket(chain, frame.HeaderLen, payload)
	pp.frames = append(pp.frames, pendingFrame{lq: lq, chain: chain})
	l.stats.Pending++
	return nil
}

// resolvePending sends the frames of peers the kernel has resolved and
// drops those of peers it did not resolve within resolveWait.
func (l *XDPLink) resolvePending() {
	now := time.Since(l.born)
	for peer, pp := range l.pending {
		if now-pp.checked < resolvePoll && now-pp.since < resolveWait {
			continue
		}
		pp.checked = now
		mac, ok, err := l.res.Neighbour(pp.hop)
		switch {
		case err == nil && ok:
			l.known(peer, mac, now)
			for _, f := range pp.frames {
				copy(f.lq.q.Data(f.chain[0])[:6], mac[:]) // the Ethernet destination
				l.sendPending(f)
			}
		case err != nil || now-pp.since >= resolveWait:
			l.stats.Unresolved += uint64(len(pp.frames))
			for _, f := range pp.frames {
				f.lq.q.ReleasePacket(f.chain)
			}
			l.failed(peer, now)
		default:
			continue
		}
		delete(l.pending, peer)
	}
}

// sendPending puts a resolved frame on its queue's way out; with no room
// even after a flush, it is dropped (the protocol retransmits).
func (l *XDPLink) sendPending(f pendingFrame) {
	lq := f.lq
	if lq.ntx+len(f.chain) > len(lq.txq) {
		lq.flush()
	}
	if lq.ntx+len(f.chain) > len(lq.txq) {
		l.stats.NoFrames++
		lq.q.ReleasePacket(f.chain)
		return
	}
	if t := l.tap.Load(); t != nil {
		l.captureChain(t, true, lq.q, f.chain)
	}
	lq.ntx += copy(lq.txq[lq.ntx:], f.chain)
	lq.tx.Add(uint64(len(f.chain)))
	l.stats.Sent++
}

// dropPending gives every waiting frame back to its pool.
func (l *XDPLink) dropPending() {
	for peer, pp := range l.pending {
		for _, f := range pp.frames {
			f.lq.q.ReleasePacket(f.chain)
		}
		delete(l.pending, peer)
	}
}
