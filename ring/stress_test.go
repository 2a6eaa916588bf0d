package ring

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("ring.seed", 0, "seed for the stress tests; 0 picks one from the clock")

// item is what the stress tests send: who made it, its place in that
// producer's sequence, and a value drawn from the producer's seeded stream.
type item struct {
	producer uint32
	seq      uint64
	val      uint64
}

// stressItems is how many items each stress test moves through a ring
// outside -short mode, with or without the race detector.
const stressItems = 10_000_000

func stressSetup(t *testing.T) (seed uint64, total int) {
	seed = *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -args -ring.seed=%d)", seed, seed)
	total = stressItems
	if testing.Short() {
		total = 200_000
	}
	return seed, total
}

// Each producer p draws item values from stream 2p and its own choices
// (batch sizes, partial fills) from stream 2p+1; the consumer regenerates
// stream 2p to check what arrives. The consumer's choices use stream
// consumerStream.
const consumerStream = 1 << 32

func valueStream(seed uint64, p int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(2*p)))
}

func choiceStream(seed uint64, p int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(2*p+1)))
}

// checker verifies that each producer's items arrive exactly once and in
// order, regenerating the expected values instead of storing them.
type checker struct {
	next []uint64     // next expected seq per producer
	vals []*rand.Rand // value stream per producer
	seen int
}

func newChecker(seed uint64, producers int) *checker {
	c := &checker{next: make([]uint64, producers)}
	for p := range producers {
		c.vals = append(c.vals, valueStream(seed, p))
	}
	return c
}

func (c *checker) check(it item) error {
	if int(it.producer) >= len(c.next) {
		return fmt.Errorf("item %d: bad producer in %+v", c.seen, it)
	}
	p := it.producer
	if it.seq != c.next[p] {
		return fmt.Errorf("item %d: producer %d seq %d, want %d", c.seen, p, it.seq, c.next[p])
	}
	if want := c.vals[p].Uint64(); it.val != want {
		return fmt.Errorf("item %d: producer %d seq %d value %#x, want %#x", c.seen, p, it.seq, it.val, want)
	}
	c.next[p]++
	c.seen++
	return nil
}

func (c *checker) done(perProducer int) error {
	for p, n := range c.next {
		if n != uint64(perProducer) {
			return fmt.Errorf("producer %d: got %d items, want %d", p, n, perProducer)
		}
	}
	return nil
}

// idle yields while the other side catches up, reporting false once the
// test has stopped.
func idle(stop *atomic.Bool) bool {
	runtime.Gosched()
	return !stop.Load()
}

// stallTimeout bounds how long the consumer waits without receiving
// anything, so a lost item fails the test instead of hanging it.
const stallTimeout = 30 * time.Second

// stallCheck reports an error once the consumer has gone stallTimeout
// without receiving anything.
type stallCheck struct {
	idles    int
	seen     int
	progress time.Time
}

func (s *stallCheck) idle(c *checker) error {
	if s.idles++; s.idles%1024 != 0 {
		return nil
	}
	now := time.Now()
	if c.seen != s.seen || s.progress.IsZero() {
		s.seen, s.progress = c.seen, now
		return nil
	}
	if now.Sub(s.progress) > stallTimeout {
		return fmt.Errorf("no item for %v after %d items; next seq per producer %v", stallTimeout, c.seen, c.next)
	}
	return nil
}

func TestSPSCStress(t *testing.T) {
	seed, total := stressSetup(t)
	setup := rand.New(rand.NewPCG(seed, consumerStream+1))
	size := 1 << (2 + setup.IntN(8))   // 4 to 512 slots
	maxBatch := 1 + setup.IntN(2*size) // sometimes more than fits
	start := uint32(0) - uint32(1+setup.IntN(total/2))
	t.Logf("size %d, batches up to %d, first index %#x", size, maxBatch, start)
	s := newSPSCAt[item](uint32(size), start)

	var stop atomic.Bool
	var wg sync.WaitGroup
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	wg.Go(func() {
		vals, choose := valueStream(seed, 0), choiceStream(seed, 0)
		var seq uint64
		for seq < uint64(total) {
			if choose.IntN(8) == 0 {
				it := item{0, seq, vals.Uint64()}
				for !s.Push(it) {
					if !idle(&stop) {
						return
					}
				}
				seq++
				continue
			}
			want := min(1+choose.IntN(maxBatch), total-int(seq))
			idx, got := s.Reserve(want)
			if got == 0 {
				if !idle(&stop) {
					return
				}
				continue
			}
			fill := got
			if choose.IntN(4) == 0 {
				fill = choose.IntN(got + 1)
			}
			for i := range uint32(fill) {
				*s.At(idx + i) = item{0, seq, vals.Uint64()}
				seq++
			}
			s.Submit(fill)
			s.CancelReserve(got - fill)
		}
	})

	consume(t, seed, total, total, 1, maxBatch, s, s.CancelPeek)
}

