package ring

import (
	"fmt"
	"runtime"
	"testing"
)

// The benchmarks hand items from the benchmark goroutine to one consumer
// goroutine through a ring or a buffered channel of the same capacity.
// An operation is one batch; ns/item divides by the batch size.

const benchCap = 1024

var benchBatches = []int{1, 16, 64}

func BenchmarkSPSC(b *testing.B) {
	for _, batch := range benchBatches {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, _ := NewSPSC[uint64](benchCap)
			done := make(chan uint64)
			go func() { done <- drainSPSC(s, batch) }()

			b.ReportAllocs()
			var next uint64 = 1
			for b.Loop() {
				if batch == 1 {
					for !s.Push(next) {
						runtime.Gosched()
					}
					next++
					continue
				}
				for left := batch; left > 0; {
					idx, got := s.Reserve(left)
					if got == 0 {
						runtime.Gosched()
						continue
					}
					for i := range uint32(got) {
						*s.At(idx + i) = next
						next++
					}
					s.Submit(got)
					left -= got
				}
			}
			for !s.Push(0) { // tell the consumer to stop
				runtime.Gosched()
			}
			if got := <-done; got != next {
				b.Fatalf("consumer saw up to %d, producer sent up to %d", got, next)
			}
			reportPerItem(b, batch)
		})
	}
}

// drainSPSC consumes until it sees 0 and returns the next value it
// expected.
func drainSPSC(s *SPSC[uint64], batch int) uint64 {
	var want uint64 = 1
	for {
		idx, got := s.Peek(batch)
		if got == 0 {
			runtime.Gosched()
			continue
		}
		for i := range uint32(got) {
			v := *s.At(idx + i)
			if v == 0 {
				return want
			}
			if v != want {
				panic(fmt.Sprintf("got %d, want %d", v, want))
			}
			want++
		}
		s.Release(got)
	}
}

func BenchmarkMPSC(b *testing.B) {
	for _, batch := range benchBatches {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			q, _ := NewMPSC[uint64](benchCap)
			done := make(chan uint64)
			go func() { done <- drainMPSC(q, batch) }()

			b.ReportAllocs()
			var next uint64 = 1
			for b.Loop() {
				if batch == 1 {
					for !q.Push(next) {
						runtime.Gosched()
					}
					next++
					continue
				}
				for left := batch; left > 0; {
					idx, got := q.Reserve(left)
					if got == 0 {
						runtime.Gosched()
						continue
					}
					for i := range uint32(got) {
						*q.At(idx + i) = next
						next++
					}
					q.Submit(idx, got)
					left -= got
				}
			}
			for !q.Push(0) {
				runtime.Gosched()
			}
			if got := <-done; got != next {
				b.Fatalf("consumer saw up to %d, producer sent up to %d", got, next)
			}
			reportPerItem(b, batch)
		})
	}
}

func drainMPSC(q *MPSC[uint64], batch int) uint64 {
	var want uint64 = 1
	for {
		idx, got := q.Peek(batch)
		if got == 0 {
			runtime.Gosched()
			continue
		}
		for i := range uint32(got) {
			v := *q.At(idx + i)
			if v == 0 {
				return want
			}
			if v != want {
				panic(fmt.Sprintf("got %d, want %d", v, want))
			}
			want++
		}
		q.Release(got)
	}
}

// BenchmarkChan is the baseline: a channel has no batch verbs, so a batch
// is that many sends and receives.
func BenchmarkChan(b *testing.B) {
	for _, batch := range benchBatches {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ch := make(chan uint64, benchCap)
			done := make(chan uint64)
			go func() {
				var want uint64 = 1
				for v := range ch {
					if v != want {
						panic(fmt.Sprintf("got %d, want %d", v, want))
					}
					want++
				}
				done <- want
			}()

			b.ReportAllocs()
			var next uint64 = 1
			for b.Loop() {
				for range batch {
					ch <- next
					next++
				}
			}
			close(ch)
			if got := <-done; got != next {
				b.Fatalf("consumer saw up to %d, producer sent up to %d", got, next)
			}
			reportPerItem(b, batch)
		})
	}
}

func reportPerItem(b *testing.B, batch int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/item")
}
