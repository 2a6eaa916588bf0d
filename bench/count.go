package bench

import (
	"context"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/internal/sys"
)

// Counting (RunCounting): over a run's measured part, the kernel counts
// events of every thread of the processes the run uses (this one, and a
// two-process system's child) with perf_event_open(2), per thread and
// inherited by the threads they start.

// CountNames are the events RunCounting counts, in the table's order:
//
//	syscalls          system calls entered (tracepoint raw_syscalls/sys_enter)
//	futex             futex(2) calls, waits and wakes (syscalls/sys_enter_futex)
//	context_switches  the threads' context switches, voluntary or not
//	wakeups           wake-ups the threads made (sched/sched_wakeup fires in
//	                  the waker's context: a thread waking another, of either
//	                  process, or an interrupt that came while one ran)
//	cpu_migrations    the threads' moves from one CPU to another
//	cpu_ns            the threads' CPU time (task clock), in ns
var CountNames = []string{"syscalls", "futex", "context_switches", "wakeups", "cpu_migrations", "cpu_ns"}

var countEvents = []sys.PerfEvent{
	{Name: "syscalls", Tracepoint: "raw_syscalls/sys_enter"},
	{Name: "futex", Tracepoint: "syscalls/sys_enter_futex"},
	{Name: "context_switches", Software: unix.PERF_COUNT_SW_CONTEXT_SWITCHES},
	{Name: "wakeups", Tracepoint: "sched/sched_wakeup"},
	{Name: "cpu_migrations", Software: unix.PERF_COUNT_SW_CPU_MIGRATIONS},
	{Name: "cpu_ns", Software: unix.PERF_COUNT_SW_TASK_CLOCK},
}

// Counts are what a counted run's measured part cost: each event's total
// over every thread of the run's processes, and the events that could
// not be counted, with the reason. A missing event has no total.
type Counts struct {
	Totals  map[string]uint64 `json:"totals"`
	Missing map[string]string `json:"missing,omitempty"`
}

// Per returns each counted event per message (Sample.Messages), or per
// second for a run with no messages (idle), and what it is per.
func (s *Sample) Per() (per map[string]float64, unit string) {
	if s.Counts == nil {
		return nil, ""
	}
	div, unit := float64(s.Messages()), PerUnit(s.Workload)
	if div == 0 {
		div = s.Elapsed.Seconds()
	}
	per = map[string]float64{}
	for name, v := range s.Counts.Totals {
		if div > 0 {
			per[name] = float64(v) / div
		}
	}
	return per, unit
}

// PerUnit is what a workload's counts are divided by.
func PerUnit(w Workload) string {
	switch w {
	case RR:
		return "transaction"
	case MsgRate:
		return "message"
	case Bulk:
		return "64 KiB"
	case ConnRate:
		return "connection"
	case HTTP:
		return "request"
	}
	return "second"
}

// counter reads the counters at each end of the measured part: the first
// mark starts it, the last ends it.
type counter struct {
	p           *sys.PerfCounters
	mu          sync.Mutex // protects the fields below
	first, last map[string]uint64
	err         error
}

// openCounter counts this process's threads, and the child's of a
// two-process system.
func openCounter(s System) *counter {
	pids := []int{os.Getpid()}
	if c, ok := s.(interface{ ChildPID() int }); ok {
		pids = append(pids, c.ChildPID())
	}
	return &counter{p: sys.OpenPerf(pids, countEvents)}
}

func (c *counter) mark() {
	v, err := c.p.Read()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.err = err
		return
	}
	if c.first == nil {
		c.first = v
	}
	c.last = v
}

// counts closes the counters and returns what they counted between the
// first mark and the last.
func (c *counter) counts() *Counts {
	c.p.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &Counts{Totals: map[string]uint64{}, Missing: map[string]string{}}
	for _, e := range countEvents {
		switch why, miss := c.p.Missing()[e.Name]; {
		case miss:
			out.Missing[e.Name] = why
		case c.err != nil:
			out.Missing[e.Name] = c.err.Error()
		case c.first == nil:
			out.Missing[e.Name] = "the run measured nothing"
		default:
			out.Totals[e.Name] = c.last[e.Name] - c.first[e.Name]
		}
	}
	if len(out.Missing) == 0 {
		out.Missing = nil
	}
	return out
}

// RunCounting is Run, counting events over the measured part (CountNames)
// into the sample's Counts.
func RunCounting(ctx context.Context, sys System, h *Hosts, spec Spec, bud Budget) (*Sample, error) {
	return run(ctx, sys, h, spec, bud, true)
}
