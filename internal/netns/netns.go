// Package netns runs code inside a named network namespace on a locked OS
// thread. It is the one internal package, beside xdp/, that makes raw
// namespace syscalls.
package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Dir is where iproute2 keeps the handles of named namespaces.
const Dir = "/run/netns"

// Path returns the handle path of the named namespace. An empty name, or one
// starting with '/', is returned as is.
func Path(name string) string {
	if name == "" || name[0] == '/' {
		return name
	}
	return Dir + "/" + name
}

// Do runs fn on a locked OS thread inside the named namespace (a name under
// /run/netns, or a path). An empty name runs fn in the current namespace.
// Sockets and links created by fn stay in that namespace after Do returns.
func Do(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	target, err := os.Open(Path(name))
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer target.Close()

	errc := make(chan error, 1)
	// A fresh goroutine so the caller's thread never changes namespace; if
	// restoring fails, the goroutine exits still locked and the runtime
	// retires the thread instead of reusing it in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- fmt.Errorf("netns: current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: setns: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netns: restore: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Exists reports whether the named namespace has a handle.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}
