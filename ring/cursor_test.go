package ring

import (
	"math"
	"testing"
)

func mustPanic(t *testing.T, name string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		if recover() == nil {
			t.Errorf("%s did not panic", name)
		}
	}()
	f()
}

func TestCursorBadSize(t *testing.T) {
	var prod, cons uint32
	for _, size := range []uint32{0, 3, 6, 1000, 1<<31 + 1, math.MaxUint32} {
		mustPanic(t, "NewProd", func() { NewProd(&prod, &cons, size) })
		mustPanic(t, "NewCons", func() { NewCons(&prod, &cons, size) })
	}
	for _, size := range []uint32{1, 2, 1024, 1 << 31} {
		p := NewProd(&prod, &cons, size)
		c := NewCons(&prod, &cons, size)
		if p.Mask() != size-1 || c.Mask() != size-1 {
			t.Errorf("size %d: masks %#x %#x", size, p.Mask(), c.Mask())
		}
	}
}

// TestCursorWrap runs a producer and a consumer cursor around a small ring
// whose indices start just below 2^32.
func TestCursorWrap(t *testing.T) {
	const size = 8
	for _, start := range []uint32{0, math.MaxUint32 - 20, math.MaxUint32 - 7, math.MaxUint32} {
		prodIdx, consIdx := start, start
		p := NewProd(&prodIdx, &consIdx, size)
		c := NewCons(&prodIdx, &consIdx, size)
		var slots [size]uint32
		next, want := start, start // next value to write, next to read
		for round := range 40 {
			n := uint32(round%size + 1)
			idx, got := p.Reserve(n)
			if idx != next {
				t.Fatalf("start %#x round %d: Reserve idx %#x, want %#x", start, round, idx, next)
			}
			if free := size - (next - want); got != min(n, free) {
				t.Fatalf("start %#x round %d: Reserve(%d) got %d, free %d", start, round, n, got, free)
			}
			for i := range got {
				slots[(idx+i)&p.Mask()] = idx + i
			}
			p.Submit(got)
			next += got
			if prodIdx != next {
				t.Fatalf("producer index %#x, want %#x", prodIdx, next)
			}

			if a := c.Available(); a != next-want {
				t.Fatalf("start %#x round %d: Available = %d, want %d", start, round, a, next-want)
			}
			m := uint32(round%3 + 1)
			idx, got = c.Peek(m)
			if idx != want || got != min(m, next-want) {
				t.Fatalf("start %#x round %d: Peek(%d) = %#x, %d; want %#x, %d",
					start, round, m, idx, got, want, min(m, next-want))
			}
			for i := range got {
				if v := slots[(idx+i)&c.Mask()]; v != idx+i {
					t.Fatalf("slot for %#x holds %#x", idx+i, v)
				}
			}
			c.Release(got)
			want += got
			if consIdx != want {
				t.Fatalf("consumer index %#x, want %#x", consIdx, want)
			}
		}
		if next-start < 3*size {
			t.Fatalf("start %#x: only %d items moved", start, next-start)
		}
	}
}

func TestProdFullAndCache(t *testing.T) {
	const size = 8
	prodIdx, consIdx := uint32(math.MaxUint32-2), uint32(math.MaxUint32-2)
	p := NewProd(&prodIdx, &consIdx, size)

	if f := p.Free(); f != size {
		t.Fatalf("Free = %d, want %d", f, size)
	}
	idx, got := p.Reserve(size + 5)
	if idx != math.MaxUint32-2 || got != size {
		t.Fatalf("Reserve = %#x, %d", idx, got)
	}
	if _, got := p.Reserve(1); got != 0 {
		t.Fatalf("Reserve on a full ring got %d", got)
	}
	p.Submit(size)
	if prodIdx != 5 {
		t.Fatalf("producer index %d, want 5 after wrap", prodIdx)
	}

	// The other side frees 4; a Reserve that needs more than the cache
	// has re-reads the consumer index.
	consIdx += 4
	if _, got := p.Reserve(2); got != 2 {
		t.Fatalf("Reserve(2) after release got %d", got)
	}
	limit := p.limit
	// With room cached, Reserve must not look at the consumer index.
	consIdx += 4
	if _, got := p.Reserve(2); got != 2 || p.limit != limit {
		t.Fatalf("Reserve(2) with cached room: got %d, limit %#x -> %#x", got, limit, p.limit)
	}
	if f := p.Free(); f != 4 {
		t.Fatalf("Free = %d, want 4", f)
	}
	// Partial reservation: ask for more than is free.
	if _, got := p.Reserve(10); got != 4 {
		t.Fatalf("Reserve(10) got %d, want 4", got)
	}
}

