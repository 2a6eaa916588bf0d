package ring

import "sync/atomic"

// mpscSlot is one slot of an MPSC ring. A Submit of a run of slots writes
// the run's length into its first slot and then stores that slot's position
// plus one into seq; the consumer reads a run only after seeing seq, and
// skips over it whole. Positions are 64-bit and never reused, so a seq left
// from an earlier lap cannot match; callers see their low 32 bits.
type mpscSlot[T any] struct {
	seq atomic.Uint64 // position+1 once the run starting here is published
	run uint32        // length of that run; written before seq
	val T
}

// MPSC is a bounded multi-producer, single-consumer ring of T, after
// Vyukov's bounded queue: producers claim positions with a compare-and-swap
// and publish them through per-slot sequence numbers, so the consumer sees
// a slot only after its producer has filled it.
//
// Any goroutine may produce (Reserve, At on reserved slots, Submit, Push).
// One goroutine owns the consumer side (Peek, At on peeked slots, Release,
// Cancel, Pop). Len and Cap may be called from any goroutine.
//
// Items from one producer come out in that producer's order. A reserved
// slot cannot be given back, since other producers may have claimed later
// ones; a producer that changes its mind must still Submit it, marked in a
// way its consumer understands.
type MPSC[T any] struct {
	_ noCopy

	// Read-only after NewMPSC.
	slots []mpscSlot[T]
	mask  uint32

	_     pad
	tail  atomic.Uint64 // next position to claim; producers CAS it
	limit atomic.Uint64 // cached head+size: positions below it are free
	_     pad
	head  atomic.Uint64 // first unreleased position; only the consumer updates
	_     pad

	// Private to the consumer.
	released uint64 // our copy of head
	peeked   uint64 // next position Peek hands out
	ready    uint64 // positions below it are known to be published
	_        pad
}

// NewMPSC returns an empty ring of size slots. size must be a power of two
// in [1, MaxSize].
func NewMPSC[T any](size int) (*MPSC[T], error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	return newMPSCAt[T](uint32(size), 0), nil
}

// newMPSCAt starts all positions at start, so tests can cross 2^32.
func newMPSCAt[T any](size uint32, start uint64) *MPSC[T] {
	q := &MPSC[T]{
		slots:    make([]mpscSlot[T], size),
		mask:     size - 1,
		released: start,
		peeked:   start,
		ready:    start,
	}
	// seq 0 matches no position+1, so every slot starts unpublished.
	q.tail.Store(start)
	q.limit.Store(start + uint64(size))
	q.head.Store(start)
	return q
}

// Reserve claims up to n contiguous free slots and returns the index of the
// first and how many it got, 0 when the ring is full. It never waits for
// the consumer; it retries only when another producer claimed slots first.
// Fill the slots through At and publish them with Submit.
func (q *MPSC[T]) Reserve(n int) (idx uint32, got int) {
	if n <= 0 {
		return 0, 0
	}
	pos, k := q.reserve(uint64(min(n, len(q.slots))))
	return uint32(pos), int(k)
}

func (q *MPSC[T]) reserve(n uint64) (pos, got uint64) {
	for {
		pos = q.tail.Load()
		lim := q.limit.Load()
		// lim may be older than pos: compare as signed.
		if int64(lim-pos) < int64(n) {
			// The consumer releases in order and stores head after
			// clearing the slots, so everything below head+size is free.
			// Other producers may store an older limit over ours; that
			// only costs them a refresh.
			lim = q.head.Load() + uint64(len(q.slots))
			q.limit.Store(lim)
		}
		free := int64(lim - pos)
		if free <= 0 {
			if q.tail.Load() != pos {
				continue // stale pos; someone else claimed
			}
			return pos, 0
		}
		got = min(n, uint64(free))
		if q.tail.CompareAndSwap(pos, pos+got) {
			return pos, got
		}
	}
}

// At returns the slot for index idx, which must come from Reserve or Peek
// and not yet be submitted or released.
func (q *MPSC[T]) At(idx uint32) *T { return &q.slots[idx&q.mask].val }

// Submit publishes the n slots from idx, which must have come from this
// producer's Reserve calls and not been submitted. A reservation may be
// submitted in pieces and in any order; the consumer sees each piece once
// every slot before it is published.
func (q *MPSC[T]) Submit(idx uint32, n int) {
	u := uint64(count(n))
	if u == 0 {
		return
	}
	// Unpublished slots lie between head and tail, less than 2^32 apart,
	// which gives back the 64-bit position.
	h := q.head.Load()
	pos := h + uint64(idx-uint32(h))
	s := &q.slots[idx&q.mask]
	if pos+u > q.tail.Load() || s.seq.Load() == pos+1 {
		panic("ring: MPSC Submit of slots that are not reserved")
	}
	s.run = uint32(u)
	s.seq.Store(pos + 1)
}

// Peek returns the index of the first of up to n published slots and how
// many there are: the run of contiguous published slots, 0 when the oldest
// unpeeked slot is not yet published.
func (q *MPSC[T]) Peek(n int) (idx uint32, got int) {
	if n <= 0 {
		return uint32(q.peeked), 0
	}
	start := q.peeked
	end := start + uint64(min(n, len(q.slots)))
	for q.ready < end {
		s := &q.slots[q.ready&uint64(q.mask)]
		if s.seq.Load() != q.ready+1 {
			break
		}
		q.ready += uint64(s.run)
	}
	k := min(end, q.ready) - start
	q.peeked += k
	return uint32(start), int(k)
}

// Release zeroes the oldest n peeked slots, so the ring keeps no stale
// pointers, and frees them for producers.
func (q *MPSC[T]) Release(n int) {
	u := uint64(count(n))
	if u > q.peeked-q.released {
		panic("ring: Release of more entries than were peeked")
	}
	var zero T
	for p := q.released; p < q.released+u; p++ {
		q.slots[p&uint64(q.mask)].val = zero
	}
	q.released += u
	q.head.Store(q.released)
}

// Cancel un-peeks the newest n peeked, unreleased slots; the next Peek
// returns them again.
func (q *MPSC[T]) Cancel(n int) {
	u := uint64(count(n))
	if u > q.peeked-q.released {
		panic("ring: Cancel of more entries than were peeked")
	}
	q.peeked -= u
}

// Push appends v, reporting false if the ring is full.
func (q *MPSC[T]) Push(v T) bool {
	pos, got := q.reserve(1)
	if got == 0 {
		return false
	}
	s := &q.slots[pos&uint64(q.mask)]
	s.val = v
	s.run = 1
	s.seq.Store(pos + 1)
	return true
}

// Pop removes and returns the oldest published item, reporting false if
// there is none. It must not be used while slots from Peek are outstanding.
func (q *MPSC[T]) Pop() (v T, ok bool) {
	if q.peeked != q.released {
		panic("ring: Pop with peeked, unreleased slots")
	}
	p := q.released
	s := &q.slots[p&uint64(q.mask)]
	if q.ready == p {
		if s.seq.Load() != p+1 {
			return v, false
		}
		q.ready += uint64(s.run)
	}
	v = s.val
	var zero T
	s.val = zero
	q.released = p + 1
	q.peeked = p + 1
	q.head.Store(p + 1)
	return v, true
}

// Len returns the number of claimed, unreleased slots, including ones whose
// producers have not yet submitted them. It is a snapshot that may already
// be stale.
func (q *MPSC[T]) Len() int {
	h := q.head.Load() // first, so t >= h
	t := q.tail.Load()
	return int(min(t-h, uint64(len(q.slots))))
}

// Cap returns the ring size.
func (q *MPSC[T]) Cap() int { return len(q.slots) }
