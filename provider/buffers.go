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
	numBufPlaces
)

var bufPlaceNames = [numBufPlaces]string{"free", "send-queued", "in-flight", "out-of-order", "recv-queued"}

func (p bufPlace) String() string {
	if p < numBufPlaces {
		return bufPlaceNames[p]
	}
	return fmt.Sprintf("bufPlace(%d)", uint8(p))
}

const noBuf = ^uint32(0)

// bufPool is a bounded pool of fixed-size buffers, each the size of one
// datagram, carved from one slab. It is owned by the poller; the counters
// may be read from any goroutine.
type bufPool struct {
	size   int
	mem    []byte
	free   []uint32   // stack of free buffer indices
	place  []bufPlace // place of every buffer
	counts [numBufPlaces]atomic.Int64
}

func newBufPool(n, size int) *bufPool {
	p := &bufPool{
		size:  size,
		mem:   make([]byte, n*size),
		free:  make([]uint32, n),
		place: make([]bufPlace, n),
	}
	for i := range p.free {
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

// put returns a buffer to the pool. Putting a free buffer is a bug.
func (p *bufPool) put(i uint32) {
	from := p.place[i]
	if from == placeFree {
		panic("provider: double free of a buffer")
	}
	p.place[i] = placeFree
	p.counts[from].Add(-1)
	p.counts[placeFree].Add(1)
	p.free = append(p.free, i)
}

// buf returns the whole of buffer i.
func (p *bufPool) buf(i uint32) []byte {
	o := int(i) * p.size
	return p.mem[o : o+p.size : o+p.size]
}

func (p *bufPool) total() int              { return len(p.place) }
func (p *bufPool) nfree() int              { return len(p.free) }
func (p *bufPool) count(pl bufPlace) int64 { return p.counts[pl].Load() }