func TestMPSCStress(t *testing.T) {
	const producers = 4
	seed, total := stressSetup(t)
	perProducer := total / producers
	total = perProducer * producers
	setup := rand.New(rand.NewPCG(seed, consumerStream+1))
	size := 1 << (2 + setup.IntN(8))
	maxBatch := 1 + setup.IntN(2*size)
	start := 1<<32 - uint64(1+setup.IntN(total/2))
	t.Logf("%d producers, size %d, batches up to %d, first position %#x", producers, size, maxBatch, start)
	q := newMPSCAt[item](uint32(size), start)

	var stop atomic.Bool
	var wg sync.WaitGroup
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	for p := range producers {
		wg.Go(func() {
			vals, choose := valueStream(seed, p), choiceStream(seed, p)
			var seq uint64
			for seq < uint64(perProducer) {
				if choose.IntN(8) == 0 {
					it := item{uint32(p), seq, vals.Uint64()}
					for !q.Push(it) {
						if !idle(&stop) {
							return
						}
					}
					seq++
					continue
				}
				want := min(1+choose.IntN(maxBatch), perProducer-int(seq))
				idx, got := q.Reserve(want)
				if got == 0 {
					if !idle(&stop) {
						return
					}
					continue
				}
				for i := range uint32(got) {
					*q.At(idx + i) = item{uint32(p), seq, vals.Uint64()}
					seq++
				}
				// Sometimes publish the back half first and let others
				// run in between, so the consumer meets unpublished slots.
				if half := got / 2; half > 0 && choose.IntN(4) == 0 {
					q.Submit(idx+uint32(half), got-half)
					runtime.Gosched()
					q.Submit(idx, half)
				} else {
					q.Submit(idx, got)
				}
			}
		})
	}

	consume(t, seed, total, perProducer, producers, maxBatch, q, q.Cancel)
}

// consumerRing is the consumer side both ring types share.
type consumerRing interface {
	Pop() (item, bool)
	Peek(n int) (uint32, int)
	At(idx uint32) *item
	Release(n int)
	Len() int
}

// consume takes total items from r with seeded batch sizes up to maxBatch, partial
// releases (un-peeking the rest with cancel) and single pops, checks each
// against its producer's regenerated sequence, and checks that each of
// producers delivered perProducer items and that the ring ends empty.
func consume(t *testing.T, seed uint64, total, perProducer, producers, maxBatch int, r consumerRing, cancel func(int)) {
	t.Helper()
	c := newChecker(seed, producers)
	var stall stallCheck
	choose := rand.New(rand.NewPCG(seed, consumerStream))
	for c.seen < total {
		if choose.IntN(8) == 0 {
			it, ok := r.Pop()
			if !ok {
				if err := stall.idle(c); err != nil {
					t.Fatal(err)
				}
				runtime.Gosched()
				continue
			}
			if err := c.check(it); err != nil {
				t.Fatal(err)
			}
			continue
		}
		idx, got := r.Peek(1 + choose.IntN(maxBatch))
		if got == 0 {
			if err := stall.idle(c); err != nil {
				t.Fatal(err)
			}
			runtime.Gosched()
			continue
		}
		take := got
		if choose.IntN(4) == 0 {
			take = choose.IntN(got + 1)
		}
		for i := range uint32(take) {
			if err := c.check(*r.At(idx + i)); err != nil {
				t.Fatal(err)
			}
		}
		r.Release(take)
		cancel(got - take)
	}
	if err := c.done(perProducer); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Pop(); ok || r.Len() != 0 {
		t.Fatalf("ring not empty at the end: Len %d", r.Len())
	}
}
