package ring

import (
	"math/bits"
	"sync/atomic"
)

// MaxSize is the largest ring size: indices are uint32 and the size must be
// a power of two.
const MaxSize = 1 << 31

// Prod is the producer side of a ring whose producer and consumer indices
// live in shared memory. Only one goroutine may use a Prod.
type Prod struct {
	producer *uint32 // shared; only we update
	consumer *uint32 // shared; only the other side updates

	// Private to the owning goroutine.
	limit     uint32 // cached consumer index + size: we may reserve below it
	reserved  uint32 // next index Reserve hands out
	submitted uint32 // last value we stored to *producer
	mask      uint32
}

// NewProd returns the producer side of a ring of size slots whose indices
// are at producer and consumer. Reservation starts at the current producer
// index. It panics if size is not a power of two in [1, MaxSize], which is a
// programming error.
func NewProd(producer, consumer *uint32, size uint32) Prod {
	mustPow2(size)
	prod := atomic.LoadUint32(producer)
	return Prod{
		producer:  producer,
		consumer:  consumer,
		limit:     atomic.LoadUint32(consumer) + size,
		reserved:  prod,
		submitted: prod,
		mask:      size - 1,
	}
}

// Reserve claims up to n free slots and returns the index of the first one
// and how many it got, 0 when the ring is full. The consumer index is
// re-read only when the cached copy says there is not room for n.
func (p *Prod) Reserve(n uint32) (idx uint32, got uint32) {
	free := p.limit - p.reserved
	if free < n {
		p.limit = atomic.LoadUint32(p.consumer) + p.mask + 1
		free = p.limit - p.reserved
	}
	got = min(n, free)
	idx = p.reserved
	p.reserved += got
	return idx, got
}

// Submit publishes the oldest n reserved slots to the consumer. Their
// contents must be written before the call.
func (p *Prod) Submit(n uint32) {
	if n > p.reserved-p.submitted {
		panic("ring: Submit of more slots than were reserved")
	}
	p.submitted += n
	atomic.StoreUint32(p.producer, p.submitted)
}

// Cancel gives back the newest n reserved, unsubmitted slots.
func (p *Prod) Cancel(n uint32) {
	if n > p.reserved-p.submitted {
		panic("ring: Cancel of more slots than were reserved")
	}
	p.reserved -= n
}

// Free returns the number of slots Reserve could hand out now, after
// re-reading the consumer index.
func (p *Prod) Free() uint32 {
	p.limit = atomic.LoadUint32(p.consumer) + p.mask + 1
	return p.limit - p.reserved
}

// Mask returns size-1; a slot index is idx & Mask().
func (p *Prod) Mask() uint32 { return p.mask }

// pending is the number of reserved, unsubmitted slots.
func (p *Prod) pending() uint32 { return p.reserved - p.submitted }

// Cons is the consumer side of a ring whose producer and consumer indices
// live in shared memory. Only one goroutine may use a Cons.
type Cons struct {
	producer *uint32 // shared; only the other side updates
	consumer *uint32 // shared; only we update

	// Private to the owning goroutine.
	avail    uint32 // cached producer index: entries below it are filled
	peeked   uint32 // next index Peek hands out
	released uint32 // last value we stored to *consumer
	mask     uint32
}

// NewCons returns the consumer side of a ring of size slots whose indices
// are at producer and consumer. It panics if size is not a power of two in
// [1, MaxSize].
func NewCons(producer, consumer *uint32, size uint32) Cons {
	mustPow2(size)
	cons := atomic.LoadUint32(consumer)
	return Cons{
		producer: producer,
		consumer: consumer,
		avail:    atomic.LoadUint32(producer),
		peeked:   cons,
		released: cons,
		mask:     size - 1,
	}
}

// Peek returns the index of the first of up to n filled entries and how
// many there are, 0 when the ring is empty. The producer index is re-read
// only when the cached copy has nothing left, so a batch may come back
// shorter than what is really there.
func (c *Cons) Peek(n uint32) (idx uint32, got uint32) {
	entries := c.avail - c.peeked
	if entries == 0 {
		c.avail = atomic.LoadUint32(c.producer)
		entries = c.avail - c.peeked
	}
	got = min(n, entries)
	idx = c.peeked
	c.peeked += got
	return idx, got
}

// Release hands the oldest n peeked entries back to the producer. Reads of
// their contents must be done before the call.
func (c *Cons) Release(n uint32) {
	if n > c.peeked-c.released {
		panic("ring: Release of more entries than were peeked")
	}
	c.released += n
	atomic.StoreUint32(c.consumer, c.released)
}

// Cancel un-peeks the newest n peeked, unreleased entries; the next Peek
// returns them again.
func (c *Cons) Cancel(n uint32) {
	if n > c.peeked-c.released {
		panic("ring: Cancel of more entries than were peeked")
	}
	c.peeked -= n
}

// Available returns the number of entries Peek could hand out now, after
// re-reading the producer index.
func (c *Cons) Available() uint32 {
	c.avail = atomic.LoadUint32(c.producer)
	return c.avail - c.peeked
}

// Mask returns size-1; a slot index is idx & Mask().
func (c *Cons) Mask() uint32 { return c.mask }

// Filled reports whether the ring holds entries not yet released. It reads
// only the shared indices, so it does not disturb the consumer's cached
// view.
func (c *Cons) Filled() bool { return atomic.LoadUint32(c.producer) != atomic.LoadUint32(c.consumer) }

// pending is the number of peeked, unreleased entries.
func (c *Cons) pending() uint32 { return c.peeked - c.released }

func mustPow2(size uint32) {
	if bits.OnesCount32(size) != 1 {
		panic("ring: size must be a power of two")
	}
}
