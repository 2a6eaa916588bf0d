package xdplink

import "github.com/sdx-project/sdx/xdp"

// Hold, Data, Release and HoldCap make the link a provider.Holder: the
// provider keeps received data where it arrived, in the UMEM frames of
// the queue it arrived on, until its reader copies it out.
//
// A queue holds at most holdFrames of its frames for the provider: by
// default half of those its fill ring does not take, (NumFrames -
// FillSize) / 2, 1024 of the default 4096. The fill ring keeps its
// FillSize, so the kernel always has frames to receive into whatever
// readers leave unread, and the other half is left for frames being
// handed over, sent as copies, or waiting for a neighbour to resolve.

// holdFrames is Config.HoldFrames for a queue of fc, its defaults filled.
func holdFrames(n int, fc xdp.Config) (int, error) {
	spare := fc.NumFrames - fc.FillSize
	switch {
	case n < 0 || fc.NumFrames > 1<<queueShift:
		return 0, nil
	case n == 0:
		return spare / 2, nil
	case n > spare:
		return 0, configErr("Config.HoldFrames %d: at most NumFrames - FillSize, %d", n, spare)
	}
	return n, nil
}

// holding is the datagram Receive is handing to fn, for Hold.
// Its payload's pieces are the parsed payload, then more, as fn gets
// them, each in the next descriptor of the chain.
type holding struct {
	lq    *linkQueue
	descs []xdp.Desc // its chain
	more  [][]byte
	kept  int // the first kept descriptors of the chain are held
}

// Hold keeps the UMEM frames of the datagram Receive is handing to fn,
// one per piece of its payload, and appends their handles to hs; nothing
// when the queue holds its share already, or outside fn.
func (l *Link) Hold(hs []uint32) []uint32 {
	c := &l.cur
	pieces := 1 + len(c.more)
	if c.lq == nil || c.kept > 0 || c.lq.held+pieces > c.lq.holdCap {
		return hs
	}
	q := c.lq.q
	for j := range pieces {
		p := l.parsed.Payload
		if j > 0 {
			p = c.more[j-1]
		}
		d := c.descs[j]
		f := q.FrameOf(d)
		// Where the piece begins in its frame: Data slices to the
		// descriptor's end, so its capacity tells.
		off := int(d.Addr&uint64(q.FrameSize()-1)) + int(d.Len) - cap(p)
		c.lq.heldAt[f] = heldPiece{off: uint16(off), n: uint16(len(p))}
		hs = append(hs, uint32(c.lq.idx)<<queueShift|f)
	}
	c.kept = pieces
	c.lq.held += c.kept
	l.held.add(uint64(c.kept))
	return hs
}

// heldPiece is where a held frame's piece lies in it.
type heldPiece struct{ off, n uint16 }

// queueShift puts a held frame's queue above its frame index in its
// handle.
const queueShift = 24

// Data is the piece held with handle h.
func (l *Link) Data(h uint32) []byte {
	lq := l.qs[h>>queueShift]
	f := h & (1<<queueShift - 1)
	at := lq.heldAt[f]
	return lq.q.Frame(f)[at.off : at.off+at.n]
}

// Release gives back the frame held with handle h: the fill ring may
// have it again.
func (l *Link) Release(h uint32) {
	lq := l.qs[h>>queueShift]
	lq.q.Release(h & (1<<queueShift - 1))
	lq.held--
	l.held.Store(l.held.Load() - 1)
}

// HoldCap is the most frames the link holds at once, over its queues.
func (l *Link) HoldCap() int {
	n := 0
	for _, lq := range l.qs {
		n += lq.holdCap
	}
	return n
}
