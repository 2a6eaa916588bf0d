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
// datagram. The first nLent live in memory the link lends (see lender),
// the rest in one slab of our own. It is owned by the poller; the counters
// may be read from any goroutine.
type bufPool struct {
	size   int
	mem    []byte     // buffers nLent and up, size bytes apart
	free   []uint32   // stack of free buffer indices
	place  []bufPlace // place of every buffer
	counts [numBufPlaces]atomic.Int64

	// Lent memory: buffer i < nLent at lent[i*stride+head:]. linked marks
	// those the link sends from in place; nLinked counts them.
	lent         []byte
	stride, head int
	nLent        int
	linked       []bool
	nLinked      int
}

func newBufPool(n, size int) *bufPool { return newBufPoolLent(n, size, nil, 0, 0, 0) }

// newBufPoolLent is newBufPool with the first nLent buffers in lent, each
// stride bytes from the last and head bytes into its stride.
func newBufPoolLent(n, size int, lent []byte, stride, head, nLent int) *bufPool {
	nLent = min(nLent, n)
	p := &bufPool{
		size:   size,
		mem:    make([]byte, (n-nLent)*size),
		free:   make([]uint32, n),
		place:  make([]bufPlace, n),
		lent:   lent,
		stride: stride,
		head:   head,
		nLent:  nLent,
		linked: make([]bool, nLent),
	}
	for i := range p.free {
		// Low indices, the lent ones, are handed out first.
		p.free[i] = uint32(n - 1 - i)
	}
	p.counts[placeFree].Store(int64(n))
	return p
}

// get takes a free buffer and puts it in place to; it reports false when
// the pool is empty.
func (p *bufPool) get(to bufPlace) (uint32, bool) {
	k := len(p.free)
	if k == 0 {
		return noBuf, false
	}
	i := p.free[k-1]
	p.free = p.free[:k-1]
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
	p.place[i] = placeFree
	p.counts[from].Add(-1)
	p.counts[placeFree].Add(1)
	p.free = append(p.free, i)
}

// buf returns the whole of buffer i.
func (p *bufPool) buf(i uint32) []byte {
	if int(i) < p.nLent {
		o := int(i)*p.stride + p.head
		return p.lent[o : o+p.size : o+p.size]
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
	p.place[i] = placeFree
	p.counts[placeSending].Add(-1)
	p.counts[placeFree].Add(1)
	p.free = append(p.free, i)
	return true
}

func (p *bufPool) total() int              { return len(p.place) }
func (p *bufPool) nfree() int              { return len(p.free) }
func (p *bufPool) count(pl bufPlace) int64 { return p.counts[pl].Load() }
