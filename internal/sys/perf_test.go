package sys_test

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/internal/sys"
	"github.com/sdx-project/sdx/internal/testutil"
)

// TestPerfCounters counts this process's system calls and CPU time around
// a known number of getppid(2) calls made on a thread that exists before
// the counters open and on one started after (inherited), and checks
// that an unknown tracepoint is reported missing, not counted.
func TestPerfCounters(t *testing.T) {
	testutil.Privileged(t)
	testutil.CheckFDs(t)
	p := sys.OpenPerf([]int{os.Getpid()}, []sys.PerfEvent{
		{Name: "syscalls", Tracepoint: "raw_syscalls/sys_enter"},
		{Name: "cpu_ns", Software: unix.PERF_COUNT_SW_TASK_CLOCK},
		{Name: "bogus", Tracepoint: "no_such_subsystem/no_such_event"},
	})
	defer p.Close()
	if why, ok := p.Missing()["bogus"]; !ok || !strings.Contains(why, "no_such_subsystem") {
		t.Errorf("an unknown tracepoint: missing %v (%q)", ok, why)
	}
	if why, ok := p.Missing()["syscalls"]; ok {
		testutil.SkipOrFail(t, "the kernel counts no system calls here: "+why)
	}
	before, err := p.Read()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := before["bogus"]; ok {
		t.Error("a missing event has a total")
	}
	const calls = 5000
	done := make(chan struct{})
	go func() {
		// A thread of its own, locked and so started for this goroutine
		// if none is idle: its calls count through inheritance.
		runtime.LockOSThread()
		for range calls {
			unix.Getppid()
		}
		close(done)
	}()
	<-done
	for range calls {
		unix.Getppid()
	}
	after, err := p.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := after["syscalls"] - before["syscalls"]; got < 2*calls || got > 2*calls+2000 {
		t.Errorf("counted %d system calls around %d getppid calls", got, 2*calls)
	}
	if after["cpu_ns"] <= before["cpu_ns"] {
		t.Errorf("CPU time went from %d to %d ns", before["cpu_ns"], after["cpu_ns"])
	}
}
