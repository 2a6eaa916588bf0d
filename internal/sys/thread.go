package sys

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// PinThread locks the calling goroutine to its OS thread and pins that
// thread (not the process) to cpu. restore puts the thread's affinity back
// and unlocks it.
func PinThread(cpu int) (restore func() error, err error) {
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pin thread to CPU %d: %w", cpu, err)
	}
	return func() error {
		if err := unix.SchedSetaffinity(0, &old); err != nil {
			// Leave the thread locked: it dies with its goroutine instead
			// of going back to the runtime pinned.
			return fmt.Errorf("restore thread affinity: %w", err)
		}
		runtime.UnlockOSThread()
		return nil
	}, nil
}

// ProcessCPU returns the process's user plus system CPU time so far.
func ProcessCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
