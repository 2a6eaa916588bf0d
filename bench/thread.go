package bench

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/sdx-project/sdx/internal/sys"
)

// noCPU asks goThread not to pin.
const noCPU = -1

// PinThread locks the calling goroutine to its OS thread and pins that
// thread (not the process) to cpu. restore puts the thread's affinity back
// and unlocks it.
func PinThread(cpu int) (restore func() error, err error) {
	restore, err = sys.PinThread(cpu)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return restore, nil
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
			errc <- sys.InNetns(ns, body)
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
	d, err := sys.ProcessCPU()
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	return d, nil
}

// cpuTime returns the process's user+system CPU time so far, in ns.
func cpuTime() (int64, error) {
	d, err := ProcessCPU()
	return int64(d), err
}
