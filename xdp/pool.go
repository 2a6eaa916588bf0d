package xdp

import (
	"fmt"
	"strings"
)

// Place is where a UMEM frame is at one instant. Every frame is in exactly
// one place.
type Place uint8

const (
	PlaceFree       Place = iota // in the pool, unused
	PlaceFill                    // on the fill ring, or taken from it by the kernel for a receive
	PlaceRx                      // delivered on the rx ring, not yet taken by the owner
	PlaceHeld                    // held by the owner (received data, a frame being built, unacked data)
	PlaceTx                      // on the tx ring or being sent by the kernel
	PlaceCompletion              // returned on the completion ring, not yet recycled
	numPlaces
)

var placeNames = [numPlaces]string{"free", "fill", "rx", "held", "tx", "completion"}

func (p Place) String() string {
	if p < numPlaces {
		return placeNames[p]
	}
	return fmt.Sprintf("Place(%d)", p)
}

// Pool is an O(1) pool of UMEM frames that knows where each frame is.
// It is owned by the goroutine that owns the queue; it is not safe for
// concurrent use. Frames are identified by their index (addr / frame size).
type Pool struct {
	free   []uint32 // stack of free frame indices
	place  []Place  // place of every frame
	counts [numPlaces]int
}

// newPool returns a pool of n frames, all free.
func newPool(n int) *Pool {
	p := &Pool{free: make([]uint32, n), place: make([]Place, n)}
	for i := range p.free {
		// Hand out low indices first: nicer to read in a debugger.
		p.free[i] = uint32(n - 1 - i)
	}
	p.counts[PlaceFree] = n
	return p
}

// Len returns the total number of frames.
func (p *Pool) Len() int { return len(p.place) }

// Count returns how many frames are in place pl.
func (p *Pool) Count(pl Place) int { return p.counts[pl] }

// Free returns how many frames are free.
func (p *Pool) Free() int { return len(p.free) }

// Get takes a free frame and puts it in place to. It reports false when the
// pool is empty, a condition the caller handles with back-pressure.
func (p *Pool) Get(to Place) (uint32, bool) {
	n := len(p.free)
	if n == 0 {
		return 0, false
	}
	f := p.free[n-1]
	p.free = p.free[:n-1]
	p.move(f, PlaceFree, to)
	return f, true
}

// Put returns frame f, currently in place from, to the free pool.
func (p *Pool) Put(f uint32, from Place) {
	p.move(f, from, PlaceFree)
	p.free = append(p.free, f)
}

// Move records that frame f went from one place to another.
func (p *Pool) Move(f uint32, from, to Place) {
	if from == PlaceFree || to == PlaceFree {
		panic("xdp: Pool.Move to or from free; use Get and Put")
	}
	p.move(f, from, to)
}

// PlaceOf returns where frame f is.
func (p *Pool) PlaceOf(f uint32) Place { return p.place[f] }

func (p *Pool) move(f uint32, from, to Place) {
	if debug && p.place[f] != from {
		panic(fmt.Sprintf("xdp: frame %d is %v, not %v (moving to %v)", f, p.place[f], from, to))
	}
	p.place[f] = to
	p.counts[from]--
	p.counts[to]++
}

// reclaim returns every frame in place pl to the free pool. The queue uses
// it after the kernel has dropped its rings, which returns nothing by itself.
func (p *Pool) reclaim(pl Place) int {
	n := 0
	for f, at := range p.place {
		if at == pl {
			p.Put(uint32(f), pl)
			n++
		}
	}
	return n
}

// Check verifies the accounting: each frame is in exactly one place, the
// per-place counters match the frames, the free stack holds exactly the
// free frames, and the counters add up to the total.
func (p *Pool) Check() error {
	var counts [numPlaces]int
	for f, pl := range p.place {
		if pl >= numPlaces {
			return fmt.Errorf("xdp: frame %d in unknown place %d", f, pl)
		}
		counts[pl]++
	}
	sum := 0
	for pl := range numPlaces {
		if counts[pl] != p.counts[pl] {
			return fmt.Errorf("xdp: %d frames %v, counter says %d", counts[pl], pl, p.counts[pl])
		}
		sum += p.counts[pl]
	}
	if sum != len(p.place) {
		return fmt.Errorf("xdp: frames add up to %d, want %d", sum, len(p.place))
	}
	if len(p.free) != counts[PlaceFree] {
		return fmt.Errorf("xdp: free stack holds %d frames, %d are free", len(p.free), counts[PlaceFree])
	}
	seen := make([]bool, len(p.place))
	for _, f := range p.free {
		if int(f) >= len(p.place) || p.place[f] != PlaceFree || seen[f] {
			return fmt.Errorf("xdp: free stack entry %d is not a unique free frame", f)
		}
		seen[f] = true
	}
	return nil
}

// String summarises the accounting, e.g. "free=60 fill=4 held=0 ...".
func (p *Pool) String() string {
	var b strings.Builder
	for pl := range numPlaces {
		if pl > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%v=%d", pl, p.counts[pl])
	}
	return b.String()
}
