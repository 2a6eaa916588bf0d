package provider

import (
	"runtime/metrics"
	"sync/atomic"
)

// Adaptive polling spins only while a core would otherwise be idle: a
// spinner that another goroutine is waiting to run behind steals that
// goroutine's CPU, which is how a spinning stack makes a busy program
// slower. The runtime's count of runnable goroutines (goroutines waiting
// for a CPU) says which case holds; it is read at most every crowdEvery,
// by whichever spinner looks first, and shared by every provider of the
// process, since the scheduler is the process's.
const crowdEvery = 5_000 // ns

var crowd struct {
	sampling atomic.Bool // a spinner is reading the metric
	at       atomic.Int64
	busy     atomic.Bool
	sample   [1]metrics.Sample // used by the holder of sampling
}

func init() { crowd.sample[0].Name = "/sched/goroutines/runnable:goroutines" }

// crowded reports whether goroutines are waiting for a CPU. now is on
// any monotonic nanosecond clock of the caller's; a caller whose clock
// differs from the last sampler's at most samples early.
func crowded(now int64) bool {
	if d := now - crowd.at.Load(); d >= 0 && d < crowdEvery || !crowd.sampling.CompareAndSwap(false, true) {
		return crowd.busy.Load()
	}
	metrics.Read(crowd.sample[:])
	v := crowd.sample[0].Value
	crowd.busy.Store(v.Kind() == metrics.KindUint64 && v.Uint64() > 0)
	crowd.at.Store(now)
	crowd.sampling.Store(false)
	return crowd.busy.Load()
}
