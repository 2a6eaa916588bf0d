// Package timerheap is a binary min-heap of timers, the one timer
// mechanism of the protocol engine and of the in-memory link: whatever is
// due first is at the top.
//
// A Heap is not safe for concurrent use; its owner's lock or goroutine
// guards it. It allocates only when it grows past its largest size.
package timerheap

// Timer is what a Heap holds. Before reports whether the element is due
// before another; among elements due at once, none is before the other,
// and the heap orders them as it happens to. SetIndex tells an element
// where in the heap it now sits (-1 once it has left), so that its owner
// can Fix or Remove it; an element that is never fixed or removed may
// ignore it.
type Timer[T any] interface {
	Before(T) bool
	SetIndex(int)
}

// Heap is a min-heap of timers. The zero value is an empty heap.
type Heap[T Timer[T]] struct {
	items []T
}

// Len returns how many timers the heap holds.
func (h *Heap[T]) Len() int { return len(h.items) }

// Min returns the timer due first. The heap must not be empty.
func (h *Heap[T]) Min() T { return h.items[0] }

// At returns the i-th timer in the heap's own order: for visiting them
// all, for instance to release what they hold.
func (h *Heap[T]) At(i int) T { return h.items[i] }

// Push adds x.
func (h *Heap[T]) Push(x T) {
	h.items = append(h.items, x)
	i := len(h.items) - 1
	x.SetIndex(i)
	h.up(i)
}

// Pop removes and returns the timer due first. The heap must not be
// empty.
func (h *Heap[T]) Pop() T {
	return h.Remove(0)
}

// Remove removes and returns the timer at index i.
func (h *Heap[T]) Remove(i int) T {
	last := len(h.items) - 1
	h.swap(i, last)
	x := h.items[last]
	var zero T
	h.items[last] = zero
	h.items = h.items[:last]
	x.SetIndex(-1)
	if i < last {
		h.down(i)
		h.up(i)
	}
	return x
}

// Fix restores the order after the timer at index i changed when it is
// due.
func (h *Heap[T]) Fix(i int) {
	h.down(i)
	h.up(i)
}

// Clear empties the heap, keeping its room.
func (h *Heap[T]) Clear() {
	clear(h.items)
	h.items = h.items[:0]
}

func (h *Heap[T]) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].SetIndex(i)
	h.items[j].SetIndex(j)
}

func (h *Heap[T]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.items[i].Before(h.items[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *Heap[T]) down(i int) {
	n := len(h.items)
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && h.items[l].Before(h.items[m]) {
			m = l
		}
		if r < n && h.items[r].Before(h.items[m]) {
			m = r
		}
		if m == i {
			return
		}
		h.swap(i, m)
		i = m
	}
}