func TestProdAccumulateCancel(t *testing.T) {
	var prodIdx, consIdx uint32 = 100, 100
	p := NewProd(&prodIdx, &consIdx, 16)
	i1, _ := p.Reserve(3)
	i2, _ := p.Reserve(4)
	if i1 != 100 || i2 != 103 {
		t.Fatalf("Reserve idx %d, %d", i1, i2)
	}
	p.Submit(2) // oldest two
	if prodIdx != 102 {
		t.Fatalf("producer index %d, want 102", prodIdx)
	}
	p.Cancel(3) // newest three: 104..106
	if i3, _ := p.Reserve(1); i3 != 104 {
		t.Fatalf("Reserve after Cancel idx %d, want 104", i3)
	}
	// 102, 103, 104 are reserved and unsubmitted.
	mustPanic(t, "Submit(4)", func() { p.Submit(4) })
	mustPanic(t, "Cancel(4)", func() { p.Cancel(4) })
	p.Submit(3)
	if prodIdx != 105 {
		t.Fatalf("producer index %d, want 105", prodIdx)
	}
	mustPanic(t, "Submit(1) with nothing reserved", func() { p.Submit(1) })
	p.Submit(0)
	p.Cancel(0)
}

func TestConsEmptyAndCache(t *testing.T) {
	const size = 8
	prodIdx, consIdx := uint32(math.MaxUint32-1), uint32(math.MaxUint32-1)
	c := NewCons(&prodIdx, &consIdx, size)
	if _, got := c.Peek(1); got != 0 {
		t.Fatalf("Peek on an empty ring got %d", got)
	}
	if a := c.Available(); a != 0 {
		t.Fatalf("Available = %d", a)
	}

	prodIdx += 4 // wraps to 2
	idx, got := c.Peek(2)
	if idx != math.MaxUint32-1 || got != 2 {
		t.Fatalf("Peek(2) = %#x, %d", idx, got)
	}
	// The cache still holds two entries, so Peek does not re-read the
	// producer index and returns only those.
	prodIdx += 4
	if idx, got := c.Peek(8); idx != 0 || got != 2 {
		t.Fatalf("Peek(8) from cache = %#x, %d; want 0, 2", idx, got)
	}
	if idx, got := c.Peek(8); idx != 2 || got != 4 {
		t.Fatalf("Peek(8) after refresh = %#x, %d; want 2, 4", idx, got)
	}
	c.Release(8)
	if consIdx != 6 {
		t.Fatalf("consumer index %d, want 6", consIdx)
	}
	if a := c.Available(); a != 0 {
		t.Fatalf("Available = %d", a)
	}
}

func TestConsAccumulateCancel(t *testing.T) {
	var prodIdx, consIdx uint32 = 10, 0
	c := NewCons(&prodIdx, &consIdx, 16)
	c.Peek(3)
	c.Peek(3)
	c.Release(2) // oldest two
	if consIdx != 2 {
		t.Fatalf("consumer index %d, want 2", consIdx)
	}
	c.Cancel(3) // un-peek 3, 4, 5
	if idx, got := c.Peek(1); idx != 3 || got != 1 {
		t.Fatalf("Peek after Cancel = %d, %d; want 3, 1", idx, got)
	}
	// 2 and 3 are peeked and unreleased.
	mustPanic(t, "Release(3)", func() { c.Release(3) })
	mustPanic(t, "Cancel(3)", func() { c.Cancel(3) })
	c.Cancel(2)
	if a := c.Available(); a != 8 {
		t.Fatalf("Available = %d, want 8", a)
	}
	mustPanic(t, "Release(1) with nothing peeked", func() { c.Release(1) })
}
