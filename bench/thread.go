package bench

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sdx-project/sdx/internal/netns"
)

// noCPU asks goThread not to pin.
const noCPU = -1

// PinThread locks the calling goroutine to its OS thread and pins that
// thread (not the process) to cpu. restore puts the thread's affinity back
// and unlocks it.
func PinThread(cpu int) (restore func() error, err error) {
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("bench: sched_getaffinity: %w", err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("bench: pin thread to CPU %d: %w", cpu, err)
	}
	return func() error {
		if err := unix.SchedSetaffinity(0, &old); err != nil {
			// Leave the thread locked: it dies with its goroutine instead
			// of going back to the runtime pinned.
			return fmt.Errorf("bench: restore thread affinity: %w", err)
		}
		runtime.UnlockOSThread()
		return nil
	}, nil
}

// goThread runs fn on a fresh goroutine locked to its OS thread, inside
// namespace ns when ns is not empty, pinned to cpu unless cpu is noCPU,
// and delivers its error (a panic becomes one) on the returned channel.
func goThread(ns string, cpu int, fn func() error) <-chan error {
	errc := make(chan error, 1)
	body := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("bench: panic: %v\n%s", r, debug.Stack())
			}
		}()
		if cpu != noCPU {
			restore, err := PinThread(cpu)
			if err != nil {
				return err
			}
			defer func() { err = errors.Join(err, restore()) }()
		}
		return fn()
	}
	go func() {
		if ns != "" {
			errc <- netns.Do(ns, body)
			return
		}
		runtime.LockOSThread()
		errc <- body()
		runtime.UnlockOSThread()
	}()
	return errc
}

// ProcessCPU returns the process's user+system CPU time so far.
func ProcessCPU() (time.Duration, error) {
	ns, err := cpuTime()
	return time.Duration(ns), err
}

// cpuTime returns the process's user+system CPU time so far, in ns.
func cpuTime() (int64, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("bench: getrusage: %w", err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano(), nil
}
