package ring

import (
	"errors"
	"math"
	"testing"
)

func TestNewBadSize(t *testing.T) {
	for _, size := range []int{-1, 0, 3, 100, 1<<30 + 1, math.MaxInt} {
		if _, err := NewSPSC[int](size); !errors.Is(err, ErrSize) {
			t.Errorf("NewSPSC(%d): err %v, want ErrSize", size, err)
		}
		if _, err := NewMPSC[int](size); !errors.Is(err, ErrSize) {
			t.Errorf("NewMPSC(%d): err %v, want ErrSize", size, err)
		}
	}
	for _, size := range []int{1, 2, 64} {
		s, err := NewSPSC[int](size)
		if err != nil || s.Cap() != size || s.Len() != 0 {
			t.Errorf("NewSPSC(%d): %v, cap %d", size, err, s.Cap())
		}
		m, err := NewMPSC[int](size)
		if err != nil || m.Cap() != size || m.Len() != 0 {
			t.Errorf("NewMPSC(%d): %v, cap %d", size, err, m.Cap())
		}
	}
}

// pushPopper is the single-item side both ring types share.
type pushPopper interface {
	Push(v int) bool
	Pop() (int, bool)
	Len() int
}

// checkPushPop fills and empties r, a ring of 4 slots, five times over,
// checking order, fullness and emptiness.
func checkPushPop(t *testing.T, r pushPopper) {
	t.Helper()
	if _, ok := r.Pop(); ok {
		t.Fatal("Pop on an empty ring succeeded")
	}
	for round := range 5 {
		for i := range 4 {
			if !r.Push(round*10 + i) {
				t.Fatalf("Push %d failed", i)
			}
		}
		if r.Push(99) {
			t.Fatal("Push on a full ring succeeded")
		}
		if r.Len() != 4 {
			t.Fatalf("Len = %d, want 4", r.Len())
		}
		for i := range 4 {
			v, ok := r.Pop()
			if !ok || v != round*10+i {
				t.Fatalf("Pop = %d, %v; want %d", v, ok, round*10+i)
			}
		}
		if _, ok := r.Pop(); ok || r.Len() != 0 {
			t.Fatalf("ring not empty: Len %d", r.Len())
		}
	}
}

func TestSPSCPushPop(t *testing.T) {
	for _, start := range []uint32{0, math.MaxUint32 - 2} {
		checkPushPop(t, newSPSCAt[int](4, start))
	}
}

func TestSPSCBatch(t *testing.T) {
	s := newSPSCAt[int](8, math.MaxUint32-3)
	idx, got := s.Reserve(5)
	if got != 5 {
		t.Fatalf("Reserve(5) got %d", got)
	}
	for i := range uint32(got) {
		*s.At(idx + i) = int(i)
	}
	s.Submit(3)
	s.CancelReserve(2)
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s.Len())
	}
	if _, got := s.Reserve(100); got != 5 {
		t.Fatalf("Reserve(100) got %d, want the 5 free slots", got)
	}
	s.CancelReserve(5)

	pidx, got := s.Peek(2)
	if pidx != idx || got != 2 || *s.At(pidx) != 0 || *s.At(pidx + 1) != 1 {
		t.Fatalf("Peek(2) = %#x, %d", pidx, got)
	}
	s.CancelPeek(1)
	pidx, got = s.Peek(10)
	if pidx != idx+1 || got != 2 || *s.At(pidx + 1) != 2 {
		t.Fatalf("Peek(10) after CancelPeek = %#x, %d", pidx, got)
	}
	s.Release(3)
	if _, got := s.Peek(1); got != 0 || s.Len() != 0 {
		t.Fatalf("ring not empty after Release")
	}
	if _, got := s.Reserve(0); got != 0 {
		t.Fatal("Reserve(0) reserved")
	}
	if _, got := s.Peek(0); got != 0 {
		t.Fatal("Peek(0) peeked")
	}
}

func TestSPSCMisuse(t *testing.T) {
	s := newSPSCAt[int](4, 0)
	mustPanic(t, "Submit without Reserve", func() { s.Submit(1) })
	mustPanic(t, "Submit(-1)", func() { s.Submit(-1) })
	mustPanic(t, "Release without Peek", func() { s.Release(1) })
	mustPanic(t, "CancelPeek without Peek", func() { s.CancelPeek(1) })
	s.Reserve(1)
	mustPanic(t, "Push with a reservation", func() { s.Push(1) })
	s.Submit(1)
	s.Peek(1)
	mustPanic(t, "Pop with a peek", func() { s.Pop() })
}

// TestSPSCReleaseZeroes checks that released slots drop their pointers,
// including runs that wrap around the end of the slot array.
func TestSPSCReleaseZeroes(t *testing.T) {
	s := newSPSCAt[*int](4, 2)
	for round := range 3 {
		idx, got := s.Reserve(3)
		if got != 3 {
			t.Fatalf("round %d: Reserve got %d", round, got)
		}
		for i := range uint32(3) {
			*s.At(idx + i) = new(int)
		}
		s.Submit(3)
		s.Peek(3)
		s.Release(3)
		for i, p := range s.slots {
			if p != nil {
				t.Fatalf("round %d: slot %d still holds a pointer", round, i)
			}
		}
	}
	x := 1
	s.Push(&x)
	s.Pop()
	for i, p := range s.slots {
		if p != nil {
			t.Fatalf("slot %d still holds a pointer after Pop", i)
		}
	}
}
