package timerheap

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// timer is a tracked timer: it knows its index, as an engine's
// connection does.
type timer struct {
	at  int64
	idx int
}

func (t *timer) Before(o *timer) bool { return t.at < o.at }
func (t *timer) SetIndex(i int)       { t.idx = i }

// event is an untracked value timer, as a delayed datagram is: due at at,
// ties broken by seq.
type event struct{ at, seq int64 }

func (e event) Before(o event) bool { return e.at < o.at || e.at == o.at && e.seq < o.seq }
func (event) SetIndex(int)          {}

func check(t *testing.T, h *Heap[*timer]) {
	t.Helper()
	for i := range h.Len() {
		if x := h.At(i); x.idx != i {
			t.Fatalf("timer at %d believes it is at %d", i, x.idx)
		}
		if i > 0 && h.At(i).Before(h.At((i-1)/2)) {
			t.Fatalf("timer at %d is due before its parent", i)
		}
	}
}

// Random pushes, pops, removals and changes against a sorted model: the
// heap always yields the earliest, and every timer knows where it is.
func TestHeapModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var h Heap[*timer]
	var live []*timer
	for step := range 20000 {
		switch op := rng.IntN(10); {
		case op < 4 || len(live) == 0:
			x := &timer{at: rng.Int64N(1000)}
			h.Push(x)
			live = append(live, x)
		case op < 6:
			x := h.Pop()
			for _, o := range live {
				if o.at < x.at {
					t.Fatalf("step %d: popped %d with %d in the heap", step, x.at, o.at)
				}
			}
			if x.idx != -1 {
				t.Fatalf("step %d: a popped timer believes it is at %d", step, x.idx)
			}
			live = slices.DeleteFunc(live, func(o *timer) bool { return o == x })
		case op < 8:
			x := live[rng.IntN(len(live))]
			if got := h.Remove(x.idx); got != x || x.idx != -1 {
				t.Fatalf("step %d: removed the wrong timer", step)
			}
			live = slices.DeleteFunc(live, func(o *timer) bool { return o == x })
		default:
			x := live[rng.IntN(len(live))]
			x.at = rng.Int64N(1000)
			h.Fix(x.idx)
		}
		if h.Len() != len(live) {
			t.Fatalf("step %d: %d timers, want %d", step, h.Len(), len(live))
		}
		check(t, &h)
	}
}

// Value timers come out in order, ties in the order their seq gives.
func TestHeapValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var h Heap[event]
	var want []event
	for seq := range int64(500) {
		e := event{at: rng.Int64N(50), seq: seq}
		h.Push(e)
		want = append(want, e)
	}
	slices.SortFunc(want, func(a, b event) int {
		if a.Before(b) {
			return -1
		}
		return 1
	})
	for i, w := range want {
		if h.Min() != w {
			t.Fatalf("%d: min %v, want %v", i, h.Min(), w)
		}
		if got := h.Pop(); got != w {
			t.Fatalf("%d: popped %v, want %v", i, got, w)
		}
	}
	if h.Len() != 0 {
		t.Fatalf("%d left", h.Len())
	}
}

func TestHeapClear(t *testing.T) {
	var h Heap[*timer]
	for i := range 8 {
		h.Push(&timer{at: int64(i)})
	}
	h.Clear()
	if h.Len() != 0 || cap(h.items) < 8 {
		t.Fatalf("cleared heap: %d timers, room %d", h.Len(), cap(h.items))
	}
	if h.items[:8][3] != nil {
		t.Fatal("a cleared heap keeps its timers alive")
	}
}

// Once grown, the heap allocates nothing.
func TestHeapAllocs(t *testing.T) {
	var h Heap[*timer]
	ts := make([]*timer, 64)
	for i := range ts {
		ts[i] = &timer{at: int64(i * 7 % 64)}
		h.Push(ts[i])
	}
	for h.Len() > 0 {
		h.Pop()
	}
	n := testing.AllocsPerRun(100, func() {
		for _, x := range ts {
			h.Push(x)
		}
		ts[5].at = -1
		h.Fix(ts[5].idx)
		h.Remove(ts[9].idx)
		for h.Len() > 0 {
			h.Pop()
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
