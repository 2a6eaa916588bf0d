package ring

import (
	"math"
	"testing"
)

func TestMPSCPushPop(t *testing.T) {
	for _, start := range []uint64{0, math.MaxUint32 - 2} {
		checkPushPop(t, newMPSCAt[int](4, start))
	}
}

// TestMPSCOutOfOrderSubmit checks that the consumer sees only the run of
// published slots, however producers interleave their Submits.
func TestMPSCOutOfOrderSubmit(t *testing.T) {
	q := newMPSCAt[int](8, math.MaxUint32-3)
	a, na := q.Reserve(3) // producer A
	b, nb := q.Reserve(3) // producer B
	if na != 3 || nb != 3 || b != a+3 {
		t.Fatalf("Reserve = %#x,%d %#x,%d", a, na, b, nb)
	}
	if _, got := q.Reserve(5); got != 2 {
		t.Fatalf("Reserve(5) with 2 free got %d", got)
	}
	if _, got := q.Reserve(1); got != 0 {
		t.Fatalf("Reserve on a full ring got %d", got)
	}
	for i := range uint32(3) {
		*q.At(a + i) = int(i)
		*q.At(b + i) = int(10 + i)
	}
	q.Submit(b, 3)
	if _, got := q.Peek(8); got != 0 {
		t.Fatalf("Peek saw %d slots before A submitted", got)
	}
	q.Submit(a+1, 2) // A's slots out of order too
	if _, got := q.Peek(8); got != 0 {
		t.Fatalf("Peek saw %d slots before A's first submitted", got)
	}
	q.Submit(a, 1)
	idx, got := q.Peek(4)
	if idx != a || got != 4 {
		t.Fatalf("Peek(4) = %#x, %d; want %#x, 4", idx, got, a)
	}
	idx, got = q.Peek(8)
	if idx != a+4 || got != 2 {
		t.Fatalf("Peek(8) = %#x, %d; want the 2 left", idx, got)
	}
	want := []int{0, 1, 2, 10, 11, 12}
	for i, w := range want {
		if v := *q.At(a + uint32(i)); v != w {
			t.Fatalf("slot %d = %d, want %d", i, v, w)
		}
	}
	q.Cancel(2)
	q.Release(4)
	if q.Len() != 4 { // 2 published, 2 claimed but unpublished
		t.Fatalf("Len = %d, want 4", q.Len())
	}
	if _, got := q.Reserve(8); got != 4 {
		t.Fatalf("Reserve(8) after Release got %d, want 4", got)
	}
	for i := range q.slots {
		if v := q.slots[i].val; v != 0 && v < 10 {
			t.Fatalf("slot %d not zeroed: %d", i, v)
		}
	}
}

func TestMPSCMisuse(t *testing.T) {
	q := newMPSCAt[int](4, 0)
	mustPanic(t, "Release without Peek", func() { q.Release(1) })
	mustPanic(t, "Cancel without Peek", func() { q.Cancel(1) })
	mustPanic(t, "Submit(-1)", func() { q.Submit(0, -1) })
	idx, _ := q.Reserve(1)
	q.Submit(idx, 1)
	mustPanic(t, "Submit twice", func() { q.Submit(idx, 1) })
	mustPanic(t, "Submit of an unclaimed slot", func() { q.Submit(idx+1, 1) })
	j, _ := q.Reserve(1)
	mustPanic(t, "Submit past the claim", func() { q.Submit(j, 2) })
	q.Submit(j, 1)
	q.Peek(1)
	mustPanic(t, "Pop with a peek", func() { q.Pop() })
	if _, got := q.Reserve(0); got != 0 {
		t.Fatal("Reserve(0) reserved")
	}
	if _, got := q.Peek(0); got != 0 {
		t.Fatal("Peek(0) peeked")
	}
}

func TestMPSCReleaseZeroes(t *testing.T) {
	q := newMPSCAt[*int](4, 2)
	for round := range 3 {
		idx, got := q.Reserve(3)
		if got != 3 {
			t.Fatalf("round %d: Reserve got %d", round, got)
		}
		for i := range uint32(3) {
			*q.At(idx + i) = new(int)
		}
		q.Submit(idx, 3)
		q.Peek(3)
		q.Release(3)
		x := 1
		q.Push(&x)
		q.Pop()
		for i := range q.slots {
			if q.slots[i].val != nil {
				t.Fatalf("round %d: slot %d still holds a pointer", round, i)
			}
		}
	}
}
