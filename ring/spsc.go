package ring

import (
	"fmt"
	"math/bits"
	"sync/atomic"
)

// cacheLine separates state written by different goroutines so that one
// side's writes do not invalidate the other side's cached lines.
const cacheLine = 64

type pad [cacheLine]byte

// noCopy makes go vet report copies: a ring's cursors point into the ring
// itself.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// SPSC is a bounded single-producer, single-consumer ring of T.
//
// One goroutine owns the producer side (Reserve, At on reserved slots,
// Submit, CancelReserve, Push) and one goroutine owns the consumer side
// (Peek, At on peeked slots, Release, CancelPeek, Pop); the two may be the
// same. Len and Cap may be called from any goroutine.
type SPSC[T any] struct {
	_ noCopy

	// Read-only after NewSPSC.
	slots []T
	mask  uint32

	_       pad
	prodIdx uint32 // producer index; only the producer updates
	_       pad
	consIdx uint32 // consumer index; only the consumer updates
	_       pad
	prod    Prod // producer's cursor and cached consumer index
	_       pad
	cons    Cons // consumer's cursor and cached producer index
	_       pad
}

// NewSPSC returns an empty ring of size slots. size must be a power of two
// in [1, MaxSize].
func NewSPSC[T any](size int) (*SPSC[T], error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	return newSPSCAt[T](uint32(size), 0), nil
}

// newSPSCAt starts both indices at start, so tests can cross 2^32.
func newSPSCAt[T any](size, start uint32) *SPSC[T] {
	s := &SPSC[T]{
		slots:   make([]T, size),
		mask:    size - 1,
		prodIdx: start,
		consIdx: start,
	}
	s.prod = NewProd(&s.prodIdx, &s.consIdx, size)
	s.cons = NewCons(&s.prodIdx, &s.consIdx, size)
	return s
}

// Reserve claims up to n free slots for the producer and returns the index
// of the first and how many it got, 0 when the ring is full. Fill them
// through At(idx), At(idx+1), ... and then Submit.
func (s *SPSC[T]) Reserve(n int) (idx uint32, got int) {
	if n <= 0 {
		return s.prod.reserved, 0
	}
	i, g := s.prod.Reserve(uint32(min(n, len(s.slots))))
	return i, int(g)
}

// At returns the slot for index idx, which must come from Reserve or Peek
// and not yet be submitted or released.
func (s *SPSC[T]) At(idx uint32) *T { return &s.slots[idx&s.mask] }

// Submit publishes the oldest n reserved slots to the consumer.
func (s *SPSC[T]) Submit(n int) { s.prod.Submit(count(n)) }

// CancelReserve gives back the newest n reserved, unsubmitted slots. Their
// contents are not cleared; the producer overwrites them on reuse.
func (s *SPSC[T]) CancelReserve(n int) { s.prod.Cancel(count(n)) }

// Peek returns the index of the first of up to n filled slots and how many
// there are, 0 when the ring is empty. Read them through At.
func (s *SPSC[T]) Peek(n int) (idx uint32, got int) {
	if n <= 0 {
		return s.cons.peeked, 0
	}
	i, g := s.cons.Peek(uint32(min(n, len(s.slots))))
	return i, int(g)
}

// Release zeroes the oldest n peeked slots, so the ring keeps no stale
// pointers, and hands them back to the producer.
func (s *SPSC[T]) Release(n int) {
	u := count(n)
	if u > s.cons.pending() {
		panic("ring: Release of more entries than were peeked")
	}
	s.clear(s.cons.released, u)
	s.cons.Release(u)
}

// CancelPeek un-peeks the newest n peeked, unreleased slots; the next Peek
// returns them again.
func (s *SPSC[T]) CancelPeek(n int) { s.cons.Cancel(count(n)) }

// Push appends v, reporting false if the ring is full. It must not be used
// while slots from Reserve are outstanding.
func (s *SPSC[T]) Push(v T) bool {
	if s.prod.pending() != 0 {
		panic("ring: Push with reserved, unsubmitted slots")
	}
	idx, got := s.prod.Reserve(1)
	if got == 0 {
		return false
	}
	s.slots[idx&s.mask] = v
	s.prod.Submit(1)
	return true
}

// Pop removes and returns the oldest item, reporting false if the ring is
// empty. It must not be used while slots from Peek are outstanding.
func (s *SPSC[T]) Pop() (v T, ok bool) {
	if s.cons.pending() != 0 {
		panic("ring: Pop with peeked, unreleased slots")
	}
	idx, got := s.cons.Peek(1)
	if got == 0 {
		return v, false
	}
	p := &s.slots[idx&s.mask]
	v = *p
	var zero T
	*p = zero
	s.cons.Release(1)
	return v, true
}

// Len returns the number of submitted, unreleased items. From any goroutine
// other than the two owners it is a snapshot that may already be stale.
func (s *SPSC[T]) Len() int {
	c := atomic.LoadUint32(&s.consIdx) // first, so p >= c
	p := atomic.LoadUint32(&s.prodIdx)
	return min(int(p-c), len(s.slots))
}

// Cap returns the ring size.
func (s *SPSC[T]) Cap() int { return len(s.slots) }

// clear zeroes n slots from index idx, in at most two runs.
func (s *SPSC[T]) clear(idx, n uint32) {
	start := idx & s.mask
	end := start + n
	if end <= uint32(len(s.slots)) {
		clear(s.slots[start:end])
		return
	}
	clear(s.slots[start:])
	clear(s.slots[:end-uint32(len(s.slots))])
}

func checkSize(size int) error {
	if size < 1 || uint64(size) > MaxSize || bits.OnesCount(uint(size)) != 1 {
		return fmt.Errorf("ring: size %d: %w", size, ErrSize)
	}
	return nil
}

// count converts a caller's slot count; negative counts are a bug.
func count(n int) uint32 {
	if n < 0 || uint64(n) > MaxSize {
		panic("ring: slot count out of range")
	}
	return uint32(n)
}
