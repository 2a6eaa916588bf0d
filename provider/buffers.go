package provider

import (
	"fmt"
	"sync/atomic"
)

// bufPlace is where a buffer of the pool is at one instant; every buffer
// is in exactly one place, and the pool counts them, so a test can check
// that the places add up to the total after any scenario.
type bufPlace uint8

const (
	placeFree       bufPlace = iota // in the pool
	placeSendQueued                 // holds send data not yet transmitted
	placeInFlight                   // holds send data transmitted, not yet acknowledged
	placeOutOfOrder                 // holds received data beyond a hole
	placeRecvQueued                 // holds received in-order data not yet read
	placeSending                    // released, but the link still sends from it
	numBufPlaces
)

var bufPlaceNames = [numBufPlaces]string{"free", "send-queued", "in-flight", "out-of-order", "recv-queued", "sending"}

func (p bufPlace) String() string {
	if p < numBufPlaces {
		return bufPlaceNames[p]
	}
	return fmt.Sprintf("bufPlace(%d)", uint8(p))
}

const noBuf = ^uint32(0)

// bufPool is a bounded pool of fixed-size buffers, each the size of one
// datagram. The first nLent live in memory the link lends (see Lender),
// in regions of per buffers, one region per queue the link sends on; the
// rest in one slab of our own. Each region, and the slab, has its own
// stack of free buffers, so that send data can go where its frames go
// out. It is owned by the poller; the counters may be read from any
// goroutine.
type bufPool struct {
	size   int
	mem    []byte     // buffers nLent and up, size bytes apart
	free   [][]uint32 // stacks of free buffer indices: one per region, then the slab's
	place  []bufPlace // place of every buffer
	counts [numBufPlaces]atomic.Int64

	// Lent memory: buffer r*per+j < nLent at lent[r][j*stride+head:].
	// linked marks those the link sends from in place; nLinked counts
	// them.
	lent         [][]byte
	per          int
	stride, head int
	nLent        int
	linked       []bool
	nLinked      int
}

func newBufPool(n, size int) *bufPool { return newBufPoolLent(n, size, nil, 0, 0, 0) }

// newBufPoolLent is newBufPool with the first buffers in the regions of
// lent, per buffers each, stride bytes from one to the next and head
// bytes into their stride.
func newBufPoolLent(n, size int, lent [][]byte, per, stride, head int) *bufPool {
	nLent := min(len(lent)*per, n)
	p := &bufPool{
		size:   size,
		mem:    make([]byte, (n-nLent)*size),
		free:   make([][]uint32, len(lent)+1),
		place:  make([]bufPlace, n),
		lent:   lent,
		per:    per,
		stride: stride,
		head:   head,
		nLent:  nLent,
		linked: make([]bool, nLent),
	}
	for i := n - 1; i >= 0; i-- {
		// Low indices first within each stack.
		r := p.region(uint32(i))
		if p.free[r] == nil {
			p.free[r] = make([]uint32, 0, p.regionLen(r))
		}
		p.free[r] = append(p.free[r], uint32(i))
	}
	p.counts[placeFree].Store(int64(n))
	return p
}

// region is the free stack buffer i belongs on: its lent region, or the
// slab's (len(lent)).
func (p *bufPool) region(i uint32) int {
	if int(i) < p.nLent {
		return int(i) / p.per
	}
	return len(p.lent)
}

// regionLen is how many buffers region r holds.
func (p *bufPool) regionLen(r int) int {
	if r == len(p.lent) {
		return len(p.place) - p.nLent
	}
	return min(p.per, p.nLent-r*p.per)
}

// get takes a free buffer and puts it in place to; it reports false when
// the pool is empty. It takes from the slab first, then from the region
// with the most free buffers: send data asks for its region with getIn.
func (p *bufPool) get(to bufPlace) (uint32, bool) { return p.getIn(to, len(p.lent)) }

// getIn is get from region r first (len(lent), or any out of range: the
// slab), then from the stack with the most free buffers.
func (p *bufPool) getIn(to bufPlace, r int) (uint32, bool) {
	if r < 0 || r > len(p.lent) {
		r = len(p.lent)
	}
	if len(p.free[r]) == 0 {
		for k := range p.free {
			if len(p.free[k]) > len(p.free[r]) {
				r = k
			}
		}
		if len(p.free[r]) == 0 {
			return noBuf, false
		}
	}
	k := len(p.free[r])
	i := p.free[r][k-1]
	p.free[r] = p.free[r][:k-1]
	p.place[i] = to
	p.counts[placeFree].Add(-1)
	p.counts[to].Add(1)
	return i, true
}

// move changes the place of a buffer that is not free.
func (p *bufPool) move(i uint32, to bufPlace) {
	from := p.place[i]
	if from == placeFree {
		panic("provider: move of a free buffer")
	}
	if from == to {
		return
	}
	p.place[i] = to
	p.counts[from].Add(-1)
	p.counts[to].Add(1)
}

// put returns a buffer to the pool. Putting a free buffer is a bug. A
// buffer the link still sends from waits in placeSending for unlink.
func (p *bufPool) put(i uint32) {
	from := p.place[i]
	if from == placeFree || from == placeSending {
		panic("provider: double free of a buffer")
	}
	if int(i) < p.nLent && p.linked[i] {
		p.move(i, placeSending)
		return
	}
	p.free1(i, from)
}

// free1 puts buffer i, in place from, on its free stack.
func (p *bufPool) free1(i uint32, from bufPlace) {
	p.place[i] = placeFree
	p.counts[from].Add(-1)
	p.counts[placeFree].Add(1)
	r := p.region(i)
	p.free[r] = append(p.free[r], i)
}

// buf returns the whole of buffer i.
func (p *bufPool) buf(i uint32) []byte {
	if int(i) < p.nLent {
		r := int(i) / p.per
		o := (int(i)-r*p.per)*p.stride + p.head
		return p.lent[r][o : o+p.size : o+p.size]
	}
	o := (int(i) - p.nLent) * p.size
	return p.mem[o : o+p.size : o+p.size]
}

// inLent reports whether buffer i lives in the link's memory.
func (p *bufPool) inLent(i uint32) bool { return int(i) < p.nLent }

// link records that the link sends from lent buffer i in place: nobody
// may write it, nor reuse it, until unlink.
func (p *bufPool) link(i uint32) {
	p.linked[i] = true
	p.nLinked++
}

// linking reports whether the link still sends from buffer i.
func (p *bufPool) linking(i uint32) bool { return int(i) < p.nLent && p.linked[i] }

// unlink records that the link is done with lent buffer i; it reports
// whether that freed the buffer.
func (p *bufPool) unlink(i uint32) bool {
	if int(i) >= p.nLent || !p.linked[i] {
		panic("provider: unlink of a buffer the link does not hold")
	}
	p.linked[i] = false
	p.nLinked--
	if p.place[i] != placeSending {
		return false
	}
	p.free1(i, placeSending)
	return true
}

func (p *bufPool) total() int              { return len(p.place) }
func (p *bufPool) nfree() int              { return int(p.counts[placeFree].Load()) }
func (p *bufPool) count(pl bufPlace) int64 { return p.counts[pl].Load() }
